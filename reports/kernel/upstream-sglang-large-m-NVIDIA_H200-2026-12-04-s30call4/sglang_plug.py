"""SGLang's way of producing o_a_proj's FP8 input, plugged into accval.

SGLang does not fuse this op. Its DeepSeek-V4 attention (python/sglang/srt/models/deepseek_v4.py) undoes RoPE
in place on the attention output in bf16 (``fused_rope_inplace(o[..., -rope:], ..., inverse=True)``), views it
as ``[T, G, D]`` and quantizes it with its per-token-group FP8 quantization, one 1x128 block at a time. This
module does the inverse RoPE itself in torch, as that step does (fp32 arithmetic on the bf16 slice, the result
stored back in the input dtype), then calls SGLang's Triton per-token-group quantization, copied unmodified
from sgl-project/sglang ``python/sglang/kernels/ops/quantization/fp8_kernel.py`` @ 0499419e
(``_per_token_group_quant_8bit_raw`` and its two Triton kernels; ./upstream, outside the repository).

What the upstream kernels compute for a 128-element block y (fp32 after loading the bf16 input):
  absmax = max(max|y|, eps), eps = 1e-10 (the launcher's default)
  s      = absmax / 448                      (Triton's fp32 division)
  s      = exp2(ceil(log2(|s|)))            only with SCALE_UE8M0
  q      = clamp(y / s, -448, 448) -> e4m3   (column-major kernel)
  q      = clamp(y * (1 / s), -448, 448)     (row-major kernel: a reciprocal, then a multiply)

The variants (all ``accval_exact = False``: Triton's fp32 division is approximate on a GPU, NaN blocks are the
kernel's own affair, and the UE8M0 rule is log2/exp2 rather than the exponent bits):

* ``triton_fp32``: column-major, TMA-aligned fp32 scales (SGLang's DeepGEMM SM90 layout), called once per
  group on that group's contiguous ``[M, K]`` rows with ``output_q = fp8[g]`` and
  ``output_s = scale[g].transpose(0, 1)[:M]``: the kernel writes the contract's buffers directly (its scale
  row stride is pad4(M), exactly the contract's), no copy. Recipe fp32-div with amax floor 1e-10.
* ``triton_ue8m0``: the same call with ``scale_ue8m0=True`` (the kernel rounds the scale up to a power of two
  and quantizes with it); the launcher then calls DeepGEMM's ``transform_sf_into_required_layout``, which on
  SM90 returns the already MN-major TMA-aligned fp32 buffer itself (./upstream/deep_gemm shim). Recipe ue8m0.
* ``triton_ue8m0_rowmajor``: the DeepSeek-V4 model's own layout since sglang PR #26766: ``o.reshape(T*G, D)``
  quantized with row-major fp32 power-of-two scales (``scale_ue8m0=True``, not column-major; on CUDA SGLang
  routes this to its JIT CUDA kernel, off CUDA to this Triton kernel). Outputs are ``[T*G, D]`` / ``[T*G, KB]``
  and are copied into the contract's buffers. Recipe ue8m0.
* ``dsv4_ceil_after_quant``: the model's composition before #26766 (deepseek_v4.py @ 000328a8): quantize
  ``o.reshape(T*G, D)`` with fp32 scales, then ``o_s = deep_gemm.ceil_to_ue8m0(o_s)`` without quantizing
  again. The scales handed on are UE8M0 (powers of two), so it declares ue8m0. SGLang's #28307/#28418 say this
  order is wrong; this variant is here to show what the suite says of it.

Blocks never straddle groups: each quantized row is one token of one group (K = hpg * D, a multiple of 128).
No torch custom op is registered by SGLang for this Triton path: no ``accval_op``.
"""
import torch

import _upstream_path  # noqa: F401  (sys.path, TRITON_INTERPRET on a CPU)

import deep_gemm  # the shim: ceil_to_ue8m0 (DeepGEMM's, verbatim) and transform_sf_into_required_layout (SM90)
from sglang.kernels.ops.quantization import fp8_kernel as upstream

