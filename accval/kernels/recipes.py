"""Activation quantization recipes: how each 1x128 block's scale is chosen and how it is stored.

Every producer of the ``o_a_proj`` chain quantizes block ``b`` of the inverse-RoPE'd row ``y`` as

    s_b = S(max(amax_b, eps)),     q = RNE(clamp(y / s_b, -448, 448))     (q = 0 where s_b == 0)

and engines differ only in the scale rule ``S``, the amax floor ``eps`` and the scale storage:

=================  ============================================  =======  ==========================================
recipe             S(a)                                          eps      storage of the scales
=================  ============================================  =======  ==========================================
``fp32-div``       ``a / 448`` (IEEE division)                   0        fp32 ``[G, K/128, pad4(M)]`` (the legacy
                                                                                  two-step path; accval's kernels)
``fp32-rcp``       ``a * fp32(1/448)`` (one fp32 multiply)       1e-10    fp32, same layout (TensorRT-LLM)
``ue8m0``          ``2**ceil(log2(a / 448))``, exact             1e-10    fp32 holding powers of two (vLLM on SM90,
                                                                                  DeepGEMM's ``ceil_to_ue8m0``)
``ue8m0-packed``   as ``ue8m0``                                  1e-10    int32 ``[G, ceil(K/512), pad4(M)]``: byte
                                                                                  ``j`` (little-endian) of word ``w`` is the
                                                                                  biased exponent of k-block ``4w + j``
                                                                                  (vLLM / DeepGEMM on SM100)
=================  ============================================  =======  ==========================================

The power-of-two rounding is exact: the scale's exponent goes up by one unless the mantissa bits
are zero (the exponent-bit rule DeepGEMM uses; ``exp2(ceil(log2(x)))`` in floating point can differ
near powers of two). An all-zero block gets scale ``S(eps)`` and codes 0; with ``eps == 0`` its scale
is 0. Packed bytes past the last k-block and padding rows are zero. Weight scales are fp32 128x128
blocks for every recipe.

:func:`block_scales` is the one definition of ``S`` used by the mirror references
(:mod:`accval.kernels.reference`), the suite's tolerances and the catalog's recipe mutants.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import torch

from .constants import FP8_E4M3_MAX, QUANT_BLOCK, cdiv

RecipeName = Literal["fp32-div", "fp32-rcp", "ue8m0", "ue8m0-packed"]
RECIPE_NAMES: tuple[str, ...] = get_args(RecipeName)
#: k-blocks per packed int32 word (one byte each).
UE8M0_PER_WORD = 4
#: The biased exponent of a UE8M0 byte: value = 2**(byte - 127).
UE8M0_BIAS = 127


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    #: amax floor: blocks whose absmax is below it are scaled as if it were ``eps``.
    eps: float
    #: scales are powers of two (UE8M0).
    power_of_two: bool
    #: scale = amax * fp32(1/448) instead of amax / 448.
    reciprocal: bool
    #: scales stored as packed UE8M0 bytes in int32 words.
    packed: bool

    @property
    def scale_dtype(self) -> torch.dtype:
        return torch.int32 if self.packed else torch.float32

    def scale_shape(self, n_groups: int, k: int, m_rows: int) -> tuple[int, int, int]:
        """The scale buffer's shape for ``K`` columns and ``m_rows`` (= pad4(M)) rows."""
        kb = k // QUANT_BLOCK
        return (n_groups, cdiv(kb, UE8M0_PER_WORD) if self.packed else kb, m_rows)

    def with_eps(self, eps: float) -> "Recipe":
        return dataclasses.replace(self, eps=float(eps))


RECIPES: dict[str, Recipe] = {
    "fp32-div": Recipe("fp32-div", eps=0.0, power_of_two=False, reciprocal=False, packed=False),
    "fp32-rcp": Recipe("fp32-rcp", eps=1e-10, power_of_two=False, reciprocal=True, packed=False),
    "ue8m0": Recipe("ue8m0", eps=1e-10, power_of_two=True, reciprocal=False, packed=False),
    "ue8m0-packed": Recipe("ue8m0-packed", eps=1e-10, power_of_two=True, reciprocal=False, packed=True),
}


def get_recipe(recipe: "str | Recipe") -> Recipe:
    """A :class:`Recipe` by name (a Recipe passes through); unknown names raise ValueError listing them."""
    if isinstance(recipe, Recipe):
        return recipe
    if not isinstance(recipe, str):
        raise TypeError(f"recipe: expected one of {list(RECIPE_NAMES)} (a str), got {type(recipe).__name__}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {list(RECIPE_NAMES)}, got {recipe!r}")
    return RECIPES[recipe]


