"""The defect catalog: deliberate, named defects the kernel suite must kill.

Each mutant is an implementation under test (a producer or a consumer, see
:mod:`accval.implementations`) built from accval's real kernels with exactly one defect. They are
registered as ``mutant:<id>`` and reachable only by that name: nothing in ``kernels`` or the A/B
harness calls them unless asked to (``accval mutants``, ``--producer mutant:<id>``).
"""

from __future__ import annotations

import dataclasses

import torch
import triton.language as tl

import accval.kernels as kernels
from accval.kernels import _platform, provenance
from accval.kernels.constants import FP8_DTYPE, FP8_E4M3_MAX, QUANT_BLOCK, pad4
from accval.kernels.fp8_block_bmm import _run_torch, _run_triton, validate_consumer_args
from accval.kernels.inv_rope_fp8_quant import DISPATCH_TABLES, config_for, launch_producer, validate_producer_args
from accval.kernels.recipes import RECIPE_NAMES, block_scales, get_recipe
from accval.kernels.reference import dequantize_activations, dequantize_weight, fp8_block_bmm_math_ref

#: The recipes whose scales accval's consumers read (fp32 values); see accval.implementations.
FP32_SCALE_RECIPES = tuple(r for r in RECIPE_NAMES if not get_recipe(r).packed)


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    role: str  # "producer" or "consumer"
    attr: str  # function name in this module
    defect: str
    seen: str  # where it was seen, or why it is likely
    gpu_only: bool = False


CATALOG: dict[str, Mutant] = {}


def _mutant(id: str, role: str, defect: str, seen: str, gpu_only: bool = False, expected_impl: str = "triton",
            recipe: str = "fp32-div"):
    """Register ``fn`` as mutant ``id``; ``expected_impl`` is the backend it claims to be, ``recipe`` the
    recipe it claims (a producer mutant also claims bit-exactness: each is an exact kernel with one defect)."""
    def deco(fn):
        CATALOG[id] = Mutant(id, role, fn.__name__, defect, seen, gpu_only)
        fn.accval_expected_impl = expected_impl
        if role == "producer":
            fn.accval_recipe = recipe
            fn.accval_exact = True
        else:
            fn.accval_recipe = (recipe,) if get_recipe(recipe).packed else FP32_SCALE_RECIPES
        return fn
    return deco


def _produce(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox,
             block_tokens_m, *, fp8_rows=None, scale_rows=None, rows_end=None, index_dtype=tl.int64, round_dtype=None,
             name="mutant"):
    """accval's producer launch with the buffers and options a mutant chooses."""
    p = validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                               quant_group_size, is_neox, block_tokens_m=block_tokens_m)
    cfg = config_for(p.m, o.device, block_tokens_m, is_neox=p.is_neox)
    fp8 = torch.empty((p.n_groups, fp8_rows or p.m, p.k), dtype=FP8_DTYPE, device=o.device)
    scale = torch.empty((p.n_groups, p.k_blocks, scale_rows or pad4(p.m)), dtype=torch.float32, device=o.device)
    launch_producer(p, o, positions, cos_sin_cache, fp8, scale, cfg, rows_end=rows_end, index_dtype=index_dtype,
                    round_dtype=round_dtype)
    provenance.record("producer", "triton", _platform.execution_mode(o.device), mutant=name)
    return fp8[:, : p.m], scale


