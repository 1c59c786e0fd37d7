"""vLLM's Triton FP8 block-scaled matmul (vllm/model_executor/layers/quantization/kernels/block_scaled_mm/triton.py,
vllm-project/vllm at e39b001), plugged into accval as a consumer.

Thin: maps accval's consumer call ``(a [G, M, K] e4m3, a_scale [G, K/128, pad4(M)] fp32, b [G, N, K] e4m3,
b_scale [G, N/128, K/128] fp32) -> out [G, M, N] bf16`` onto vLLM's 2-d GEMM op, one call per group, as an
engine calls it for a linear layer:

    torch.ops.vllm.w8a8_triton_block_scaled_mm_func(A [M, K], B [N, K], As [M, K/128], Bs [N/128, K/128],
                                                    block_size [128, 128], output_dtype)

* ``A = a[g]`` (contiguous: upstream asserts it), ``B = b[g]``, ``Bs = b_scale[g]``;
* ``As = a_scale[g, :, :M].transpose(0, 1)``: the contract's token-innermost scale rows as the ``[M, K/128]``
  view vLLM's column-major activation scales are, strides ``(1, pad4(M))``; the kernel reads ``As`` through its
  strides (``stride_As_m``, ``stride_As_k``), so no copy, and the padding rows ``M..pad4(M)-1`` are outside it;
* the op allocates ``C [M, N]`` bf16; with ``out`` given it is copied into ``out[g]`` (any strided view).

The kernel, launcher, op and fake are upstream's, registered by upstream's ``direct_register_custom_op`` call
(through the shim in ``upstream/vllm/utils/torch_utils.py``, for the CPU and CUDA keys). Its default launch config
(BLOCK_SIZE_M 64, BLOCK_SIZE_N = BLOCK_SIZE_K = 128) is used: the ``get_w8a8_block_fp8_configs`` shim returns None,
as vLLM does where it has no tuned file for (N, K) on the device. On a CPU the kernel runs in Triton's interpreter
(accval's plugin sets ``TRITON_INTERPRET=1`` before Triton is imported; a standalone script sets it itself).
"""
import torch

from _upstream_path import interpreting

from vllm.model_executor.layers.quantization.kernels.block_scaled_mm import triton as upstream  # registers the op

OP = torch.ops.vllm.w8a8_triton_block_scaled_mm_func
BLOCK_SIZE = [128, 128]


def fp8_block_bmm(a, a_scale, b, b_scale, out=None):
    g, m, _ = a.shape
    if out is None:
        out = torch.empty(g, m, b.shape[1], dtype=torch.bfloat16, device=a.device)
    for i in range(g):
        out[i].copy_(OP(a[i], b[i], a_scale[i, :, :m].transpose(0, 1), b_scale[i], BLOCK_SIZE, torch.bfloat16))
    return out


fp8_block_bmm.accval_recipe = ("fp32-div", "fp32-rcp", "ue8m0")  # reads fp32 scales, whatever chose them
fp8_block_bmm.accval_op = OP                                        # its own schema: checked with what we pass it
# Triton's CPU interpreter runs it on CPU tensors; without it the kernel needs CUDA tensors (given CPU ones, Triton's
# CUDA launcher raises ValueError "Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)": a raise,
# not a fallback; the suite asks a consumer for a device outside its declaration only on a machine without CUDA).
fp8_block_bmm.accval_devices = ("cpu", "cuda") if interpreting() else ("cuda",)
