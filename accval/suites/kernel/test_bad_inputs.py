"""Bad input raises ValueError/TypeError naming what was expected and what came."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels.constants import FP8_DTYPE, pad4
from kernels.inv_rope_fp8_quant import LaunchConfig

from .cases import ProducerCase, make_inputs


def _good(device):
    case = ProducerCase(m=5, n_groups=2, heads_per_group=2)
    o, pos, cache = make_inputs(case, device)
    return dict(o=o, positions=pos, cos_sin_cache=cache, n_groups=2, heads_per_group=2, nope_dim=64, rope_dim=64)


def _call(device, **override):
    kw = {**_good(device), **override}
    return kernels.inv_rope_fp8_quant(kw.pop("o"), kw.pop("positions"), kw.pop("cos_sin_cache"), kw.pop("n_groups"),
                                      kw.pop("heads_per_group"), kw.pop("nope_dim"), kw.pop("rope_dim"), **kw)


PRODUCER_BAD = [
    ("o-int", lambda g: dict(o=torch.zeros(5, 4, 128, dtype=torch.int32)), TypeError, "dtype"),
    ("o-2d", lambda g: dict(o=g["o"][:, 0]), ValueError, "3 dimensions"),
    ("heads", lambda g: dict(n_groups=3), ValueError, "heads"),
    ("d-sum", lambda g: dict(nope_dim=32), ValueError, "nope_dim \\+ rope_dim"),
    ("layout-rule", lambda g: dict(o=torch.zeros(5, 4, 256, dtype=torch.bfloat16), nope_dim=96, rope_dim=160), ValueError, "nope_dim %"),
    ("rope-odd", lambda g: dict(o=torch.zeros(5, 4, 128, dtype=torch.bfloat16), nope_dim=65, rope_dim=63), ValueError, "even rope_dim"),
    ("head-dim", lambda g: dict(o=torch.zeros(5, 4, 192, dtype=torch.bfloat16), nope_dim=128, rope_dim=64), ValueError, "head dim in"),
    ("cache-fp16", lambda g: dict(cos_sin_cache=g["cos_sin_cache"].half()), TypeError, "float32"),
    ("cache-shape", lambda g: dict(cos_sin_cache=g["cos_sin_cache"][:, :32]), ValueError, "cos_sin_cache"),
    ("positions-float", lambda g: dict(positions=g["positions"].float()), TypeError, "int"),
    ("positions-len", lambda g: dict(positions=g["positions"][:3]), ValueError, "positions"),
    ("positions-range", lambda g: dict(positions=g["positions"] + 100000, check_positions=True), ValueError, "max_pos"),
    ("positions-negative", lambda g: dict(positions=g["positions"] - 100000, check_positions=True), ValueError, "max_pos"),
    ("o-last-stride", lambda g: dict(o=g["o"].transpose(0, 2).contiguous().transpose(0, 2)), ValueError, "last dim"),
    ("device", lambda g: dict(positions=g["positions"].to("meta")), ValueError, "one device"),
    ("quant-group", lambda g: dict(quant_group_size=64), ValueError, "quant_group_size"),
    ("btm-not-pow2", lambda g: dict(block_tokens_m=3), ValueError, "power of two"),
    ("groups-type", lambda g: dict(n_groups=2.0), TypeError, "n_groups"),
    ("is-neox-type", lambda g: dict(is_neox="yes"), TypeError, "is_neox"),
    ("o-not-tensor", lambda g: dict(o=[[1.0]]), TypeError, "torch.Tensor"),
]


@pytest.mark.parametrize("override,exc,match", [pytest.param(f, e, m, id=i) for i, f, e, m in PRODUCER_BAD])
def test_producer_rejects_bad_input(device, override, exc, match):
    good = _good(device)
    kw = override(good)
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) and v.device.type != "meta" else v) for k, v in kw.items()}
    with pytest.raises(exc, match=match):
        _call(device, **kw)


def _consumer_good(device, g=2, m=6, n=128, k=256):
    a = torch.zeros(g, m, k, device=device).to(FP8_DTYPE)
    return dict(a=a, a_scale=torch.zeros(g, k // 128, pad4(m), device=device), b=torch.zeros(g, n, k, device=device).to(FP8_DTYPE),
                b_scale=torch.zeros(g, n // 128, k // 128, device=device))


CONSUMER_BAD = [
    ("a-bf16", lambda c: dict(a=c["a"].to(torch.bfloat16)), TypeError, "float8"),
    ("scale-pad-btm", lambda c: dict(a_scale=torch.zeros(2, 2, 16, device=c["a"].device)), ValueError, "a_scale"),
    ("scale-noncontig", lambda c: dict(a_scale=torch.zeros(2, 8, 2, device=c["a"].device).transpose(1, 2)), ValueError, "contiguous"),
    ("a-padded", lambda c: dict(a=torch.zeros(2, 8, 256, device=c["a"].device).to(FP8_DTYPE)[:, :6]), ValueError, "contiguous"),
    ("b-k", lambda c: dict(b=torch.zeros(2, 128, 128, device=c["a"].device).to(FP8_DTYPE)), ValueError, "b:"),
    ("b-n", lambda c: dict(b=torch.zeros(2, 100, 256, device=c["a"].device).to(FP8_DTYPE)), ValueError, "multiple of 128"),
    ("b-scale", lambda c: dict(b_scale=torch.zeros(2, 1, 1, device=c["a"].device)), ValueError, "b_scale"),
    ("out-dtype", lambda c: dict(out=torch.zeros(2, 6, 128, device=c["a"].device)), TypeError, "out"),
    ("out-shape", lambda c: dict(out=torch.zeros(2, 6, 64, dtype=torch.bfloat16, device=c["a"].device)), ValueError, "out"),
]


@pytest.mark.parametrize("override,exc,match", [pytest.param(f, e, m, id=i) for i, f, e, m in CONSUMER_BAD])
def test_consumer_rejects_bad_input(device, override, exc, match):
    kw = {**_consumer_good(device)}
    kw.update(override(kw))
    with pytest.raises(exc, match=match):
        kernels.fp8_block_bmm(kw.pop("a"), kw.pop("a_scale"), kw.pop("b"), kw.pop("b_scale"), **kw)


@pytest.mark.parametrize("w,exc", [(torch.zeros(2, 100, 256), ValueError), (torch.zeros(128, 128), ValueError),
                                   (torch.zeros(1, 128, 128, dtype=torch.int8), TypeError)], ids=["n", "2d", "int8"])
def test_quantize_weight_rejects_bad_input(w, exc):
    with pytest.raises(exc, match="w:"):
        kernels.quantize_weight_fp8(w)


def test_raw_consumer_skips_the_contract_check(device):
    """check_contract=False accepts a drifted scale buffer (that is how drift goes silent)."""
    c = _consumer_good(device)
    drifted = torch.zeros(2, 2, 16, device=device)
    out = kernels.fp8_block_bmm(c["a"], drifted, c["b"], c["b_scale"], check_contract=False)
    assert out.shape == (2, 6, 128)


@pytest.mark.parametrize("make, error, message", [
    (lambda: kernels.ConsumerConfig(64, block_n=256), ValueError, "one weight scale column"),
    (lambda: kernels.ConsumerConfig(48), ValueError, "block_m: expected one of"),
    (lambda: kernels.ConsumerConfig(64, split_k=0), ValueError, r"split_k: expected an int >= 1"),
    (lambda: kernels.ConsumerConfig(64, num_warps=4.0), TypeError, "num_warps: expected an int"),
    (lambda: kernels.ConsumerConfig(64, defer_scale=1), TypeError, "defer_scale: expected a bool, got int"),
    (lambda: LaunchConfig(1, 1, 1, heads_per_program=0), ValueError, r"heads_per_program: expected an int >= 1"),
])
def test_launch_configs_reject_bad_fields(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_launch_consumer_needs_a_config_and_an_out():
    a = torch.zeros(1, 4, 128).to(kernels.FP8_DTYPE)
    s = torch.ones(1, 1, 4)
    b = torch.zeros(1, 128, 128).to(kernels.FP8_DTYPE)
    bs = torch.ones(1, 1, 1)
    with pytest.raises(TypeError, match="expected a ConsumerConfig"):
        kernels.launch_consumer(a, s, b, bs, torch.empty(1, 4, 128, dtype=torch.bfloat16), (64, 128))
    with pytest.raises(ValueError, match="out: expected"):
        kernels.launch_consumer(a, s, b, bs, None, kernels.ConsumerConfig(64))
