"""Where kernels run: a CUDA GPU, or Triton's CPU interpreter.

Importing :mod:`kernels` on a machine without a GPU sets ``TRITON_INTERPRET=1`` *before* Triton is
imported, so the same kernels run under the interpreter (CI has no GPU). The interpreter's own
fp32 -> float8/bf16 casts round wrongly; :mod:`accval.kernels.interpreter_casts` replaces them for the whole
process when interpreting (so foreign kernels get the GPU's bits too), and accval's kernels also
receive ``SOFTWARE_ROUNDING=interpreting()`` and round in fp32 themselves (:mod:`accval.kernels.fp8_rounding`).
"""

from __future__ import annotations

import os
import re

import torch


def _decide_interpret() -> None:
    if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_decide_interpret()


def interpreting() -> bool:
    """True when Triton kernels execute in the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: the oldest Triton whose CPU interpreter runs accval's kernels: 3.6's cannot run a loop whose bounds come
#: from ``tl.program_id`` (it reads them as 1-element arrays), which the consumer's loop over its split's
#: k-blocks is, so there every consumer launch failed inside the kernel (55 of the kernel suite's tests on a
#: CPU); 3.7.1 and 3.8.0 run the suite green (292 passed, 42 skipped at f9373f8; one earlier 3.7.1 run failed a
#: test's own kernel once under xdist, which passed alone and in the later run)
INTERPRETER_MIN_TRITON = (3, 7)


class InterpreterVersionError(RuntimeError):
    """The installed Triton's CPU interpreter is older than :data:`INTERPRETER_MIN_TRITON`."""


def check_interpreter_triton(version: str) -> None:
    """Raise :class:`InterpreterVersionError` unless Triton ``version`` can run accval's kernels on a CPU."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or tuple(int(x) for x in found.groups()) < INTERPRETER_MIN_TRITON:
        want = ".".join(map(str, INTERPRETER_MIN_TRITON))
        raise InterpreterVersionError(
            f"accval's kernels on a CPU run in Triton's interpreter, which needs triton>={want}: Triton {version}'s "
            f"cannot run a loop whose bounds come from tl.program_id (the consumer's k loop); install a newer one "
            f"(pip install 'triton>={want}') or run on a GPU")


if interpreting():
    # Any kernel run under the interpreter (foreign ones too) converts fp32 -> float8/bf16 with the
    # GPU's bits; raises on a Triton whose interpreter this cannot patch or that cannot run the kernels.
    # Imports triton, after the environment above is settled.
    import triton

    check_interpreter_triton(triton.__version__)
    from . import interpreter_casts

    interpreter_casts.install()


def execution_mode(device: torch.device) -> str:
    """The mode a Triton launch on tensors of ``device`` runs in, or a clear error."""
    if device.type == "cuda":
        if interpreting():
            raise RuntimeError(
                "TRITON_INTERPRET=1 is set but the tensors are on CUDA; unset TRITON_INTERPRET to run "
                "the compiled kernels on the GPU"
            )
        return "gpu"
    if device.type == "cpu":
        if not interpreting():
            raise RuntimeError(
                "Triton kernels got CPU tensors but the interpreter is off (a GPU is present). Move the "
                "tensors to CUDA, or set TRITON_INTERPRET=1 before importing kernels to run on CPU"
            )
        return "triton-interpreter"
    raise ValueError(f"expected tensors on 'cuda' or 'cpu', got device {device}")


def gpu_launch_options() -> dict:
    """Extra launch options for compiled kernels.

    ``enable_fp_fusion=False`` stops ptxas/LLVM from contracting ``a*b + c*d`` into FMAs, so the
    kernels round exactly like the torch mirror references (which multiply and add separately) and
    like the interpreter. Where a kernel wants one rounding it says so with an explicit ``tl.fma``
    (the consumer's scaling), which this leaves alone and the interpreter rounds once as well.
    """
    return {} if interpreting() else {"enable_fp_fusion": False}
