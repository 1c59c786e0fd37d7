"""Properties of the public kernel API over its whole argument space, and of positions up to 2**20.

``test_every_call_is_answered_or_refused``: for any arguments (dtypes, ranks, shapes, strides
including stride 0 and overlapping views, cpu/meta/mixed devices, size 0, NaN and +-Inf values,
wrong Python types), a call of ``accval.kernels.inv_rope_fp8_quant`` (and its raw op),
``accval.kernels.inv_rope_fp8_quant_ref``, ``accval.kernels.fp8_block_bmm`` (every backend that runs on the
device), ``accval.kernels.o_a_proj_fp8_chain``, ``accval.kernels.o_a_proj_bf16_fallback`` or
``accval.kernels.quantize_weight_fp8`` either raises ValueError/TypeError whose message says what was
expected and what came, or returns what the reference returns: bit for bit for the producers (FP8
codes through uint8 views, NaN included), within the documented bound for the consumers.

``python -m suites.kernel.test_api_fuzz N`` runs N cases and prints the tally (cases tried, clean
errors, answers, wrong answers, crashes) without stopping at the first failure.
"""

from __future__ import annotations

import collections
import dataclasses
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import accval.kernels as kernels
from accval.kernels.constants import FP8_DTYPE, QUANT_BLOCK, WEIGHT_BLOCK, pad4
from accval.kernels.reference import (
    block_scale,
    dequantize_weight,
    fp8_block_bmm_abs_ref,
    fp8_block_bmm_math_ref,
    inv_rope_fp8_quant_ref,
    inverse_rope_,
)

from .cases import LONG_CONTEXT, LongContextCase, ProducerCase, YarnScaling, cos_sin_cache, long_context_cases, make_inputs
from .checks import BF16_HALF_ULP, FP8_HALF_ULP, FP32_ACC_TOL, assert_exact, assert_fp8_equal

#: the consumer backends that run on each device type (``"torch"`` is torch._scaled_mm: CUDA only;
#: test_provenance checks that it raises on a CPU)
CONSUMER_BACKENDS = {"cpu": ("triton", "emulated"), "cuda": ("triton", "torch", "emulated")}
CHAIN_BACKENDS = {"cpu": ("triton", "torch"), "cuda": ("triton", "triton+scaled_mm", "torch")}
#: Unsupported types for int and bool parameters (bool is not an int here; numpy ints are not ints).
BAD_INTS = (2.0, "2", None, True, np.int64(2), [2])
BAD_BOOLS = ("yes", 1, None, np.bool_(True), torch.tensor(True))
#: e4m3fn codes with the value NaN (no infinities in the format)
FP8_NAN_CODES = (0x7F, 0xFF)


# ---------------------------------------------------------------------------------------------------
# A call and how to print it (Hypothesis prints failing examples; a tensor's repr would be its data).


def describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"T{tuple(x.shape)}{x.stride()}+{x.storage_offset()}:{str(x.dtype).replace('torch.', '')}@{x.device.type}"
    if isinstance(x, (list, tuple)):
        return type(x)(describe(v) for v in x).__repr__()
    return repr(x)


@dataclasses.dataclass
class ApiCall:
    api: str  # a key of API
    args: tuple
    kwargs: dict
    how: tuple[str, ...]  # what the strategy did to a valid call (layouts, values, mutations)
    #: for out= calls: the buffer ``out`` is a view of, and a copy of it before the call
    out_base: torch.Tensor | None = None
    out_base_before: torch.Tensor | None = None

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={describe(v)}" for k, v in self.kwargs.items())
        return f"ApiCall({self.api}: {', '.join(describe(a) for a in self.args)}; {kw}; how={'/'.join(self.how)})"


API = {
    "producer": kernels.inv_rope_fp8_quant,
    "producer_op": lambda *a: torch.ops.accval.inv_rope_fp8_quant(*a),
    "producer_ref": kernels.inv_rope_fp8_quant_ref,
    "consumer": kernels.fp8_block_bmm,
    "chain": kernels.o_a_proj_fp8_chain,
    "fallback": kernels.o_a_proj_bf16_fallback,
    "quantize_weight": kernels.quantize_weight_fp8,
}


def _device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------
# Strategies: valid calls, then layouts, special values and mutations applied to them.


def _gen(draw) -> torch.Generator:
    return torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))


#: special values written into float inputs. "huge" (the dtype's max) and "tiny" (a quarter of its
#: smallest normal) only where results are compared bit for bit: the consumer's documented bound
#: covers neither fp32 overflow of a scale product nor scales in the subnormal range.
SPECIALS = ("nan", "inf", "-inf", "mixed", "huge", "tiny")
NONFINITE = ("nan", "inf", "-inf", "mixed")