def _btm_padded_rows(m: int, block_tokens_m) -> int:
    """The defective padding ``pad_up(M, max(BTM, 4))``, BTM forced or the pull request's (its B200 table,
    ``DISPATCH_TABLES["sm100"]``) whatever this device dispatches: the defect is the pull request's, so it
    shows wherever its M does. With this device's table it would vanish on Hopper, whose producer runs one
    token per program at every M (``pad_up(M, 4) == pad4(M)``), and an A/B there would inject nothing."""
    btm = block_tokens_m or next(c.block_tokens_m for min_m, c in DISPATCH_TABLES["sm100"] if m >= min_m)
    pad = max(btm, 4)
    return -(-m // pad) * pad


def _flip_sin(cos_sin_cache: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """A copy of the cache with sin negated: inverse RoPE becomes the forward rotation."""
    flipped = cos_sin_cache.clone()
    if flipped.dim() == 2:
        flipped[:, rope_dim // 2:] *= -1
    else:
        flipped[:, 1] *= -1
    return flipped


def _consumer_out(a, a_scale, b, b_scale, out, check_contract: bool):
    """Validate a consumer mutant's arguments; returns ``(out, g, m, n, k)`` with ``out`` allocated if None."""
    g, m, n, k = validate_consumer_args(a, a_scale, b, b_scale, out, check_contract)
    out = torch.empty((g, m, n), dtype=torch.bfloat16, device=a.device) if out is None else out
    return out, g, m, n, k


@_mutant("scale-pad-btm", "producer",
         "scale buffer's M padded to pad_up(M, max(BTM, 4)) while the consumer assumes pad4(M)",
         "TensorRT-LLM PR 14254: DEP8 gsm8k strict 96.59 -> 83.32; hidden because every tested M >= 1024 was a multiple of its BTM")
def scale_pad_btm(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                  is_neox=True, *, block_tokens_m=None):
    rows = _btm_padded_rows(o.shape[0], block_tokens_m)
    return _produce(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                    is_neox, block_tokens_m, scale_rows=rows, rows_end=rows, name="scale-pad-btm")


@_mutant("fp8-m-padded", "producer",
         "FP8 buffer allocated with M padded to 4, so the group stride is pad4(M)*K instead of M*K",
         "TensorRT-LLM PR 14254 follow-up: TEP8 gsm8k 96.25 -> 37.38 when M % 4 != 0")
def fp8_m_padded(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                 is_neox=True, *, block_tokens_m=None):
    return _produce(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                    is_neox, block_tokens_m, fp8_rows=pad4(o.shape[0]), name="fp8-m-padded")


@_mutant("pad-rows-not-zeroed", "producer",
         "scale rows M..pad4(M)-1 left uninitialised (the grid covers M rows, the buffer pad4(M))",
         "common when a grid is sized by M and the buffer by the consumer's padding; the consumer then reads garbage")
def pad_rows_not_zeroed(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                        is_neox=True, *, block_tokens_m=None):
    return _produce(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                    is_neox, block_tokens_m, rows_end=o.shape[0], name="pad-rows-not-zeroed")


@_mutant("int32-index", "producer",
         "token * stride computed in int32: overflows past 2**31 elements (M > 32768 at DSv4 shape)",
         "illegal memory access at long prefill (token * stride past 2**31 elements); invisible at small test sizes",
         gpu_only=True)
def int32_index(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                is_neox=True, *, block_tokens_m=None):
    return _produce(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                    is_neox, block_tokens_m, index_dtype=tl.int32, name="int32-index")


@_mutant("rope-sign", "producer",
         "forward RoPE applied instead of the inverse (sin not negated)",
         "the forward and inverse rotations differ by one sign; copying the forward kernel is the easy mistake")
def rope_sign(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
              is_neox=True, *, block_tokens_m=None):
    return kernels.inv_rope_fp8_quant(o, positions, _flip_sin(cos_sin_cache, rope_dim), n_groups, heads_per_group,
                                      nope_dim, rope_dim, quant_group_size, is_neox, block_tokens_m=block_tokens_m)


@_mutant("rope-layout", "producer",
         "NEOX (half-split) and GPT-J (interleaved) pairing swapped",
         "vLLM/TRT-LLM kernels default to NEOX while the Hugging Face DeepSeek-V4 model uses interleaved pairs")
def rope_layout(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                is_neox=True, *, block_tokens_m=None):
    return kernels.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                      quant_group_size, not is_neox, block_tokens_m=block_tokens_m)


@_mutant("no-input-rounding", "producer",
         "the fused kernel quantizes the fp32 roped value, skipping the legacy path's rounding to bf16",
         "likely whenever two kernels are fused: the intermediate bf16 store disappears; fixed-tolerance tests (1% mean "
         "relative) cannot see it, bit-exact comparison with the legacy path can")
def no_input_rounding(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                      is_neox=True, *, block_tokens_m=None):
    return _produce(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                    is_neox, block_tokens_m, round_dtype=torch.float32, name="no-input-rounding")


@torch.library.custom_op("accval_mutants::inv_rope_fp8_quant_fake_shape", mutates_args=())
def _fake_shape_op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, n_groups: int,
                   heads_per_group: int, nope_dim: int, rope_dim: int, quant_group_size: int, is_neox: bool,
                   block_tokens_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.accval.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim,
                                               rope_dim, quant_group_size, is_neox, block_tokens_m)


@_fake_shape_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox,
      block_tokens_m):
    m = o.shape[0]
    btm = block_tokens_m or config_for(m, o.device).block_tokens_m  # the stale pre-fix padding rule
    k = heads_per_group * o.shape[2]
    pad = max(btm, 4)
    return (o.new_empty((n_groups, m, k), dtype=FP8_DTYPE),
            o.new_empty((n_groups, k // 128, (m + pad - 1) // pad * pad), dtype=torch.float32))


@_mutant("fake-shape", "producer",
         "the fake (meta) implementation still pads scales to max(BTM, 4) after the real one was fixed",
         "torch.compile / CUDA-graph capture: the fake's shape disagrees with the real output; no opcheck compared them")
def fake_shape(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
               is_neox=True, *, block_tokens_m=None):
    validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                           is_neox, block_tokens_m=block_tokens_m)
    return torch.ops.accval_mutants.inv_rope_fp8_quant_fake_shape(o, positions, cos_sin_cache, n_groups, heads_per_group,
                                                                   nope_dim, rope_dim, quant_group_size, is_neox,
                                                                   block_tokens_m or 0)


fake_shape.accval_op = torch.ops.accval_mutants.inv_rope_fp8_quant_fake_shape


@_mutant("silent-fallback", "consumer",
         "a 'faster' backend whose import fails falls back to the old kernel inside a bare except",
         "TensorRT-LLM PR 14254: the CuTe DSL backend never ran; benchmarks compared the Triton kernel with itself",
         expected_impl="torch")
def silent_fallback(a, a_scale, b, b_scale, out=None):
    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, True)
    try:
        import accval_fast_backend_that_does_not_exist  # noqa: F401  (the broken import of the original)
        _run_torch(a, a_scale, b, b_scale, out, g, m, n, k)
    except Exception:  # the defect: swallow and run the old kernel
        _run_triton(a, a_scale, b, b_scale, out, g, m, n, k)
    return out


silent_fallback.accval_devices = ("cuda",)


@_mutant("consumer-scale-stride-m", "consumer",
         "the consumer reads activation scales with m-stride M instead of pad4(M)",
         "the mirror image of scale-pad-btm: a consumer rewritten for a producer that did not pad")
def consumer_scale_stride_m(a, a_scale, b, b_scale, out=None):
    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, True)
    _run_triton(a, a_scale, b, b_scale, out, g, m, n, k, scale_m_align=1)
    return out


