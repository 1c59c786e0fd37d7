"""Numeric constants of the FP8 o_a_proj chain, defined once.

Every module (kernels, references, tests, mutants) imports these instead of repeating literals.
"""

from __future__ import annotations

import torch

#: The FP8 format of activations and weights (OCP e4m3, "fn": finite, no infinities).
FP8_DTYPE = torch.float8_e4m3fn
#: Largest finite e4m3fn value; quantized values are clamped to +-FP8_E4M3_MAX.
FP8_E4M3_MAX = 448.0

#: Activation quantization block: 1 x QUANT_BLOCK elements along K share one fp32 scale.
QUANT_BLOCK = 128
#: Weight quantization block: WEIGHT_BLOCK x WEIGHT_BLOCK elements share one fp32 scale.
WEIGHT_BLOCK = 128
#: The scale buffer's token dimension is padded to a multiple of this (the consumer's rule).
SCALE_M_ALIGN = 4

#: Head dims the producer accepts (multiples of QUANT_BLOCK, so a quant block never spans heads).
SUPPORTED_HEAD_DIMS = (128, 256, 384, 512)


def pad4(m: int) -> int:
    """The padded token count of the scale buffer: ceil(m / 4) * 4 (the consumer's m-stride)."""
    return (m + SCALE_M_ALIGN - 1) // SCALE_M_ALIGN * SCALE_M_ALIGN


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