def _inject(draw, x: torch.Tensor, gen, how: list, what: str, kinds=SPECIALS) -> torch.Tensor:
    """Write NaN/+-Inf (or huge, tiny) values at 1-3 random elements of the float tensor ``x`` (in place)."""
    kind = draw(st.sampled_from(("none",) * max(3, len(kinds) // 2) + tuple(kinds)))
    if kind == "none" or x.numel() == 0:
        return x
    how.append(f"{what}:{kind}")
    flat = x.view(-1)
    big = torch.finfo(x.dtype).max
    values = {"nan": [float("nan")], "inf": [float("inf")], "-inf": [float("-inf")], "huge": [big, -big],
              "tiny": [torch.finfo(x.dtype).tiny / 4], "mixed": [float("nan"), float("inf"), float("-inf")]}[kind]
    for v in values:
        flat[int(torch.randint(0, flat.numel(), (1,), generator=gen))] = v
    return x


def _o_layout(draw, x: torch.Tensor, how: list) -> torch.Tensor:
    """``x [M, H, D]`` contiguous -> a view with the same shape (or a last dim with stride 2: invalid)."""
    m, h, d = x.shape
    kind = draw(st.sampled_from(("contiguous", "contiguous", "token-pad", "head-pad", "transposed", "expand-tokens",
                                 "expand-heads", "overlap-tokens", "last-dim-strided")))
    how.append(f"o:{kind}")
    if kind == "token-pad":
        buf = torch.zeros(m, h * d + 64, dtype=x.dtype)
        buf[:, : h * d] = x.reshape(m, h * d)
        return buf[:, : h * d].view(m, h, d)
    if kind == "head-pad":
        buf = torch.zeros(m, h, d + 128, dtype=x.dtype)
        buf[:, :, :d] = x
        return buf[:, :, :d]
    if kind == "transposed":
        return x.transpose(0, 1).contiguous().transpose(0, 1)
    if kind == "expand-tokens":
        return x[:1].expand(m, h, d) if m else x
    if kind == "expand-heads":
        return x[:, :1].expand(m, h, d)
    if kind == "overlap-tokens" and m > 1 and h > 1:  # token t+1's head 0 is token t's head 1
        return x.reshape(-1)[: (m - 1) * d + h * d].as_strided((m, h, d), (d, d, 1))
    if kind == "last-dim-strided":
        buf = torch.zeros(m, h, 2 * d, dtype=x.dtype)
        buf[..., ::2] = x
        return buf[..., ::2]
    return x


def _positions(draw, m: int, max_pos: int, dtype, gen, how: list) -> torch.Tensor:
    """In-range positions, contiguous or a strided/expanded view whose skipped elements are in range too."""
    kind = draw(st.sampled_from(("contiguous", "contiguous", "strided", "expanded")))
    how.append(f"positions:{kind}")
    stride = 1 if kind != "strided" else draw(st.sampled_from((2, 3)))
    flat = torch.randint(0, max_pos, (max(m, 1) * stride,), generator=gen)
    if m and draw(st.booleans()):
        flat[0] = max_pos - 1  # the cache's last row
    flat = flat.to(dtype)
    if kind == "expanded":
        return flat[:1].expand(m)
    return flat[::stride][:m]


def _cache(draw, max_pos: int, rope: int, how: list, gen, specials=SPECIALS) -> torch.Tensor:
    kind = draw(st.sampled_from(("2d", "2d", "3d", "3d-transposed", "row-strided", "expanded-rows", "2d-last-strided")))
    how.append(f"cache:{kind}")
    yarn = YarnScaling(factor=4.0, original_max_pos=16) if draw(st.booleans()) else None
    c = cos_sin_cache(max_pos, rope, yarn=yarn)
    c = _inject(draw, c, gen, how, "cache", specials)
    half = rope // 2
    if kind == "3d":
        return c.reshape(max_pos, 2, half)
    if kind == "3d-transposed":
        return c.reshape(max_pos, 2, half).transpose(1, 2).contiguous().transpose(1, 2)
    if kind == "row-strided":
        buf = torch.zeros(max_pos * 2, rope)
        buf[::2] = c
        return buf[::2]
    if kind == "expanded-rows":
        return c[:1].expand(max_pos, rope)
    if kind == "2d-last-strided":
        buf = torch.zeros(max_pos, 2 * rope)
        buf[:, ::2] = c
        return buf[:, ::2]
    return c


def _to_device(draw, tensors: dict, device_type: str, how: list) -> dict:
    """Everything on the test device, or everything on meta, or one tensor on another device."""
    kind = draw(st.sampled_from(("same",) * 6 + ("meta", "one-meta")))
    how.append(f"device:{kind}")
    if kind == "meta":
        return {k: v.to("meta") for k, v in tensors.items()}
    out = {k: v.to(device_type) for k, v in tensors.items()}
    if kind == "one-meta":
        name = draw(st.sampled_from(sorted(tensors)))
        out[name] = tensors[name].to("meta")
    return out


@st.composite
def producer_inputs(draw, device_type: str, specials=SPECIALS) -> tuple[dict, dict, list]:
    """A valid producer call's tensors and parameters, then layouts, values and devices drawn on top."""
    how: list = []
    gen = _gen(draw)
    m = draw(st.sampled_from((0, 1, 2, 3, 5, 8)))
    g, hpg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    head_dim = draw(st.sampled_from((128, 128, 256)))
    rope = draw(st.sampled_from((2, 16, 64)))
    dtype = draw(st.sampled_from((torch.bfloat16, torch.float16, torch.float32)))
    x = (torch.randn(m, g * hpg, head_dim, generator=gen) * draw(st.sampled_from((1e-3, 1.0, 300.0)))).to(dtype)
    x = _inject(draw, x, gen, how, "o", specials)
    max_pos = draw(st.sampled_from((1, 7, 64)))
    tensors = dict(o=_o_layout(draw, x, how),
                   positions=_positions(draw, m, max_pos, draw(st.sampled_from((torch.int32, torch.int64))), gen, how),
                   cos_sin_cache=_cache(draw, max_pos, rope, how, gen, specials))
    tensors = _to_device(draw, tensors, device_type, how)
    params = dict(n_groups=g, heads_per_group=hpg, nope_dim=head_dim - rope, rope_dim=rope, is_neox=draw(st.booleans()))
    return tensors, params, how


def _mutate_producer(draw, tensors: dict, params: dict, kwargs: dict, how: list, raw_op: bool = False) -> None:
    """At most one thing a valid producer call must not have (or nothing), applied in place."""
    choices = ["position-out-of-range", "o-dtype", "o-rank", "positions-dtype", "positions-rank",
                              "positions-length", "cache-dtype", "cache-shape", "n_groups", "rope-odd", "nope", "quant-group"]
    if raw_op:
        choices += ["raw-block_tokens_m"]
    else:
        choices += ["type-n_groups", "type-rope_dim", "type-is_neox", "not-a-tensor", "type-check_positions", "block_tokens_m"]
    kind = draw(st.sampled_from(["none"] * len(choices) + choices))  # half the calls valid
    if kind == "type-check_positions" and "block_tokens_m" not in kwargs:
        kind = "none"  # o_a_proj has no check_positions parameter
    if kind == "none":
        return
    how.append(f"mutation:{kind}")
    o, pos, cache = tensors["o"], tensors["positions"], tensors["cos_sin_cache"]
    if kind == "position-out-of-range" and pos.numel() and pos.device.type != "meta" and (
            pos.device.type == "cpu" or not raw_op and "block_tokens_m" in kwargs):
        if pos.device.type == "cuda":  # unchecked on CUDA unless asked for (a host sync): ask
            kwargs["check_positions"] = True
        bad = draw(st.sampled_from((-1, cache.shape[0], 2**31 - 1, 2**40)))
        if pos.dtype == torch.int32 and bad == 2**40:
            bad = -(2**31)
        pos = pos.clone()  # a view's clone is dense: the bad value lands where the kernel reads
        pos[int(draw(st.integers(0, pos.numel() - 1)))] = bad
        tensors["positions"] = pos
    elif kind == "o-dtype":
        tensors["o"] = o.to(draw(st.sampled_from((torch.int32, torch.float64, FP8_DTYPE))))
    elif kind == "o-rank":
        tensors["o"] = o.flatten(1) if draw(st.booleans()) else o.unsqueeze(0)
    elif kind == "positions-dtype":
        tensors["positions"] = pos.to(draw(st.sampled_from((torch.float32, torch.int16, torch.uint8, torch.bool))))
    elif kind == "positions-rank":
        tensors["positions"] = pos.unsqueeze(0)
    elif kind == "positions-length":
        tensors["positions"] = torch.zeros(pos.shape[0] + 1, dtype=pos.dtype, device=pos.device)
    elif kind == "cache-dtype":
        tensors["cos_sin_cache"] = cache.to(draw(st.sampled_from((torch.float64, torch.bfloat16))))
    elif kind == "cache-shape":
        tensors["cos_sin_cache"] = cache.reshape(-1) if draw(st.booleans()) else cache.reshape(cache.shape[0], 1, -1, 1)
    elif kind == "n_groups":
        params["n_groups"] = params["n_groups"] + draw(st.sampled_from((-1, 1, 2**40)))
    elif kind == "rope-odd":
        params["rope_dim"] -= 1
        params["nope_dim"] += 1
    elif kind == "nope":
        params["nope_dim"] += draw(st.sampled_from((-128, 1, 128)))
    elif kind == "block_tokens_m":
        kwargs["block_tokens_m"] = draw(st.sampled_from((0, -4, 3, 2048, 16384, 2**40) + BAD_INTS))
    elif kind == "raw-block_tokens_m":
        kwargs["block_tokens_m"] = draw(st.sampled_from((2048, 16384, -4, 3)))
    elif kind == "quant-group":
        kwargs["quant_group_size"] = draw(st.sampled_from((64, 256, 0)))
    elif kind.startswith("type-"):
        name = kind[len("type-"):]
        value = draw(st.sampled_from(BAD_BOOLS if name in ("is_neox", "check_positions") else BAD_INTS))
        (params if name in params else kwargs)[name] = value
    elif kind == "not-a-tensor":
        name = draw(st.sampled_from(sorted(tensors)))
        tensors[name] = draw(st.sampled_from((None, [1.0, 2.0], np.zeros(3, dtype=np.float32))))


@st.composite
def producer_calls(draw, device_type: str) -> ApiCall:
    tensors, params, how = draw(producer_inputs(device_type))
    api = draw(st.sampled_from(("producer", "producer", "producer_ref", "producer_op")))
    kwargs: dict = {}
    # valid token blocks: the table's, the straight and the loop kernel (1024, the largest, costs ~1 s
    # per head in the interpreter: test_pinned_api_calls runs it once)
    kwargs["block_tokens_m"] = draw(st.sampled_from((None, None, 1, 2, 8, 32)))
    if api == "producer_op":
        _mutate_producer(draw, tensors, params, kwargs, how, raw_op=True)
        args = (tensors["o"], tensors["positions"], tensors["cos_sin_cache"], params["n_groups"], params["heads_per_group"],
                params["nope_dim"], params["rope_dim"], kwargs.get("quant_group_size", QUANT_BLOCK), params["is_neox"],
                kwargs["block_tokens_m"] or 0)
        return ApiCall(api, args, {}, tuple(how))
    kwargs["check_positions"] = draw(st.sampled_from((None, None, True, False)))
    _mutate_producer(draw, tensors, params, kwargs, how)
    args = (tensors["o"], tensors["positions"], tensors["cos_sin_cache"], params.pop("n_groups"),
            params.pop("heads_per_group"), params.pop("nope_dim"), params.pop("rope_dim"))
    return ApiCall(api, args, {**params, **kwargs}, tuple(how))


def _fp8_codes(draw, shape, gen, how: list, what: str) -> torch.Tensor:
    """Random finite e4m3fn codes, sometimes with NaN codes."""
    codes = torch.randint(0, 256, shape, generator=gen, dtype=torch.int32)
    codes = torch.where((codes == 0x7F) | (codes == 0xFF), codes - 1, codes).to(torch.uint8)
    if codes.numel() and draw(st.integers(0, 2)) == 0:
        how.append(f"{what}:nan-code")
        codes.view(-1)[int(torch.randint(0, codes.numel(), (1,), generator=gen))] = draw(st.sampled_from(FP8_NAN_CODES))
    return codes.view(FP8_DTYPE)


def _scales(draw, shape, gen, how: list, what: str) -> torch.Tensor:
    s = torch.rand(shape, generator=gen) * 2.0**-6 + 2.0**-10
    return _inject(draw, s, gen, how, what, NONFINITE)


@st.composite
def consumer_calls(draw, device_type: str) -> ApiCall:
    how: list = []
    gen = _gen(draw)
    g, m = draw(st.integers(1, 2)), draw(st.sampled_from((0, 1, 2, 3, 5, 9)))
    n, k = draw(st.sampled_from((128, 128, 256))), draw(st.sampled_from((128, 256)))
    kb = k // QUANT_BLOCK
    check_contract = draw(st.booleans())
    a = _fp8_codes(draw, (g, m, k), gen, how, "a")
    a_kind = draw(st.sampled_from(("contiguous", "contiguous", "sliced-m", "expand-groups", "k-major")))
    how.append(f"a:{a_kind}")
    if a_kind == "sliced-m":
        buf = _fp8_codes(draw, (g, m + 3, k), gen, how, "a-rows")
        buf[:, :m] = a
        a = buf[:, :m]
    elif a_kind == "expand-groups":
        a = a[:1].expand(g, m, k)
    elif a_kind == "k-major":
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    s = torch.full((g, kb, pad4(m)), float("nan"))  # padding rows hold NaN: never read
    s[:, :, :m] = _scales(draw, (g, kb, m), gen, how, "a_scale")
    s_kind = draw(st.sampled_from(("contract", "contract", "drifted-pad8", "wider", "short", "m-major", "expand-groups")))
    how.append(f"a_scale:{s_kind}")
    if s_kind == "drifted-pad8":  # the scale-pad-btm defect's buffer
        d = torch.zeros(g, kb, -(-m // 8) * 8)
        d[:, :, :m] = s[:, :, :m]
        s = d
    elif s_kind == "wider":
        s = torch.cat([s, torch.zeros(g, kb, 4)], dim=2)
    elif s_kind == "short" and m:
        s = s[:, :, : m - 1].contiguous()
    elif s_kind == "m-major":
        s = s.transpose(1, 2).contiguous().transpose(1, 2)
    elif s_kind == "expand-groups":
        s = s[:1].expand(g, kb, s.shape[2])
    b = _fp8_codes(draw, (g, n, k), gen, how, "b")
    if draw(st.booleans()):
        how.append("b:row-padded")
        buf = _fp8_codes(draw, (g, n, k + 128), gen, how, "b-pad")
        buf[:, :, :k] = b
        b = buf[:, :, :k]
    b_scale = _scales(draw, (g, n // WEIGHT_BLOCK, kb), gen, how, "b_scale")
    tensors = _to_device(draw, dict(a=a, a_scale=s, b=b, b_scale=b_scale), device_type, how)
    backends = CONSUMER_BACKENDS[device_type]
    kwargs = dict(backend=draw(st.sampled_from(backends)), check_contract=check_contract)
    call = ApiCall("consumer", (tensors["a"], tensors["a_scale"], tensors["b"], tensors["b_scale"]), kwargs, ())
    out_kind = draw(st.sampled_from(("none", "none", "contiguous", "chain-view", "padded", "expanded", "overlapping",
                                     "aliases-a_scale", "fp32", "shape")))
    how.append(f"out:{out_kind}")
    dev = tensors["a"].device
    if out_kind == "contiguous":
        call.kwargs["out"] = torch.empty(g, m, n, dtype=torch.bfloat16, device=dev)
    elif out_kind == "chain-view":
        call.kwargs["out"] = torch.empty(m, g, n, dtype=torch.bfloat16, device=dev).transpose(0, 1)
    elif out_kind == "padded":  # the gaps around out's elements must stay untouched
        call.out_base = torch.full((g, m + 1, n + 64), 7.0, dtype=torch.bfloat16, device=dev)
        call.out_base_before = call.out_base.clone()
        call.kwargs["out"] = call.out_base[:, 1:, 32: 32 + n]
    elif out_kind == "expanded":
        call.kwargs["out"] = torch.empty(1, m, n, dtype=torch.bfloat16, device=dev).expand(g, m, n)
    elif out_kind == "overlapping" and m > 1:
        call.kwargs["out"] = torch.empty(g * m * n, dtype=torch.bfloat16, device=dev).as_strided((g, m, n), (m * n, n // 2, 1))
    elif out_kind == "aliases-a_scale" and m and tensors["a_scale"].is_contiguous() and tensors["a_scale"].device == dev \
            and dev.type != "meta":
        out = torch.empty(g, m, n, dtype=torch.bfloat16, device=dev)
        span = tensors["a_scale"].numel()
        if span <= out.numel() // 2:  # a_scale becomes a float32 view of out's first bytes
            tensors["a_scale"] = out.view(-1).view(torch.float32)[:span].view(tensors["a_scale"].shape).copy_(tensors["a_scale"])
            call.args = (tensors["a"], tensors["a_scale"], tensors["b"], tensors["b_scale"])
            call.kwargs["out"] = out
    elif out_kind == "fp32":
        call.kwargs["out"] = torch.empty(g, m, n, device=dev)
    elif out_kind == "shape":
        call.kwargs["out"] = torch.empty(g, m, n + 128, dtype=torch.bfloat16, device=dev)
    mutation = draw(st.sampled_from(("none",) * 8 + ("not-a-tensor", "dtype", "backend", "check_contract")))
    if mutation in ("backend", "check_contract"):
        how.append(f"mutation:{mutation}")
        call.kwargs[mutation] = draw(st.sampled_from(("cuda", None, 3, "Triton") if mutation == "backend" else BAD_BOOLS))
    elif mutation != "none":
        how.append(f"mutation:{mutation}")
        i = draw(st.integers(0, 3))
        if mutation == "not-a-tensor":
            bad = draw(st.sampled_from((None, [[1.0]], np.zeros((1, 1, 128), np.float32))))
        else:
            bad = call.args[i].to(draw(st.sampled_from((torch.bfloat16, torch.float64, torch.int8, torch.float8_e5m2))))
        call.args = call.args[:i] + (bad,) + call.args[i + 1:]
    call.how = tuple(how)
    return call


@st.composite
def weights(draw, g: int, k: int, device, how: list) -> dict:
    gen = _gen(draw)
    r = draw(st.sampled_from((128, 128, 256)))
    w = _inject(draw, torch.randn(g, r, k, generator=gen) * 0.05, gen, how, "w", NONFINITE)
    w_fp8, w_scale = kernels.quantize_weight_fp8(w)
    kind = draw(st.sampled_from(("valid",) * 12 + ("r-100", "r-0", "scale-shape", "w-bf16", "w-meta", "groups")))
    how.append(f"weight:{kind}")
    if kind == "r-100":
        w_fp8, w_scale = w_fp8[:, :100], w_scale[:, :0]
    elif kind == "r-0":
        w_fp8, w_scale = w_fp8[:, :0], w_scale[:, :0]
    elif kind == "scale-shape":
        w_scale = w_scale[:, :, :1].contiguous() if k > 128 else torch.cat([w_scale, w_scale], dim=1)
    elif kind == "w-bf16":
        w_fp8 = w_fp8.to(torch.bfloat16)
    elif kind == "groups":
        w_fp8, w_scale = torch.cat([w_fp8, w_fp8]), torch.cat([w_scale, w_scale])
    dev = "meta" if kind == "w-meta" else device
    return dict(w_fp8=w_fp8.to(dev), w_scale=w_scale.to(dev))


@st.composite
def o_a_proj_calls(draw, device_type: str) -> ApiCall:
    tensors, params, how = draw(producer_inputs(device_type, NONFINITE))
    kwargs: dict = {}
    _mutate_producer(draw, tensors, params, kwargs, how)
    for name in ("quant_group_size", "check_positions"):  # not parameters of o_a_proj
        kwargs.pop(name, None)
    g = params["n_groups"] if isinstance(params["n_groups"], int) and 0 < params["n_groups"] < 8 else 1
    o = tensors["o"]
    k = params["heads_per_group"] * o.shape[-1] if isinstance(o, torch.Tensor) and isinstance(params["heads_per_group"], int) \
        and 0 < params["heads_per_group"] < 8 else 128
    w = draw(weights(g, k, o.device if isinstance(o, torch.Tensor) else "cpu", how))
    api = draw(st.sampled_from(("chain", "chain", "fallback")))
    if api == "chain":
        backends = CHAIN_BACKENDS[device_type]
        kwargs["backend"] = draw(st.sampled_from(backends * 4 + ("emulated", None)))
        kwargs["check_contract"] = draw(st.sampled_from((True, True, True, False, False, False, "yes", 1)))
    else:
        kwargs["fp32_matmul"] = draw(st.sampled_from((False, False, False, True, True, True, 1, None)))
        if draw(st.integers(0, 3)) == 0 and w["w_fp8"].dtype == FP8_DTYPE and w["w_fp8"].device.type != "meta" \
                and w["w_scale"].shape == (w["w_fp8"].shape[0], w["w_fp8"].shape[1] // 128, w["w_fp8"].shape[2] // 128):
            how.append("w_bf16:given")
            kwargs["w_bf16"] = dequantize_weight(w["w_fp8"], w["w_scale"], dtype=torch.bfloat16)
    args = (tensors["o"], tensors["positions"], tensors["cos_sin_cache"], w["w_fp8"], w["w_scale"], params.pop("n_groups"),
            params.pop("heads_per_group"), params.pop("nope_dim"), params.pop("rope_dim"))
    return ApiCall(api, args, {**params, **kwargs}, tuple(how))


@st.composite
def quantize_weight_calls(draw, device_type: str) -> ApiCall:
    how: list = []
    gen = _gen(draw)
    g, n, k = draw(st.integers(1, 2)), draw(st.sampled_from((128, 256))), draw(st.sampled_from((128, 256)))
    dtype = draw(st.sampled_from((torch.bfloat16, torch.float16, torch.float32)))
    w = _inject(draw, (torch.randn(g, n, k, generator=gen) * draw(st.sampled_from((1e-4, 0.05, 100.0)))).to(dtype), gen, how, "w")
    kind = draw(st.sampled_from(("contiguous", "contiguous", "transposed", "expand-groups", "sliced", "zero-block",
                                 "n-100", "rank-2", "int8", "not-a-tensor")))
    how.append(f"w:{kind}")
    if kind == "transposed":
        w = w.transpose(1, 2).contiguous().transpose(1, 2)
    elif kind == "expand-groups":
        w = w[:1].expand(g, n, k)
    elif kind == "sliced":
        w = torch.cat([w, w], dim=2)[:, :, k // 2: k // 2 + k]
    elif kind == "zero-block":
        w[:, :128, :128] = 0
    elif kind == "n-100":
        w = w[:, :100]
    elif kind == "rank-2":
        w = w[0]
    elif kind == "int8":
        w = w.to(torch.int8)
    elif kind == "not-a-tensor":
        w = w.tolist() if w.numel() < 70000 else None
    if isinstance(w, torch.Tensor):
        w = _to_device(draw, dict(w=w), device_type, how)["w"]
    return ApiCall("quantize_weight", (w,), {}, tuple(how))


@st.composite
def api_calls(draw, device_type: str | None = None) -> ApiCall:
    """Any call of the public kernel API, valid or not (see the module docstring)."""
    device_type = device_type or _device_type()
    kind = draw(st.sampled_from(("producer", "producer", "producer", "consumer", "consumer", "consumer", "o_a_proj",
                                 "o_a_proj", "quantize_weight")))
    return draw({"producer": producer_calls, "consumer": consumer_calls, "o_a_proj": o_a_proj_calls,
                 "quantize_weight": quantize_weight_calls}[kind](device_type))


# ---------------------------------------------------------------------------------------------------
# Checks: what each API must return when it does not refuse.


def _canon(x):
    """A dense copy with the same values (what a reference reads), or x itself for a non-tensor."""
    return x.contiguous().clone() if isinstance(x, torch.Tensor) else x


def _meta_like(result, expected, ctx: str) -> None:
    result = result if isinstance(result, tuple) else (result,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for r, e in zip(result, expected, strict=True):
        assert (tuple(r.shape), r.dtype) == (tuple(e.shape), e.dtype), \
            f"meta result {tuple(r.shape)} {r.dtype} != reference {tuple(e.shape)} {e.dtype}; {ctx}"


def _check_producer(call: ApiCall, result, ctx: str) -> None:
    if call.api == "producer_op":
        o, pos, cache, g, hpg, nope, rope, qgs, neox, _btm = call.args
        kw = dict(quant_group_size=qgs, is_neox=neox)
    else:
        o, pos, cache, g, hpg, nope, rope = call.args
        kw = {k: v for k, v in call.kwargs.items() if k in ("quant_group_size", "is_neox")}
    ref = inv_rope_fp8_quant_ref(_canon(o), _canon(pos), _canon(cache), g, hpg, nope, rope, **kw)
    if o.device.type == "meta":
        return _meta_like(result, ref, ctx)
    fp8, scale = result
    assert_fp8_equal(fp8.cpu(), ref[0].cpu(), "fp8 codes vs the reference on dense copies", ctx)
    assert_exact(scale.cpu().view(torch.int32), ref[1].cpu().view(torch.int32), "scale bits vs the reference on dense copies", ctx)


def _check_within(result: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, what: str, ctx: str) -> None:
    """Non-finite exactly where the float64 reference is, elsewhere ``|result - ref| <= bound``."""
    r = result.double().cpu()
    bad_r, bad_e = ~torch.isfinite(r), ~torch.isfinite(ref)
    if not torch.equal(bad_r, bad_e):
        idx = tuple(int(i) for i in (bad_r != bad_e).nonzero()[0])
        raise AssertionError(f"{what}: non-finite at other places than the reference ({int(bad_r.sum())} vs "
                             f"{int(bad_e.sum())}); first at {idx}: got {r[idx].item()} ref {ref[idx].item()}; {ctx}")
    ok = bad_e | ((r - ref).abs() <= torch.nan_to_num(bound, nan=float("inf")))
    if not ok.all():
        idx = tuple(int(i) for i in (~ok).nonzero()[0])
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.numel()} outside the bound; first at {idx}: got "
                             f"{r[idx].item()} ref {ref[idx].item()} bound {bound[idx].item():.3g}; {ctx}")


def _raw_consumer_inputs(a, a_scale):
    """What every backend reads: dense ``[G, M, K]`` and ``[G, K/128, pad4(M)]`` from the first element."""
    g, m, k = a.shape
    kb, sm = k // QUANT_BLOCK, pad4(m)
    a_raw = a.as_strided((g, m, k), (m * k, k, 1), a.storage_offset())
    s_raw = a_scale.as_strided((g, kb, m), (kb * sm, sm, 1), a_scale.storage_offset())
    return a_raw, s_raw


def _check_consumer(call: ApiCall, result, ctx: str) -> None:
    a, a_scale, b, b_scale = call.args
    out = call.kwargs.get("out")
    if out is not None:
        assert result is out, f"fp8_block_bmm(out=...) returned another tensor; {ctx}"
    if a.device.type == "meta":
        assert (tuple(result.shape), result.dtype) == ((a.shape[0], a.shape[1], b.shape[1]), torch.bfloat16), ctx
        return
    # on the tensors' own storage (a copy to the CPU would keep only their elements); raises when too small
    a_raw, s_raw = _raw_consumer_inputs(a, a_scale)
    args = (a_raw.cpu(), s_raw.cpu(), b.cpu(), b_scale.cpu())
    ref = fp8_block_bmm_math_ref(*args)
    bound = BF16_HALF_ULP * ref.abs() + FP32_ACC_TOL * fp8_block_bmm_abs_ref(*args)
    _check_within(result, ref, bound, "consumer vs float64 math reference", ctx)
    if call.out_base is not None:
        touched = torch.zeros(call.out_base.numel(), dtype=torch.bool, device=out.device)
        touched.as_strided(out.shape, out.stride(), out.storage_offset() - call.out_base.storage_offset()).fill_(True)
        kept = call.out_base.reshape(-1)[~touched].cpu()
        assert torch.equal(kept, call.out_base_before.reshape(-1)[~touched].cpu()), f"out=: elements around out changed; {ctx}"


def _check_o_a_proj(call: ApiCall, result, ctx: str) -> None:
    o, pos, cache, w_fp8, w_scale, g, hpg, nope, rope = call.args
    neox = call.kwargs.get("is_neox", True)
    m, k = o.shape[0], hpg * o.shape[2]
    if call.api == "chain":
        fp8, scale = inv_rope_fp8_quant_ref(_canon(o), _canon(pos), _canon(cache), g, hpg, nope, rope, is_neox=neox)
        if o.device.type == "meta":
            assert (tuple(result.shape), result.dtype) == ((m, g, w_fp8.shape[1]), torch.bfloat16), ctx
            return
        args = (fp8.cpu(), scale.cpu(), w_fp8.cpu(), w_scale.cpu())
        ref, absref = fp8_block_bmm_math_ref(*args), fp8_block_bmm_abs_ref(*args)
    else:
        x = inverse_rope_(_canon(o), _canon(pos), _canon(cache), rope, neox).to(torch.bfloat16)
        if o.device.type == "meta":
            assert (tuple(result.shape), result.dtype) == ((m, g, w_fp8.shape[1]), torch.bfloat16), ctx
            return
        w = call.kwargs.get("w_bf16")
        w = (dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16) if w is None else w).cpu().double()
        x = x.cpu().double().reshape(m, g, k).transpose(0, 1)
        ref, absref = torch.bmm(x, w.transpose(1, 2)), torch.bmm(x.abs(), w.abs().transpose(1, 2))
    bound = BF16_HALF_ULP * ref.abs() + FP32_ACC_TOL * absref
    _check_within(result.transpose(0, 1), ref, bound, f"o_a_proj {call.api} vs float64 reference", ctx)


def _check_quantize_weight(call: ApiCall, result, ctx: str) -> None:
    (w,) = call.args
    if w.device.type == "meta":
        return _meta_like(result, kernels.quantize_weight_fp8(w.contiguous()), ctx)
    w_fp8, w_scale = result
    dense = kernels.quantize_weight_fp8(_canon(w))
    assert_fp8_equal(w_fp8.cpu(), dense[0].cpu(), "weight codes vs the same weight, dense", ctx)
    assert_exact(w_scale.cpu(), dense[1].cpu(), "weight scales vs the same weight, dense", ctx)
    g, n, k = w.shape
    blocks = w.cpu().double().reshape(g, n // 128, 128, k // 128, 128)
    want = block_scale(blocks.abs().amax(dim=(2, 4)).float())
    assert_exact(w_scale.cpu(), want, "w_scale = absmax / 448 per 128x128 block", ctx)
    s = w_scale.cpu().double().repeat_interleave(128, 1).repeat_interleave(128, 2)
    deq, exact = w_fp8.cpu().double() * s, w.cpu().double()
    bound = FP8_HALF_ULP * exact.abs() + 2.0**-10 * s  # e4m3 half ulp, and its subnormals' spacing
    fine = torch.isfinite(s) & (s > 0)
    _check_within(torch.where(fine, deq, 0.0), torch.where(fine, exact, 0.0), bound, "dequantized weight vs weight", ctx)


CHECKS = {"producer": _check_producer, "producer_op": _check_producer, "producer_ref": _check_producer,
          "consumer": _check_consumer, "chain": _check_o_a_proj, "fallback": _check_o_a_proj,
          "quantize_weight": _check_quantize_weight}


def outcome(call: ApiCall) -> tuple[str, str]:
    """``("refused", msg)``, ``("answered", "")``, ``("bad-message", msg)``, ``("wrong", why)`` or ``("crash", why)``."""
    try:
        result = API[call.api](*call.args, **call.kwargs)
    except (ValueError, TypeError) as e:
        msg = str(e)
        return ("refused", msg) if "expected" in msg and "got" in msg else ("bad-message", f"{type(e).__name__}: {msg}")
    except Exception as e:  # noqa: BLE001 -- anything else is what the property forbids
        return "crash", f"{type(e).__name__}: {str(e)[:500]}"
    try:
        CHECKS[call.api](call, result, repr(call))
    except AssertionError as e:
        return "wrong", str(e)[:2000]
    except Exception as e:  # noqa: BLE001 -- the reference cannot compute it: the call should have refused
        return "wrong", f"returned a result where the reference raises {type(e).__name__}: {str(e)[:300]}; {call!r}"
    return "answered", ""


# ---------------------------------------------------------------------------------------------------
# The tests.


def _assert_answered_or_refused(call: ApiCall) -> str:
    kind, detail = outcome(call)
    assert kind in ("answered", "refused"), f"{kind}: {detail}"
    return kind


@settings(max_examples=80)
@given(call=api_calls())
def test_every_call_is_answered_or_refused(call):
    """Any call of the public kernel API raises ValueError/TypeError saying what was expected and what
    came, or returns what the reference returns (bit for bit for the producers, within the documented
    bound for the consumers); never another exception, a crash, or a wrong answer."""
    _assert_answered_or_refused(call)


def _small_consumer(m=5, nan_code=None):
    gen = torch.Generator().manual_seed(m)
    a = torch.randint(0, 0x7E, (2, m, 128), dtype=torch.uint8, generator=gen)
    if nan_code is not None:
        a[1, m // 2, 7] = nan_code
    s = torch.rand(2, 1, pad4(m), generator=gen) * 2.0**-6
    b = torch.randint(0, 0x7E, (2, 128, 128), dtype=torch.uint8, generator=gen).view(FP8_DTYPE)
    dev = _device_type()
    return a.view(FP8_DTYPE).to(dev), s.to(dev), b.to(dev), (torch.rand(2, 1, 1, generator=gen) * 2.0**-6).to(dev)


def _small_producer(api="producer", m=5, *, positions_stride=1, special=None, btm=None, device=None, **kwargs):
    """A valid call at M=5, 2 groups, head dim 128 (rope 64), with a strided positions view or a
    special value at o[1, 0, 3] (nope part) and o[2, 1, 100] (rope part)."""
    o, pos, cache = make_inputs(ProducerCase(m=m, n_groups=2, heads_per_group=1, seed=20), "cpu")
    if special is not None:
        o[1 % m, 0, 3] = special
        o[2 % m, 1, 100] = special
    if positions_stride > 1:  # the skipped elements are valid positions too
        wide = torch.stack([pos.flip(0)] * (positions_stride - 1) + [pos], dim=1).reshape(-1)
        pos = wide[positions_stride - 1:: positions_stride]
    device = device or _device_type()
    o, pos, cache = o.to(device), pos.to(device), cache.to(device)
    if api == "producer_op":
        return ApiCall(api, (o, pos, cache, 2, 1, 64, 64, 128, True, btm or 0), {}, ("pinned",))
    return ApiCall(api, (o, pos, cache, 2, 1, 64, 64), dict(block_tokens_m=btm, **kwargs), ("pinned",))


def _with_arg(call: ApiCall, i: int, f) -> ApiCall:
    return dataclasses.replace(call, args=call.args[:i] + (f(call.args[i]),) + call.args[i + 1:])


def _chain(backend, **producer_kw):
    call = _small_producer(**producer_kw)
    w = torch.randn(2, 128, 128, generator=torch.Generator().manual_seed(1)) * 0.05
    w_fp8, w_scale = kernels.quantize_weight_fp8(w.to(_device_type()))
    o, pos, cache = call.args[:3]
    return ApiCall("chain", (o, pos, cache, w_fp8, w_scale, 2, 1, 64, 64), dict(backend=backend), ("pinned",))


#: (id, call, expected outcome): calls that crashed or answered wrongly in issue 20, the top of the
#: block_tokens_m range, and the cases that depend on the kernels' own handling (strided positions,
#: NaN/Inf semantics: the producer must match the reference, the consumer must not read a NaN code
#: as a number).
PINNED = [
    ("out-expanded", lambda: ApiCall("consumer", _small_consumer(), dict(
        out=torch.empty(1, 5, 128, dtype=torch.bfloat16, device=_device_type()).expand(2, 5, 128)), ("out:expanded",)),
     "refused"),
    ("out-overlapping", lambda: ApiCall("consumer", _small_consumer(), dict(
        out=torch.empty(2 * 5 * 128, dtype=torch.bfloat16, device=_device_type()).as_strided((2, 5, 128), (640, 64, 1))),
        ("out:overlapping",)), "refused"),
    ("a_scale-short-raw", lambda: ApiCall("consumer", _small_consumer()[:1] + (torch.rand(2, 1, 2, device=_device_type()),)
                                          + _small_consumer()[2:], dict(check_contract=False), ("a_scale:short",)), "refused"),
    ("check_contract-str", lambda: ApiCall("consumer", _small_consumer(), dict(check_contract="yes"), ()), "refused"),
    ("raw-emulated", lambda: ApiCall("consumer", _small_consumer(), dict(backend="emulated", check_contract=False), ()), "answered"),
    # the raw op checks positions itself on a CPU; on CUDA that costs a host sync, so there the public
    # function checks them when asked (check_positions=True)
    ("raw-op-position-2**40", lambda: _with_arg(_small_producer("producer_op", device="cpu"), 1,
                                                lambda p: p.clone().fill_(2**40)), "refused"),
    ("position-2**40-checked", lambda: _with_arg(_small_producer(check_positions=True), 1,
                                                 lambda p: p.clone().fill_(2**40)), "refused"),
    ("raw-op-meta-bad-cache", lambda: _with_arg(_small_producer("producer_op", device="meta"), 2, lambda c: c[:, :32]), "refused"),
    ("btm-16384", lambda: _small_producer(btm=16384), "refused"),
    ("btm-1024", lambda: _small_producer(m=2, btm=1024), "answered"),
    ("positions-stride-2", lambda: _small_producer(positions_stride=2), "answered"),
    ("positions-stride-3-raw-op", lambda: _small_producer("producer_op", positions_stride=3), "answered"),
    ("chain-triton-positions-stride-2", lambda: _chain("triton", positions_stride=2), "answered"),
    ("producer-nan", lambda: _small_producer(special=float("nan")), "answered"),
    ("producer-inf", lambda: _small_producer(special=float("inf")), "answered"),
    ("producer-minus-inf-btm-8", lambda: _small_producer(special=float("-inf"), btm=8), "answered"),
    ("chain-triton-nan", lambda: _chain("triton", special=float("nan")), "answered"),
    ("consumer-triton-nan-code-0x7f", lambda: ApiCall("consumer", _small_consumer(nan_code=0x7F), {}, ()), "answered"),
    ("consumer-triton-nan-code-0xff", lambda: ApiCall("consumer", _small_consumer(nan_code=0xFF), {}, ()), "answered"),
]


@pytest.mark.parametrize("make, expect", [pytest.param(f, e, id=i) for i, f, e in PINNED])
def test_pinned_api_calls(make, expect):
    """Named calls of the property above, each with the outcome it must have."""
    assert _assert_answered_or_refused(make()) == expect


# ---------------------------------------------------------------------------------------------------
# Positions up to 2**20 - 1 into a YaRN cache.


def check_long_context(producer, case: LongContextCase) -> None:
    """``producer`` equals the reference bit for bit at positions up to 2**20 - 1 (the reference gets
    dense int64 copies of the positions)."""
    o, pos, cache = make_inputs(case, _device_type())
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox, block_tokens_m=case.block_tokens_m)
    ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos.contiguous().long(), cache), is_neox=case.is_neox)
    ref_fp8, ref_scale = ref_fp8.cpu(), ref_scale.cpu()
    ctx = f"{case} max position {int(pos.max())}"
    assert_fp8_equal(fp8.cpu(), ref_fp8, "fp8 codes at long-context positions", ctx)
    assert_exact(scale.cpu(), ref_scale, "scales at long-context positions", ctx)


_LONG_PINNED = LongContextCase(m=6, n_groups=2, heads_per_group=1, rope_dim=8, positions_dtype=torch.int32, seed=3)


@settings(max_examples=8)
@given(case=long_context_cases())
@example(case=_LONG_PINNED)
@example(case=dataclasses.replace(_LONG_PINNED, positions_dtype=torch.int64, positions_stride=3, cache_3d=True, rope_dim=2,
                                  is_neox=False))
def test_long_context_positions_match_reference(case):
    """Positions up to 2**20 - 1 (DeepSeek-V4's context), int32 and int64, contiguous or strided, into a
    YaRN-scaled cache of all 2**20 rows: the producer equals the reference bit for bit."""
    check_long_context(kernels.inv_rope_fp8_quant, case)


def test_long_context_property_catches_16_bit_positions():
    """A producer that keeps only the low 16 bits of each position (an int16 index, wrapped into the
    cache) fails the long-context property; the suite's positions below 4096 cannot tell it apart."""

    def narrowed(o, positions, cache, *args, **kwargs):
        wrapped = positions.to(torch.int16).to(torch.int64) & 0xFFFF
        return kernels.inv_rope_fp8_quant(o, wrapped.to(positions.dtype), cache, *args, **kwargs)

    narrowed.name = "int16-positions"
    with pytest.raises(AssertionError, match="fp8 codes at long-context positions"):
        check_long_context(narrowed, _LONG_PINNED)
    # the control: below 2**16 the narrowed producer is exact, so only long positions expose it
    case = ProducerCase(m=6, n_groups=2, heads_per_group=1, seed=3)
    o, pos, cache = make_inputs(case, _device_type())
    fp8, scale = narrowed(*case.args(o, pos, cache))
    ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos, cache))
    assert_fp8_equal(fp8.cpu(), ref_fp8.cpu(), "int16-positions producer at positions < 4096", f"{case}")
    assert LONG_CONTEXT - 1 >= 2**16, "the long-context positions must reach past 16 bits"


def fuzz_tally(examples: int, device_type: str | None = None) -> dict:
    """Run ``examples`` drawn calls without stopping: counts per outcome and API, and the first few failures."""
    tally: dict = {"cases": 0, "outcomes": collections.Counter(), "by_api": collections.Counter(), "failures": []}

    @settings(max_examples=examples, database=None, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(call=api_calls(device_type))
    def run(call):
        kind, detail = outcome(call)
        tally["cases"] += 1
        tally["outcomes"][kind] += 1
        tally["by_api"][f"{call.api}:{kind}"] += 1
        if kind not in ("answered", "refused") and len(tally["failures"]) < 40:
            tally["failures"].append(f"{kind}: {detail[:600]}")

    run()
    return tally


if __name__ == "__main__":
    import json

    result = fuzz_tally(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
    print(json.dumps({k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in result.items()}, indent=1))
