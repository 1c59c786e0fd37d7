"""The two arms of the DeepSeek-V4 attention output projection ``o_a_proj``, end to end.

``[M, H, D]`` attention output -> ``o_lora [M, G, R]``. Both take the same FP8 weight
(``w_fp8 [G, R, hpg*D]`` with 128x128 scales ``w_scale [G, R/128, hpg*D/128]``), as engines do:

* :func:`o_a_proj_bf16_fallback` (arm A): inverse RoPE in the input dtype, then a bf16 batched
  matmul against the dequantized weight.
* :func:`o_a_proj_fp8_chain` (arm B): the fused producer, then the FP8 block-scaled consumer
  writing straight into ``o_lora`` through a transposed view.

Chain backends (:data:`CHAIN_BACKENDS`, producer and consumer): ``"triton"`` (both Triton kernels),
``"triton+scaled_mm"`` (Triton producer, ``torch._scaled_mm`` consumer; CUDA only) and ``"torch"``
(the mirror reference producer, bit-identical to the kernel, and the ``"emulated"`` consumer; any
device, which is how the A/B runs arm B on a CPU at model speed).
"""

from __future__ import annotations

import torch

from . import host, provenance
from .constants import FP8_DTYPE, WEIGHT_BLOCK
from .fp8_block_bmm import fp8_block_bmm
from .inv_rope_fp8_quant import inv_rope_fp8_quant, validate_producer_args
from .reference import dequantize_weight, inv_rope_fp8_quant_ref, inverse_rope_
from .validation import (
    check_bool,
    check_positions_in_range,
    check_same_device,
    check_shape,
    check_tensor,
    contract_problems,
)


def _check_weight(o, w_fp8, w_scale, n_groups, k):
    """The FP8 weight both arms take: ``w_fp8 [G, R, K]`` with ``w_scale [G, R/128, K/128]``, R = o_lora_rank
    a positive multiple of 128 (one weight scale per 128x128 block), on ``o``'s device."""
    check_tensor("w_fp8", w_fp8, dtypes=(FP8_DTYPE,), ndim=3)
    check_tensor("w_scale", w_scale, dtypes=(torch.float32,), ndim=3)
    check_same_device(o=o, w_fp8=w_fp8, w_scale=w_scale)
    if w_fp8.shape[0] != n_groups or w_fp8.shape[2] != k:
        raise ValueError(f"w_fp8: expected [{n_groups}, R, {k}] (groups x o_lora_rank x hpg*D), got {tuple(w_fp8.shape)}")
    r = w_fp8.shape[1]
    if r == 0 or r % WEIGHT_BLOCK:
        raise ValueError(f"w_fp8: expected R (o_lora_rank) a positive multiple of {WEIGHT_BLOCK}, got shape {tuple(w_fp8.shape)}")
    check_shape("w_scale", w_scale, (n_groups, r // WEIGHT_BLOCK, k // WEIGHT_BLOCK))
    return r


_LAYOUTS = host.PlanCache()


def _sizes(o, positions, cos_sin_cache, w_fp8, w_scale, n_groups, heads_per_group, nope_dim, rope_dim,
                 is_neox) -> tuple[int, int, int]:
    """``(M, K, R)`` of a call of either arm whose inputs pass the producer's and the weight's checks (raises
    otherwise). In an eager call, a layout seen before (every tensor's type, shape, strides, dtype and
    device, every other argument with its type: all the checks read) skips them; the positions'
    values, which the producer's checks read on a CPU, are checked there on every call."""
    tensors = host.layout_key(o, positions, cos_sin_cache, w_fp8, w_scale) if host.eager_call() else None
    key = None
    if (tensors is not None and type(is_neox) is bool
            and all(type(v) is int for v in (n_groups, heads_per_group, nope_dim, rope_dim))):
        key = (tensors, n_groups, heads_per_group, nope_dim, rope_dim, is_neox)
        sizes = _LAYOUTS.get(key)
        if sizes is not None:
            if o.device.type == "cpu":
                check_positions_in_range(positions, cos_sin_cache.shape[0])
            return sizes
    p = validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, is_neox=is_neox)
    sizes = (p.m, p.k, _check_weight(o, w_fp8, w_scale, n_groups, p.k))
    if key is not None:
        _LAYOUTS.put(key, sizes)
    return sizes


def o_a_proj_bf16_fallback(o, positions, cos_sin_cache, w_fp8, w_scale, n_groups, heads_per_group, nope_dim,
                           rope_dim, is_neox=True, *, w_bf16=None, fp32_matmul=False):
    """Arm A: inverse RoPE (input dtype) + bf16 bmm with the dequantized FP8 weight -> ``[M, G, R]`` bf16.

    ``w_bf16``: that weight already dequantized (``[G, R, K]`` bf16, as an engine keeps it from load
    time; with ``fp32_matmul`` it may be kept in float32, holding the same bf16 values); None
    dequantizes ``w_fp8`` here, on every call.

    ``fp32_matmul``: the bmm as an fp32 bmm of the same bf16 values, rounded to bf16 once: what a bf16
    GEMM computes (fp32 accumulation, one rounding), up to the fp32 summation order. CPUs without
    bf16 units run it ~10x faster; provenance records the mode ``torch-<device> fp32-matmul``.
    """
    check_bool("fp32_matmul", fp32_matmul)
    m, k, r = _sizes(o, positions, cos_sin_cache, w_fp8, w_scale, n_groups, heads_per_group, nope_dim, rope_dim, is_neox)
    if w_bf16 is None:
        w = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)  # [G, R, K]
    else:
        check_tensor("w_bf16", w_bf16, dtypes=(torch.bfloat16, torch.float32) if fp32_matmul else (torch.bfloat16,),
                     ndim=3)
        check_shape("w_bf16", w_bf16, tuple(w_fp8.shape))
        check_same_device(o=o, w_bf16=w_bf16)
        w = w_bf16
    x = inverse_rope_(o.clone(), positions, cos_sin_cache, rope_dim, is_neox).to(torch.bfloat16)
    out = torch.empty((m, n_groups, r), dtype=torch.bfloat16, device=o.device)
    x = x.reshape(m, n_groups, k).transpose(0, 1)
    if fp32_matmul:
        out.transpose(0, 1).copy_(torch.bmm(x.float(), w.float().transpose(1, 2)))  # copy_ rounds to bf16
    else:
        torch.bmm(x, w.transpose(1, 2), out=out.transpose(0, 1))
    provenance.record("o_a_proj", "bf16-fallback", f"torch-{o.device.type}" + (" fp32-matmul" if fp32_matmul else ""))
    return out