def _out_as_if_contiguous(res: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The defect of ``consumer-out-strides``: ``res`` written into ``out``'s storage at the addresses a
    contiguous ``[G, M, N]`` tensor would have, whatever ``out``'s strides."""
    if out is None:
        return res
    g, m, n = out.shape
    out.as_strided((g, m, n), (m * n, n, 1), out.storage_offset()).copy_(res)
    return out


@_mutant("consumer-out-strides", "consumer",
         "the consumer writes out= at the addresses of a contiguous [G, M, N] tensor, ignoring the view's strides",
         "the model passes o_lora.transpose(0, 1) of an [M, G, N] buffer: wrong only with several groups (DEP8; TEP8's "
         "one group makes that view contiguous) and invisible to tests that never pass out=")
def consumer_out_strides(a, a_scale, b, b_scale, out=None):
    res, _, _, _, _ = _consumer_out(a, a_scale, b, b_scale, None, True)
    g, m, n, k = a.shape[0], a.shape[1], b.shape[1], a.shape[2]
    _run_triton(a, a_scale, b, b_scale, res, g, m, n, k)
    return _out_as_if_contiguous(res, out)


@_mutant("ue8m0-no-requant", "producer",
         "UE8M0 scales: the fp32 scale amax/448 is rounded up to a power of two after the payload was quantized "
         "with the fp32 scale, so codes and scale disagree by up to 2x",
         "sglang #28307 and transformers #47030: scales ceiled to UE8M0 without re-quantizing the payload",
         expected_impl="torch-reference", recipe="ue8m0")
def ue8m0_no_requant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                     is_neox=True, *, block_tokens_m=None):
    fp8, scale = kernels.inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                                quant_group_size, is_neox, recipe="fp32-div")
    m = o.shape[0]
    scale[:, :, :m] = block_scales(scale[:, :, :m] * FP8_E4M3_MAX, "ue8m0")  # the defect: only the scale is re-rounded
    return fp8, scale


