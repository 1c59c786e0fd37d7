"""vLLM's fused inverse-RoPE + FP8 quant (vllm/models/deepseek_v4/common/ops/fused_inv_rope_fp8_quant.py),
plugged into accval.

Thin: maps accval's producer call onto upstream ``fused_inv_rope_fp8_quant``. The mapping:
  * ``is_neox=True`` raises NotImplementedError (upstream is GPT-J only, and declared so);
  * a ``[max_pos, 2, rope_dim/2]`` cos/sin cache is passed as its ``[max_pos, rope_dim]`` view (same memory;
    upstream asserts ``cos_sin_cache.shape[-1] == rope_dim``);
  * ``tma_aligned_scales`` picks the SM90 (fp32, ``ue8m0``) or SM100 (packed int32, ``ue8m0-packed``) output.
Upstream returns ``[M, G, K]`` / ``[M, G, K/128]`` views over ``[G, M, K]`` / ``[G, KB, pad4(M)]`` storage.
The torch op behind it, ``torch.ops.vllm.fused_inv_rope_fp8_quant_kernel``, is registered by upstream (through
the direct_register_custom_op shim) for the platform's dispatch key (CPU here, CUDA on a GPU).
"""
import torch

import _upstream_path  # noqa: F401

from vllm.models.deepseek_v4.common.ops import fused_inv_rope_fp8_quant as upstream  # registers the op

OP = torch.ops.vllm.fused_inv_rope_fp8_quant_kernel


def _call(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox,
          packed):
    if is_neox:
        raise NotImplementedError("vLLM's fused_inv_rope_fp8_quant is GPT-J (interleaved) only")
    if cos_sin_cache.dim() == 3:
        cos_sin_cache = cos_sin_cache.view(cos_sin_cache.shape[0], -1)
    return upstream.fused_inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                             quant_group_size, tma_aligned_scales=packed)


def fused_inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                             quant_group_size=128, is_neox=False):
    """SM90 output: fp32 power-of-two scales."""
    return _call(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                 is_neox, False)


def fused_inv_rope_fp8_quant_packed(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                    quant_group_size=128, is_neox=False):
    """SM100 output: UE8M0 exponents packed four per int32 word."""
    return _call(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                 is_neox, True)


def _declare(fn, recipe, head_dims):
    fn.accval_recipe = recipe
    fn.accval_exact = False                  # exp2(ceil(log2(amax * (1/448)))), approximate division
    fn.accval_rope_layouts = ("gptj",)
    fn.accval_head_dims = head_dims
    fn.accval_rope_dims = (2, 16, 32, 64, 96, 128)
    fn.accval_output = "mgk-view"
    fn.accval_op = OP
    return fn


_declare(fused_inv_rope_fp8_quant, "ue8m0", (128, 256, 512))   # tl.arange(0, head_dim): powers of two only
# The packed path writes one int32 word per head (its CHUNKS_PER_HEAD exponents in bytes 0..): that is the
# contract's "byte j of word w = k-block 4w+j" only when a head is four 128-blocks, head_dim 512 (DSv4's).
_declare(fused_inv_rope_fp8_quant_packed, "ue8m0-packed", (512,))


def declared(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
             is_neox=False):
    """The SM90 path, declaring what its kernel assumes of positions (it reads positions_ptr + token)."""
    return fused_inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                    quant_group_size, is_neox)


_declare(declared, "ue8m0", (128, 256, 512))
declared.accval_positions = "contiguous"