#: chain backend -> (producer, consumer backend of :func:`accval.kernels.fp8_block_bmm`)
CHAIN_BACKENDS = {
    "triton": (inv_rope_fp8_quant, "triton"),
    "triton+scaled_mm": (inv_rope_fp8_quant, "torch"),
    "torch": (inv_rope_fp8_quant_ref, "emulated"),
}


def o_a_proj_fp8_chain(o, positions, cos_sin_cache, w_fp8, w_scale, n_groups, heads_per_group, nope_dim, rope_dim,
                       is_neox=True, *, backend="triton", check_contract=True, producer=None, consumer=None,
                       inspect=None):
    """Arm B: fused inverse RoPE + FP8 quant, then the FP8 block-scaled bmm -> ``[M, G, R]`` bf16.

    ``backend`` picks accval's producer and consumer (:data:`CHAIN_BACKENDS`); ``producer`` and
    ``consumer`` replace either with any implementation of the contract: ``producer(o, positions,
    cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, is_neox=...) -> (fp8 [G, M, K],
    scales [G, *, pad4(M)])`` in the physical layout, ``consumer(a, a_scale, b, b_scale, out)`` writing
    ``out [G, M, R]``. ``check_contract`` (default) raises ValueError when the producer's buffers break
    the contract; False runs the consumer as engines do, trusting the producer's layout.
    ``inspect(fp8, scale)`` is called between the two (the A/B counts contract violations there).
    """
    if not isinstance(backend, str) or backend not in CHAIN_BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(CHAIN_BACKENDS)}, got {backend!r}")
    check_bool("check_contract", check_contract)
    for name, fn in (("producer", producer), ("consumer", consumer), ("inspect", inspect)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name}: expected a callable or None, got {type(fn).__name__}")
    produce, consumer_backend = CHAIN_BACKENDS[backend]
    m, k, r = _sizes(o, positions, cos_sin_cache, w_fp8, w_scale, n_groups, heads_per_group, nope_dim, rope_dim, is_neox)
    fp8, scale = (producer or produce)(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                       is_neox=is_neox)
    if inspect is not None:
        inspect(fp8, scale)
    if check_contract:
        problems = contract_problems(fp8, scale, n_groups, m, k)
        if problems:
            raise ValueError("producer output breaks the buffer contract: " + "; ".join(problems))
    out = torch.empty((m, n_groups, r), dtype=torch.bfloat16, device=o.device)
    if consumer is None:
        fp8_block_bmm(fp8, scale, w_fp8, w_scale, out.transpose(0, 1), backend=consumer_backend,
                      check_contract=check_contract)
    else:
        consumer(fp8, scale, w_fp8, w_scale, out.transpose(0, 1))
    provenance.record("o_a_proj", "fp8-chain", backend if producer is None and consumer is None else "plugged")
    return out
