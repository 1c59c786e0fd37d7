"""Bad input raises ValueError/TypeError naming what was expected and what came."""

from __future__ import annotations

import pytest
import torch

import accval.kernels as kernels
from accval.kernels.constants import FP8_DTYPE, pad4
from accval.kernels.inv_rope_fp8_quant import LaunchConfig

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
    # 16384 tokens per program failed inside Triton's interpreter (a tile over its 2**20-element limit)
    ("btm-16384", lambda g: dict(block_tokens_m=16384), ValueError, "power of two from 1 to 1024, got 16384"),
    ("btm-2048", lambda g: dict(block_tokens_m=2048), ValueError, "from 1 to 1024"),
    ("check-positions-type", lambda g: dict(check_positions="yes"), TypeError, "check_positions: expected a bool or None"),
    # unchecked on CUDA unless asked (a host sync per call): the GPU box asks
    ("positions-2**40", lambda g: dict(positions=g["positions"].clone().fill_(2**40), check_positions=True), ValueError,
     "max_pos"),
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
    # the Triton consumer wrote both groups into one expanded buffer and returned without a word
    ("out-expanded", lambda c: dict(out=torch.zeros(1, 6, 128, dtype=torch.bfloat16, device=c["a"].device).expand(2, 6, 128)),
     ValueError, "out: expected a tensor whose elements do not share memory.*stride 0"),
    ("out-overlapping", lambda c: dict(out=torch.zeros(2 * 6 * 128, dtype=torch.bfloat16, device=c["a"].device)
                                       .as_strided((2, 6, 128), (768, 64, 1))), ValueError, "overlapping view"),
    ("check-contract-str", lambda c: dict(check_contract="yes"), TypeError, "check_contract: expected a bool, got str"),
    ("check-contract-int", lambda c: dict(check_contract=1), TypeError, "check_contract: expected a bool, got int"),
    # under check_contract=False the kernel reads pad4(M) rows per block: a shorter buffer was read past its end
    ("raw-scale-short", lambda c: dict(a_scale=torch.zeros(2, 2, 5, device=c["a"].device), check_contract=False),
     ValueError, r"a_scale: expected \[2, 2, >= 6\], got \(2, 2, 5\)"),
    ("raw-scale-expanded", lambda c: dict(a_scale=torch.zeros(1, 2, 8, device=c["a"].device).expand(2, 2, 8), check_contract=False),
     ValueError, "a_scale: expected storage for 30 elements"),
    ("raw-a-expanded", lambda c: dict(a=torch.zeros(1, 6, 256, device=c["a"].device).to(FP8_DTYPE).expand(2, 6, 256),
                                      check_contract=False), ValueError, "a: expected storage for 3072 elements"),
]


@pytest.mark.parametrize("override,exc,match", [pytest.param(f, e, m, id=i) for i, f, e, m in CONSUMER_BAD])
def test_consumer_rejects_bad_input(device, override, exc, match):
    kw = {**_consumer_good(device)}
    kw.update(override(kw))
    with pytest.raises(exc, match=match):
        kernels.fp8_block_bmm(kw.pop("a"), kw.pop("a_scale"), kw.pop("b"), kw.pop("b_scale"), **kw)


def test_out_aliasing_an_input_is_refused(device):
    """``out`` sharing bytes with ``a_scale`` (a float32 view of out's storage): the kernel would read
    scales it is overwriting."""
    c = _consumer_good(device)
    out = torch.zeros(2, 6, 128, dtype=torch.bfloat16, device=device)
    a_scale = out.view(-1).view(torch.float32)[: 2 * 2 * 8].view(2, 2, 8)
    with pytest.raises(ValueError, match="out: expected memory apart from the inputs.*a_scale"):
        kernels.fp8_block_bmm(c["a"], a_scale, c["b"], c["b_scale"], out=out)


def test_raw_producer_op_checks_positions_on_cpu():
    """The raw op ``torch.ops.accval.inv_rope_fp8_quant`` with a position of 2**40 segfaulted (rc 139):
    on the CPU it checks positions itself, whatever ``check_positions`` the public function got."""
    kw = _good("cpu")
    positions = kw["positions"].clone()
    positions[2] = 2**40
    with pytest.raises(ValueError, match=r"positions: expected values in \[0, 4096\).*max 1099511627776"):
        torch.ops.accval.inv_rope_fp8_quant(kw["o"], positions, kw["cos_sin_cache"], 2, 2, 64, 64, 128, True, 0)
    with pytest.raises(ValueError, match="positions: expected values in"):
        kernels.inv_rope_fp8_quant(kw["o"], positions, kw["cos_sin_cache"], 2, 2, 64, 64, check_positions=False)


def test_raw_producer_op_fake_validates():
    """On meta tensors the op runs its fake, which refuses what the real op refuses."""
    kw = _good("cpu")
    meta = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    with pytest.raises(ValueError, match="cos_sin_cache: expected"):
        torch.ops.accval.inv_rope_fp8_quant(meta["o"], meta["positions"], meta["cos_sin_cache"][:, :32], 2, 2, 64, 64,
                                            128, True, 0)


def test_strided_positions_are_accepted(device):
    """A non-contiguous ``positions`` view is valid input (the kernel reads it with its stride)."""
    kw = _good(device)
    wide = torch.stack([kw["positions"], kw["positions"].flip(0)], dim=1)  # [M, 2]: column 0 has stride 2
    fp8, scale = kernels.inv_rope_fp8_quant_ref(kw["o"], wide[:, 0], kw["cos_sin_cache"], 2, 2, 64, 64)
    assert fp8.shape == (2, 5, 256) and scale.shape == (2, 2, 8)