@_mutant("nonfinite-tile-leak", "producer",
         "a NaN or Inf in one token's input spreads to the scales of every token in its 4-row tile (the tile's "
         "scale taken as one reduction over its rows whenever a row is not finite)",
         "flashinfer #3057: NaN in CUDA-graph padding rows corrupted real tokens' scales; invisible unless a test puts "
         "a non-finite value beside finite tokens, and for any recipe but the legacy one",
         expected_impl="torch-reference", recipe="ue8m0")
def nonfinite_tile_leak(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                        quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    fp8, scale = kernels.inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                                quant_group_size, is_neox, recipe="ue8m0")
    m = o.shape[0]
    g, kb, p = scale.shape
    held = torch.nn.functional.pad(~torch.isfinite(o).reshape(m, -1).all(dim=1), (0, p - m))
    tile_held = held.view(p // 4, 4).any(dim=1).repeat_interleave(4)
    shared = scale.view(g, kb, p // 4, 4).amax(dim=3).repeat_interleave(4, dim=2)
    scale = torch.where(tile_held, shared, scale)  # the defect: the tile's other rows take its reduction
    scale[:, :, m:] = 0
    return fp8, scale


@_mutant("writes-input", "producer",
         "the producer rotates the caller's o in place (the inverse RoPE written back into its input)",
         "SGLang's two-step path rotates o in place before quantizing; fused into one producer the caller's o comes back "
         "changed, which corrupts whatever reads it next (a retried step, a second consumer of the attention output)")
def writes_input(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                 is_neox=True, *, block_tokens_m=None):
    from accval.kernels.reference import inverse_rope_

    out = kernels.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                     quant_group_size, is_neox, block_tokens_m=block_tokens_m)
    inverse_rope_(o, positions, cos_sin_cache, rope_dim, is_neox)  # the defect
    return out


@_mutant("packed-byte-order", "consumer",
         "a consumer of packed UE8M0 scales reads the four exponent bytes of each int32 word in the wrong order",
         "packing is little-endian by k-block (vLLM / DeepGEMM on SM100); a big-endian unpack swaps k-blocks' scales",
         expected_impl="math-reference", recipe="ue8m0-packed")
def packed_byte_order(a, a_scale, b, b_scale, out=None):
    g, m, k = a.shape
    words = a_scale.shape[1]
    swapped = a_scale.view(torch.uint8).view(g, words, a_scale.shape[2], 4).flip(-1).contiguous().view(torch.int32)
    swapped = swapped.view(g, words, a_scale.shape[2])
    res = fp8_block_bmm_math_ref(a, swapped, b, b_scale).to(torch.bfloat16)
    provenance.record("consumer", "math-reference", f"torch-{a.device.type}", mutant="packed-byte-order")
    if out is None:
        return res
    out.copy_(res)
    return out



def _scales_token_major(scale: torch.Tensor) -> torch.Tensor:
    """The defect of ``scale-token-major``: the scales written token by token (``[G, pad4(M), K/128]`` order)
    into a buffer whose shape and strides say ``[G, K/128, pad4(M)]``."""
    g, kb, p = scale.shape
    return scale.transpose(1, 2).contiguous().view(g, kb, p)


def _scales_groups_flattened(scale: torch.Tensor, m: int) -> torch.Tensor:
    """The defect of ``scale-groups-flattened``: scales computed over ``o`` flattened to ``[M * G, K]`` rows (row
    ``t * G + g``) and read back as if those rows were group-major (row ``g * M + t``)."""
    g, kb, _ = scale.shape
    out = torch.zeros_like(scale)
    rows = scale[:, :, :m].permute(1, 2, 0).reshape(kb, m * g)  # [K/128, M * G], token-major rows
    out[:, :, :m] = rows.view(kb, g, m).transpose(0, 1)
    return out


@_mutant("scale-token-major", "producer",
         "the scale buffer has the contract's shape and contiguous strides, but the kernel writes it token-major "
         "([G, pad4(M), K/128] order): the strides look right and the values sit transposed",
         "sglang #31490: scale tensors with contiguous-looking strides that were really transposed; a layout check "
         "on shapes and strides passes, only values show it")
def scale_token_major(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                      is_neox=True, *, block_tokens_m=None):
    fp8, scale = kernels.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                            quant_group_size, is_neox, block_tokens_m=block_tokens_m)
    return fp8, _scales_token_major(scale)


