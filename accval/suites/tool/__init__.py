"""The tooling's tests: CI's CPU suite (``pytest suites``)."""

import pytest

import accval.kernels  # noqa: F401  (without a GPU, importing the kernels turns Triton's interpreter on)
from accval.kernels import _platform

#: In-process tests that run accval's Triton kernels on CPU tensors: they need Triton's CPU interpreter (a machine
#: without a GPU, as CI's). On a GPU box the interpreter is off and suites/kernel runs the same kernels on CUDA.
needs_interpreter = pytest.mark.skipif(
    not _platform.interpreting(),
    reason="runs Triton kernels on CPU tensors, which needs Triton's CPU interpreter (a machine without a GPU, as "
           "CI's); on a GPU box suites/kernel runs them on CUDA")