def ceil_pow2(x: torch.Tensor) -> torch.Tensor:
    """Exact ``2**ceil(log2(x))`` for positive finite fp32 ``x`` by the exponent bits (0 stays 0;
    NaN and inf pass through). A subnormal ``x`` rounds up to the smallest normal power of two at most."""
    if x.dtype != torch.float32:
        raise TypeError(f"ceil_pow2: expected float32, got {x.dtype}")
    bits = x.view(torch.int32)
    exp = (bits >> 23) & 0xFF
    mant = bits & 0x7FFFFF
    up = (mant != 0) & (exp < 0xFE)
    new_exp = torch.where(exp == 0, torch.ones_like(exp), exp + up.to(torch.int32))  # subnormal -> 2**-126
    pow2 = (new_exp << 23).view(torch.float32)
    return torch.where((x > 0) & torch.isfinite(x), pow2, x)


def block_scales(amax: torch.Tensor, recipe: "str | Recipe") -> torch.Tensor:
    """The recipe's fp32 scale for each block absmax (``amax`` fp32, any shape; NaN stays NaN)."""
    r = get_recipe(recipe)
    a = amax.float()
    if r.eps > 0:
        a = torch.where(a < r.eps, torch.full_like(a, r.eps), a)  # NaN < eps is False: NaN propagates
    if r.reciprocal:
        s = a * torch.full_like(a, 1.0 / FP8_E4M3_MAX)  # fp32(1/448), one fp32 multiply
    else:
        # a tensor divisor keeps this an IEEE division on CUDA (a Python scalar lets torch multiply by
        # the reciprocal, one ulp off for about half of all values)
        s = a / torch.full_like(a, FP8_E4M3_MAX)
    return ceil_pow2(s) if r.power_of_two else s


def pack_ue8m0(scale: torch.Tensor) -> torch.Tensor:
    """fp32 power-of-two scales ``[G, KB, P]`` -> int32 ``[G, ceil(KB/4), P]`` of little-endian exponent bytes.

    A zero scale packs as byte 0 (as a padding row does)."""
    if scale.dtype != torch.float32 or scale.dim() != 3:
        raise TypeError(f"pack_ue8m0: expected a 3-d float32 tensor, got {scale.dtype} {tuple(scale.shape)}")
    g, kb, p = scale.shape
    exp = ((scale.contiguous().view(torch.int32) >> 23) & 0xFF).long()
    words = cdiv(kb, UE8M0_PER_WORD)
    padded = torch.zeros((g, words * UE8M0_PER_WORD, p), dtype=torch.long, device=scale.device)
    padded[:, :kb] = exp
    shifts = (torch.arange(UE8M0_PER_WORD, device=scale.device) * 8).view(1, 1, UE8M0_PER_WORD, 1)
    packed = (padded.view(g, words, UE8M0_PER_WORD, p) << shifts).sum(dim=2)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32).contiguous()


def unpack_ue8m0(packed: torch.Tensor, k_blocks: int) -> torch.Tensor:
    """int32 ``[G, W, P]`` packed exponents -> fp32 scales ``[G, k_blocks, P]`` (byte 0 -> 0.0, 255 -> NaN)."""
    if packed.dtype != torch.int32 or packed.dim() != 3:
        raise TypeError(f"unpack_ue8m0: expected a 3-d int32 tensor, got {packed.dtype} {tuple(packed.shape)}")
    g, w, p = packed.shape
    if w * UE8M0_PER_WORD < k_blocks:
        raise ValueError(f"unpack_ue8m0: {w} words hold {w * UE8M0_PER_WORD} k-blocks, expected >= {k_blocks}")
    shifts = (torch.arange(UE8M0_PER_WORD, device=packed.device) * 8).view(1, 1, UE8M0_PER_WORD, 1)
    exp = ((packed.long().unsqueeze(2) >> shifts) & 0xFF).reshape(g, w * UE8M0_PER_WORD, p)[:, :k_blocks]
    values = (exp.to(torch.int32) << 23).view(torch.float32)  # byte e -> 2**(e - 127); byte 0 -> +0.0
    return torch.where(exp == 0xFF, torch.full_like(values, float("nan")), values)


def scale_values(scale: torch.Tensor, k_blocks: int) -> torch.Tensor:
    """The fp32 value of every scale of a buffer in any recipe's storage: ``[G, k_blocks, P]``."""
    if scale.dtype == torch.int32:
        return unpack_ue8m0(scale, k_blocks)
    if scale.dtype != torch.float32:
        raise TypeError(f"scale: expected float32 (fp32 recipes) or int32 (ue8m0-packed), got {scale.dtype}")
    return scale