@_mutant("scale-groups-flattened", "producer",
         "o [M, G, K] flattened to [M * G, K] rows for quantization, the scales then read back group-major: each "
         "token's scale lands on another (group, token); right only with one group",
         "sglang #29038: DeepSeek-V4's wo_a quantized as [T * G, D] and its scales viewed back per group lowered "
         "accuracy on every benchmark (GPQA, AIME25, SWE-Bench); TEP8 has one group per rank and hides it")
def scale_groups_flattened(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    fp8, scale = kernels.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                            quant_group_size, is_neox, block_tokens_m=block_tokens_m)
    return fp8, _scales_groups_flattened(scale, o.shape[0])


@_mutant("ue8m0-log2-ceil", "producer",
         "UE8M0 scales taken as exp2(ceil(log2(amax / 448))) in fp32: for an absmax a few ulps above 448 * 2**k the "
         "log2 rounds to k, so the scale is one power of two too small and the block's largest codes saturate",
         "sglang #29954: pow(2, ceil(log2(x))) is not bit-exact with DeepGEMM's exponent-bit rounding; random data "
         "(and any bf16 input) almost never lands there",
         expected_impl="torch-reference", recipe="ue8m0")
def ue8m0_log2_ceil(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                    is_neox=True, *, block_tokens_m=None):
    from accval.kernels.reference import inverse_rope_

    fp8, scale = kernels.inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                                quant_group_size, is_neox, recipe="ue8m0")
    m, k = o.shape[0], fp8.shape[2]
    x = inverse_rope_(o.clone(), positions, cos_sin_cache, rope_dim, is_neox).reshape(m, n_groups, k)
    x = x.transpose(0, 1).float().reshape(n_groups, m, k // QUANT_BLOCK, QUANT_BLOCK)
    amax = x.abs().amax(-1).clamp_min(get_recipe("ue8m0").eps)  # [G, M, K/128]
    log2_scale = torch.exp2(torch.ceil(torch.log2(amax / torch.full_like(amax, FP8_E4M3_MAX))))  # the defect
    wrong = torch.isfinite(log2_scale) & (log2_scale != scale[:, :, :m].transpose(1, 2))
    codes = (x / log2_scale[..., None]).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE).reshape(n_groups, m, k)
    fp8 = torch.where(wrong.repeat_interleave(QUANT_BLOCK, dim=2), codes, fp8)
    scale[:, :, :m] = torch.where(wrong, log2_scale, scale[:, :, :m].transpose(1, 2)).transpose(1, 2)
    return fp8, scale


@_mutant("consumer-scale-transposed", "consumer",
         "the consumer reads the activation scales token-major ([G, pad4(M), K/128]) while the producer writes the "
         "contract's [G, K/128, pad4(M)]: right only when K is one 128-block",
         "vLLM #53345 (a scale stride ignored, right only at one token) and flashinfer #2147 (documented column-major, "
         "read row-major): which way a scale buffer runs is easy to get backwards")