def _weights(r, device="cpu", k=256):
    w_fp8 = torch.zeros(2, r, k, device=device).to(FP8_DTYPE)
    return w_fp8, torch.ones(2, r // 128, k // 128, device=device)


@pytest.mark.parametrize("arm", ["fallback", "chain"])
@pytest.mark.parametrize("make, exc, match", [
    # R = 100 failed inside torch (a shape mismatch in the dequantization); R = 0 returned an empty result
    pytest.param(lambda: (torch.zeros(2, 100, 256).to(FP8_DTYPE), torch.ones(2, 0, 2)), ValueError,
                 r"w_fp8: expected R \(o_lora_rank\) a positive multiple of 128, got shape \(2, 100, 256\)", id="R100"),
    pytest.param(lambda: (torch.zeros(2, 0, 256).to(FP8_DTYPE), torch.ones(2, 0, 2)), ValueError,
                 "positive multiple of 128, got shape \\(2, 0, 256\\)", id="R0"),
    pytest.param(lambda: tuple(t.to("meta") for t in _weights(128)), ValueError, "expected all tensors on one device", id="w-meta"),
    pytest.param(lambda: (_weights(128)[0], _weights(128)[1][:, :, :1]), ValueError, "w_scale: expected shape", id="w-scale"),
])
def test_o_a_proj_rejects_bad_weights(arm, make, exc, match):
    kw = _good("cpu")
    w_fp8, w_scale = make()
    fn = kernels.o_a_proj_bf16_fallback if arm == "fallback" else kernels.o_a_proj_fp8_chain
    with pytest.raises(exc, match=match):
        fn(kw["o"], kw["positions"], kw["cos_sin_cache"], w_fp8, w_scale, 2, 2, 64, 64)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(check_contract="yes"), TypeError, "check_contract: expected a bool, got str"),
    (dict(backend=["triton"]), ValueError, "backend: expected one of"),
])
def test_chain_rejects_bad_options(kw, exc, match):
    """Checked before any kernel runs (``check_contract="yes"`` failed inside the op's schema check)."""
    good = _good("cpu")
    w_fp8, w_scale = _weights(128)
    with pytest.raises(exc, match=match):
        kernels.o_a_proj_fp8_chain(good["o"], good["positions"], good["cos_sin_cache"], w_fp8, w_scale, 2, 2, 64, 64, **kw)


def test_fallback_on_meta_tensors_answers_shapes():
    """Arm A on meta tensors computes shapes only, as torch does: ``[M, G, R]`` bf16."""
    kw = _good("cpu")
    w_fp8, w_scale = _weights(128)
    out = kernels.o_a_proj_bf16_fallback(*(t.to("meta") for t in (kw["o"], kw["positions"], kw["cos_sin_cache"], w_fp8, w_scale)),
                                         2, 2, 64, 64)
    assert (out.device.type, tuple(out.shape), out.dtype) == ("meta", (5, 2, 128), torch.bfloat16)


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
    (lambda: kernels.ConsumerConfig(64, tma=1), TypeError, "tma: expected a bool, got int"),
    (lambda: kernels.ConsumerConfig(64, defer_scale=True, tma=True), ValueError, "defer_scale is a pointer-kernel schedule"),
    (lambda: kernels.ConsumerConfig(64, prefetch_scales=None), TypeError, "prefetch_scales: expected a bool, got NoneType"),
    (lambda: kernels.ConsumerConfig(64, defer_scale=True, prefetch_scales=True), ValueError, "expected prefetch_scales=False"),
    (lambda: kernels.ConsumerConfig(128, 128, 8, 4, wgmma=1), TypeError, "wgmma: expected a bool, got int"),
    (lambda: kernels.ConsumerConfig(128, 128, 8, 4, wgmma=True), ValueError, "wgmma reads its tiles by TMA"),
    (lambda: kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True, prefetch_scales=True), ValueError,
     "expected tma=True, prefetch_scales=False"),
    (lambda: kernels.ConsumerConfig(128, 128, 8, 4, 2, tma=True, wgmma=True, persistent=1), ValueError,
     "expected persistent=0 and loader_warp=False with split_k=2"),
    (lambda: kernels.ConsumerConfig(128, 128, 4, 4, tma=True, wgmma=True), ValueError, "one warp per 16 rows"),
    (lambda: kernels.ConsumerConfig(64, 128, 4, 1, tma=True, wgmma=True), ValueError, "num_stages >= 2"),
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


def test_launch_producer_force_rope_apart_is_checked():
    """``force_rope_apart`` is a bool, and only NEOX rotates a rope slice apart: True for GPT-J is refused,
    not ignored."""
    from accval.kernels.inv_rope_fp8_quant import launch_producer, validate_producer_args

    for is_neox, value, exc, match in ((True, 1, TypeError, "force_rope_apart: expected a bool"),
                                       (False, True, ValueError, "force_rope_apart: expected None or False for the GPT-J")):
        case = ProducerCase(m=4, n_groups=1, heads_per_group=1, head_dim=128, rope_dim=64, is_neox=is_neox)
        o, pos, cache = make_inputs(case, "cpu")
        p = validate_producer_args(*case.args(o, pos, cache), is_neox=is_neox)
        fp8 = torch.empty(p.fp8_shape(), dtype=FP8_DTYPE)
        scale = torch.empty(p.scale_shape())
        with pytest.raises(exc, match=match):
            launch_producer(p, o, pos, cache, fp8, scale, LaunchConfig(1, 1, 1), force_rope_apart=value)