QUANT_GROUP = 128


def _pad4(m: int) -> int:
    return (m + 3) // 4 * 4


def _cos_sin(cos_sin_cache, positions):
    rows = cos_sin_cache[positions.long()]  # a gather: any 1-d view of positions, read through its stride
    if rows.dim() == 2:  # [max_pos, rope_dim]: cos half, then sin half
        half = rows.shape[1] // 2
        return rows[:, :half], rows[:, half:]
    return rows[:, 0], rows[:, 1]  # [max_pos, 2, rope_dim / 2]


def inverse_rope_inplace_(x, positions, cos_sin_cache, rope_dim, is_neox, token_dim):
    """Undo RoPE in place on ``x[..., -rope_dim:]`` (the engine's step): the rotation of the input-dtype slice is
    computed in fp32 (the cache is fp32) and stored back in ``x``'s dtype. ``token_dim`` is x's token axis."""
    cos, sin = _cos_sin(cos_sin_cache, positions)  # [M, rope/2] fp32
    shape = [1] * x.dim()
    shape[token_dim] = cos.shape[0]
    shape[-1] = cos.shape[1]
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    r = x[..., x.shape[-1] - rope_dim:]
    if is_neox:
        half = rope_dim // 2
        x1, x2 = r[..., :half].float(), r[..., half:].float()
        out = torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)
    else:
        x1, x2 = r[..., 0::2].float(), r[..., 1::2].float()
        out = torch.stack([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1).flatten(-2)
    r.copy_(out)  # rounds to x's dtype, in place
    return x


def _rotated_gmk(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox):
    """o [M, G*hpg, D] -> its inverse-RoPE'd copy as a contiguous [G, M, K] buffer in o's dtype (o itself is the
    caller's and is not written). The copy is the one a per-group launch needs anyway: a group's rows are
    not contiguous in [M, G, K]."""
    m, _, d = o.shape
    x = torch.empty((n_groups, m, heads_per_group, d), dtype=o.dtype, device=o.device)
    x.copy_(o.unflatten(1, (n_groups, heads_per_group)).permute(1, 0, 2, 3))
    inverse_rope_inplace_(x, positions, cos_sin_cache, rope_dim, is_neox, token_dim=1)
    return x.view(n_groups, m, heads_per_group * d)


def _rotated_mgk(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox):
    """The model's order: inverse RoPE in place on (a copy of) o, then ``o.view(T, G, -1).reshape(T*G, D)
    .contiguous()``: [M*G, K] rows, token-major."""
    m, _, d = o.shape
    x = o.clone(memory_format=torch.contiguous_format)
    inverse_rope_inplace_(x, positions, cos_sin_cache, rope_dim, is_neox, token_dim=0)
    return x.view(m, n_groups, -1).reshape(m * n_groups, heads_per_group * d).contiguous()


def _per_group_colmajor(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                        is_neox, ue8m0):
    if quant_group_size != QUANT_GROUP:
        raise ValueError(f"quant_group_size: expected {QUANT_GROUP}, got {quant_group_size}")
    m, _, d = o.shape
    k = heads_per_group * d
    kb = k // QUANT_GROUP
    fp8 = torch.empty((n_groups, m, k), dtype=torch.float8_e4m3fn, device=o.device)
    scale = torch.zeros((n_groups, kb, _pad4(m)), dtype=torch.float32, device=o.device)  # padding rows stay 0
    if m == 0:
        return fp8, scale  # SGLang's public entry skips the launch for 0 tokens too
    x = _rotated_gmk(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox)
    for g in range(n_groups):
        out_s = scale[g].transpose(0, 1)[:m]  # [M, KB], strides (1, pad4(M)): column-major, TMA-aligned
        q, s = upstream._per_token_group_quant_8bit_raw(
            x[g], QUANT_GROUP, column_major_scales=True, scale_tma_aligned=True, scale_ue8m0=ue8m0,
            output_q=fp8[g], output_s=out_s)
        if q.data_ptr() != fp8[g].data_ptr() or s.data_ptr() != out_s.data_ptr() or s.stride() != out_s.stride():
            raise RuntimeError("SGLang's launcher did not write into the buffers it was given")
    return fp8, scale


def _to_contract(x_q, x_s, m, n_groups, k):
    """[M*G, K] codes and [M*G, KB] row-major fp32 scales (token-major rows) -> the contract's buffers (copies)."""
    kb = k // QUANT_GROUP
    fp8 = torch.empty((n_groups, m, k), dtype=torch.float8_e4m3fn, device=x_q.device)
    fp8.copy_(x_q.view(m, n_groups, k).permute(1, 0, 2))
    scale = torch.zeros((n_groups, kb, _pad4(m)), dtype=torch.float32, device=x_q.device)
    scale[:, :, :m] = x_s.reshape(m, n_groups, kb).permute(1, 2, 0)
    return fp8, scale


def _model_rowmajor(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                    is_neox, mode):
    if quant_group_size != QUANT_GROUP:
        raise ValueError(f"quant_group_size: expected {QUANT_GROUP}, got {quant_group_size}")
    m, _, d = o.shape
    k = heads_per_group * d
    if m == 0:
        return (torch.empty((n_groups, 0, k), dtype=torch.float8_e4m3fn, device=o.device),
                torch.zeros((n_groups, k // QUANT_GROUP, 0), dtype=torch.float32, device=o.device))
    x = _rotated_mgk(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox)
    if mode == "ue8m0":  # since #26766: the kernel emits power-of-two scales and quantizes with them
        x_q, x_s = upstream._per_token_group_quant_8bit_raw(x, QUANT_GROUP, scale_ue8m0=True)
    else:  # before it (deepseek_v4.py @ 000328a8): fp32 scales, then ceil_to_ue8m0 on the scales alone
        x_q, x_s = upstream._per_token_group_quant_8bit_raw(x, QUANT_GROUP)
        x_s = deep_gemm.ceil_to_ue8m0(x_s)
    return _to_contract(x_q, x_s, m, n_groups, k)


def triton_fp32(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                is_neox=False):
    """Column-major TMA-aligned fp32 scales, amax / 448 with amax floored at 1e-10; per group, in place."""
    return _per_group_colmajor(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                               quant_group_size, is_neox, ue8m0=False)


def triton_ue8m0(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                 is_neox=False):
    """Column-major TMA-aligned power-of-two fp32 scales (SCALE_UE8M0); per group, in place."""
    return _per_group_colmajor(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                               quant_group_size, is_neox, ue8m0=True)


def triton_ue8m0_rowmajor(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                          quant_group_size=128, is_neox=False):
    """The DeepSeek-V4 model's layout: [T*G, D] rows, row-major power-of-two fp32 scales; copied to the contract."""
    return _model_rowmajor(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size, is_neox, "ue8m0")


def dsv4_ceil_after_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                          quant_group_size=128, is_neox=False):
    """deepseek_v4.py @ 000328a8: fp32-scale quantization, then deep_gemm.ceil_to_ue8m0 on the scales alone."""
    return _model_rowmajor(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size, is_neox, "ceil-after")


triton_fp32.accval_recipe = "fp32-div"
triton_fp32.accval_amax_floor = 1e-10          # _per_token_group_quant_8bit_raw's eps
for _fn in (triton_ue8m0, triton_ue8m0_rowmajor, dsv4_ceil_after_quant):
    _fn.accval_recipe = "ue8m0"                # eps 1e-10 is the recipe's own
for _fn in (triton_fp32, triton_ue8m0, triton_ue8m0_rowmajor, dsv4_ceil_after_quant):
    _fn.accval_exact = False
    _fn.accval_rope_layouts = ("neox", "gptj")  # the rotation is torch here; the quantization is layout-blind
    _fn.accval_output = "gmk"