def consumer_scale_transposed(a, a_scale, b, b_scale, out=None):
    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, True)
    kb, p = a_scale.shape[1], a_scale.shape[2]
    seen = a_scale.contiguous().view(g, p, kb).transpose(1, 2).contiguous()  # the defect
    _run_triton(a, seen, b, b_scale, out, g, m, n, k)
    return out


@_mutant("fp8-round-toward-zero", "producer",
         "the producer's FP8 conversion truncates (rounds toward zero) instead of rounding to nearest even; declared "
         "not exact, so only the graded rules judge it",
         "a hand-written e4m3 conversion by shifts and masks, or a round-toward-zero cvt: every code within one step of "
         "the nearest, so a one-code tolerance admits it, yet values shrink by ~4% on average")
def fp8_round_toward_zero(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                          quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    fp8, scale = kernels.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                            quant_group_size, is_neox, block_tokens_m=block_tokens_m)
    return _codes_toward_zero(fp8, scale, o, positions, cos_sin_cache, rope_dim, is_neox), scale


def _codes_toward_zero(fp8, scale, o, positions, cos_sin_cache, rope_dim, is_neox):
    """``fp8`` with each code that lies further from zero than the value it quantizes moved one code toward
    zero: round-to-nearest codes made truncated ones."""
    from accval.kernels.reference import inverse_rope_

    g, m, k = fp8.shape
    y = inverse_rope_(o.clone(), positions, cos_sin_cache, rope_dim, is_neox).reshape(m, g, k).transpose(0, 1).float()
    s = scale[:, :, :m].transpose(1, 2).repeat_interleave(QUANT_BLOCK, dim=2)
    t = torch.where(s > 0, y / torch.where(s > 0, s, 1), 0)
    bits = fp8.view(torch.uint8)
    above = (fp8.float().abs() > t.abs()) & ((bits & 0x7F) != 0) & ((bits & 0x7F) != 0x7F)
    return torch.where(above, bits - 1, bits).view(FP8_DTYPE)  # one code toward zero: the defect


fp8_round_toward_zero.accval_exact = False


@_mutant("consumer-output-truncated", "consumer",
         "the consumer converts its fp32 result to bf16 by dropping the low 16 bits (truncation) instead of rounding "
         "to nearest even",
         "a hand-written bf16 store (the top half of the fp32 word): within one bf16 step of every result, inside the "
         "accumulation bound random data meets, yet every output shrinks")
def consumer_output_truncated(a, a_scale, b, b_scale, out=None):
    return _truncating_consumer(a, a_scale, b, b_scale, out, "triton", _platform.execution_mode(a.device))


def _truncating_consumer(a, a_scale, b, b_scale, out, impl: str, mode: str):
    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, True)
    full = fp8_block_bmm_math_ref(a, a_scale, b, b_scale).float()
    out.copy_((full.view(torch.int32) & -65536).view(torch.float32))  # the defect: exact in bf16 after the mask
    provenance.record("consumer", impl, mode, mutant="consumer-output-truncated")
    return out


@_mutant("consumer-bf16-accumulator", "consumer",
         "the consumer sums its k-blocks' scaled products in a bf16 accumulator (kept in the output dtype) instead "
         "of fp32",
         "mixed-sign random data of the suite's sizes: partial sums cancel and the bits dropped stay under the "
         "accumulation bound; products of one sign lose several times the bound")
def consumer_bf16_accumulator(a, a_scale, b, b_scale, out=None):
    return _bf16_accumulating_consumer(a, a_scale, b, b_scale, out, "triton", _platform.execution_mode(a.device))


