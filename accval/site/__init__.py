"""The ``o_a_proj`` site of the A/B: where arm A (bf16 fallback) or arm B (FP8 chain) replaces each
DeepSeek-V4 attention layer's output path, under emulated DEP or TEP sharding.

* :mod:`accval.site.arms`: :class:`Arm` (what computes the site), :data:`PATHS`, :class:`SiteStats`
  (what ran there), arm B's call of :func:`accval.kernels.o_a_proj_fp8_chain`;
* :mod:`accval.site.sharding`: :data:`MODES` and the rules mapping batch rows, groups and heads to ranks;
* :mod:`accval.site.exchange`: what real TEP ranks exchange (their partial sums);
* :mod:`accval.site.fp32`: the CPU fp32-matmul mode (:data:`MATMUL`);
* :mod:`accval.site.attention`: the mirror of transformers' attention forward;
* :mod:`accval.site.oa_proj`: :class:`OAProjSite`, which installs all of this into a model.
"""

from .arms import PATHS, Arm, SiteStats
from .attention import QUERY_CHUNK, fp32_matmul_eager_attention
from .fp32 import MATMUL, Fp32Matmuls, fp32_matmul_linear
from .oa_proj import OAProjSite
from .sharding import MODES

__all__ = ["Arm", "OAProjSite", "SiteStats", "MODES", "MATMUL", "PATHS", "fp32_matmul_linear", "Fp32Matmuls",
           "fp32_matmul_eager_attention", "QUERY_CHUNK"]
