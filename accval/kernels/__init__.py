"""accval's kernels: the DeepSeek-V4 ``o_a_proj`` FP8 chain, its references and its custom ops.

Importing this package on a machine without a GPU sets ``TRITON_INTERPRET=1`` (before Triton is
imported) so every kernel runs in Triton's CPU interpreter, with exact FP8 rounding
(:mod:`accval.kernels.fp8_rounding`).
"""

from . import (
    _platform,  # noqa: F401  (must run before triton is imported)
    provenance,
)
from .constants import FP8_DTYPE, FP8_E4M3_MAX, QUANT_BLOCK, SCALE_M_ALIGN, WEIGHT_BLOCK, pad4
from .fp8_block_bmm import ConsumerConfig, consumer_config, fp8_block_bmm, launch_consumer
from .inv_rope_fp8_quant import config_for, inv_rope_fp8_quant
from .o_a_proj import CHAIN_BACKENDS, o_a_proj_bf16_fallback, o_a_proj_fp8_chain
from .reference import fp8_block_bmm_math_ref, inv_rope_fp8_quant_ref
from .weights import quantize_weight_fp8

__all__ = [
    "CHAIN_BACKENDS", "ConsumerConfig", "FP8_DTYPE", "FP8_E4M3_MAX", "QUANT_BLOCK", "SCALE_M_ALIGN", "WEIGHT_BLOCK", "pad4",
    "config_for", "consumer_config", "fp8_block_bmm", "launch_consumer", "fp8_block_bmm_math_ref", "inv_rope_fp8_quant", "inv_rope_fp8_quant_ref",
    "o_a_proj_bf16_fallback", "o_a_proj_fp8_chain", "provenance", "quantize_weight_fp8",
]