def _bf16_accumulating_consumer(a, a_scale, b, b_scale, out, impl: str, mode: str):
    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, True)
    x, w = dequantize_activations(a, a_scale), dequantize_weight(b, b_scale)  # float64
    acc = torch.zeros((g, m, n), dtype=torch.bfloat16, device=a.device)
    for j in range(0, k, QUANT_BLOCK):
        block = torch.bmm(x[:, :, j:j + QUANT_BLOCK], w[:, :, j:j + QUANT_BLOCK].transpose(1, 2)).float()
        acc = (acc.float() + block).to(torch.bfloat16)  # the defect: the running sum rounded to bf16 per block
    out.copy_(acc)
    provenance.record("consumer", impl, mode, mutant="consumer-bf16-accumulator")
    return out


# --- the same defects in the torch chain (chain backend "torch": the A/B's arm B on a CPU) ---------------
# Each applies its defect to the mirror reference producer or the emulated consumer, so `accval gsm8k
# --inject ID` shows on a CPU what the defect does to a model. Defects that exist only in a GPU kernel
# (int32-index) or only under graph capture (fake-shape) have no torch variant.

TORCH_CHAIN: dict[str, object] = {}


def _torch_variant(id: str, expected_impl: str):
    def deco(fn):
        if id not in CATALOG:
            raise KeyError(f"torch variant for unknown mutant {id!r}")
        fn.accval_expected_impl = expected_impl
        TORCH_CHAIN[id] = fn
        return fn
    return deco


def _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
    return kernels.inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                          quant_group_size, is_neox)


@_torch_variant("scale-pad-btm", "torch-reference")
def torch_scale_pad_btm(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                        is_neox=True, *, block_tokens_m=None):
    fp8, scale = _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
    m = o.shape[0]
    drifted = torch.zeros((scale.shape[0], scale.shape[1], _btm_padded_rows(m, block_tokens_m)),
                          dtype=scale.dtype, device=scale.device)
    drifted[:, :, :m] = scale[:, :, :m]
    return fp8, drifted


@_torch_variant("fp8-m-padded", "torch-reference")
def torch_fp8_m_padded(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                       is_neox=True, *, block_tokens_m=None):
    fp8, scale = _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
    g, m, k = fp8.shape
    padded = torch.zeros((g, pad4(m), k), dtype=fp8.dtype, device=fp8.device)
    padded[:, :m] = fp8
    return padded[:, :m], scale


@_torch_variant("pad-rows-not-zeroed", "torch-reference")
def torch_pad_rows_not_zeroed(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                              quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    fp8, scale = _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
    scale[:, :, o.shape[0]:] = float("nan")  # stands for uninitialised memory, deterministically
    return fp8, scale


@_torch_variant("rope-sign", "torch-reference")
def torch_rope_sign(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                    is_neox=True, *, block_tokens_m=None):
    return _ref(o, positions, _flip_sin(cos_sin_cache, rope_dim), n_groups, heads_per_group, nope_dim, rope_dim,
                quant_group_size, is_neox)


@_torch_variant("rope-layout", "torch-reference")
def torch_rope_layout(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                      is_neox=True, *, block_tokens_m=None):
    return _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, not is_neox)


@_torch_variant("no-input-rounding", "torch-reference")
def torch_no_input_rounding(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                            quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    from accval.kernels.reference import inverse_rope_, quantize_1x128_permute102

    validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                           is_neox)
    x = inverse_rope_(o.float().clone(), positions, cos_sin_cache, rope_dim, is_neox)  # stays fp32
    out = quantize_1x128_permute102(x.reshape(o.shape[0], n_groups, -1))
    provenance.record("producer", "torch-reference", f"torch-{o.device.type}", mutant="no-input-rounding")
    return out


@_torch_variant("consumer-scale-stride-m", "emulated")
def torch_consumer_scale_stride_m(a, a_scale, b, b_scale, out=None):
    from accval.kernels.fp8_block_bmm import _run_emulated

    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, False)
    _run_emulated(a, a_scale, b, b_scale, out, g, m, n, k, scale_m_align=1)
    return out


@_torch_variant("consumer-out-strides", "emulated")
def torch_consumer_out_strides(a, a_scale, b, b_scale, out=None):
    from accval.kernels.fp8_block_bmm import _run_emulated

    res, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, None, False)
    _run_emulated(a, a_scale, b, b_scale, res, g, m, n, k)
    return _out_as_if_contiguous(res, out)


