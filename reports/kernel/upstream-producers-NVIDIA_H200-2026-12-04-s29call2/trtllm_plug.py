"""TensorRT-LLM's fused inverse-RoPE + FP8 quant (triton_fused_inv_rope_fp8_quant.py), plugged into accval.

Thin: maps accval's producer call onto the upstream op ``torch.ops.trtllm.fused_inv_rope_fp8_quant_vllm_port``,
whose schema already is accval's nine-argument contract; the kernel, dispatcher and fake are upstream's.

One registration is added here, not upstream: the upstream op is registered for the CUDA dispatch key only.
When Triton runs in its CPU interpreter (TRITON_INTERPRET=1, no GPU), upstream's own
``_fused_inv_rope_fp8_quant_impl`` is also registered for CPU, so the same kernel runs on CPU tensors.
Without the interpreter the op runs on CUDA only and the declaration says so.
"""
import torch

from _upstream_path import interpreting

from tensorrt_llm._torch.custom_ops import triton_fused_inv_rope_fp8_quant as upstream  # registers the op

OP = torch.ops.trtllm.fused_inv_rope_fp8_quant_vllm_port

if interpreting():
    torch.library.impl("trtllm::fused_inv_rope_fp8_quant_vllm_port", "CPU")(upstream._fused_inv_rope_fp8_quant_impl)


def fused_inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                             quant_group_size=128, is_neox=True):
    return OP(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


fused_inv_rope_fp8_quant.accval_recipe = "fp32-rcp"        # scale = max(amax, 1e-10) * (1/448), fp32
fused_inv_rope_fp8_quant.accval_exact = False              # x / scale with Triton's default (approximate) division
fused_inv_rope_fp8_quant.accval_rope_layouts = ("neox", "gptj")
fused_inv_rope_fp8_quant.accval_head_dims = (128, 256, 512)  # tl.arange(0, head_dim): powers of two only
fused_inv_rope_fp8_quant.accval_rope_dims = (2, 16, 32, 64, 96, 128)  # even, <= 128 (rope inside the last 128-block)
fused_inv_rope_fp8_quant.accval_output = "gmk"
fused_inv_rope_fp8_quant.accval_op = OP
fused_inv_rope_fp8_quant.accval_devices = ("cpu", "cuda") if interpreting() else ("cuda",)


def declared(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
             is_neox=True):
    """The same op, declaring what its kernel assumes of positions (it reads positions_ptr + token)."""
    return OP(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


for _attr in ("accval_recipe", "accval_exact", "accval_rope_layouts", "accval_head_dims", "accval_rope_dims",
              "accval_output", "accval_op", "accval_devices"):
    setattr(declared, _attr, getattr(fused_inv_rope_fp8_quant, _attr))
declared.accval_positions = "contiguous"