@_torch_variant("silent-fallback", "torch")
def torch_silent_fallback(a, a_scale, b, b_scale, out=None):
    from accval.kernels.fp8_block_bmm import _run_emulated

    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, False)
    try:
        import accval_fast_backend_that_does_not_exist  # noqa: F401
        _run_torch(a, a_scale, b, b_scale, out, g, m, n, k)
    except Exception:  # the defect
        _run_emulated(a, a_scale, b, b_scale, out, g, m, n, k)
    return out



@_torch_variant("scale-token-major", "torch-reference")
def torch_scale_token_major(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                            quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    fp8, scale = _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
    return fp8, _scales_token_major(scale)


@_torch_variant("scale-groups-flattened", "torch-reference")
def torch_scale_groups_flattened(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                 quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    fp8, scale = _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
    return fp8, _scales_groups_flattened(scale, o.shape[0])


@_torch_variant("consumer-scale-transposed", "emulated")
def torch_consumer_scale_transposed(a, a_scale, b, b_scale, out=None):
    from accval.kernels.fp8_block_bmm import _run_emulated

    out, g, m, n, k = _consumer_out(a, a_scale, b, b_scale, out, False)
    kb, p = a_scale.shape[1], a_scale.shape[2]
    _run_emulated(a, a_scale.contiguous().view(g, p, kb).transpose(1, 2).contiguous(), b, b_scale, out, g, m, n, k)
    return out

TORCH_CHAIN["ue8m0-no-requant"] = ue8m0_no_requant  # already torch: the same function on every backend
TORCH_CHAIN["nonfinite-tile-leak"] = nonfinite_tile_leak
TORCH_CHAIN["ue8m0-log2-ceil"] = ue8m0_log2_ceil


@_torch_variant("fp8-round-toward-zero", "torch-reference")
def torch_fp8_round_toward_zero(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    fp8, scale = _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
    return _codes_toward_zero(fp8, scale, o, positions, cos_sin_cache, rope_dim, is_neox), scale


@_torch_variant("consumer-output-truncated", "emulated")
def torch_consumer_output_truncated(a, a_scale, b, b_scale, out=None):
    return _truncating_consumer(a, a_scale, b, b_scale, out, "emulated", f"torch-{a.device.type}")


@_torch_variant("consumer-bf16-accumulator", "emulated")
def torch_consumer_bf16_accumulator(a, a_scale, b, b_scale, out=None):
    return _bf16_accumulating_consumer(a, a_scale, b, b_scale, out, "emulated", f"torch-{a.device.type}")


@_torch_variant("writes-input", "torch-reference")
def torch_writes_input(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                       is_neox=True, *, block_tokens_m=None):
    from accval.kernels.reference import inverse_rope_

    out = _ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
    inverse_rope_(o, positions, cos_sin_cache, rope_dim, is_neox)  # the defect
    return out


def for_chain(id: str, backend: str):
    """``(role, fn)`` of mutant ``id`` for an FP8 chain running on ``backend`` (see kernels.CHAIN_BACKENDS)."""
    if id not in CATALOG:
        raise ValueError(f"--inject: expected a catalog mutant id, one of {sorted(CATALOG)}; got {id!r}")
    m = CATALOG[id]
    fn = globals()[m.attr]
    if m.role == "consumer" and not set(fn.accval_recipe) & set(FP32_SCALE_RECIPES):
        raise ValueError(f"--inject {id}: this consumer reads {', '.join(fn.accval_recipe)} scales, which arm B's "
                         f"producer does not write; run it as --producer reference:{fn.accval_recipe[0]} --consumer "
                         f"mutant:{id}")
    if backend == "torch":
        if id not in TORCH_CHAIN:
            raise ValueError(f"--inject {id}: this defect exists only in the GPU kernels ({m.defect}); "
                             "run it with --backend triton on a GPU")
        return m.role, TORCH_CHAIN[id]
    return m.role, globals()[m.attr]
