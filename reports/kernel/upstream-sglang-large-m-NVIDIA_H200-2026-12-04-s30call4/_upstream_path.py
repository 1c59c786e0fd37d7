"""Puts ./upstream (the upstream excerpts and their shims, beside this file) on sys.path; on a machine
without a GPU, selects Triton's CPU interpreter before Triton is imported (as accval.kernels does)."""
import os
import sys

import torch

UPSTREAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upstream")
if UPSTREAM not in sys.path:
    sys.path.insert(0, UPSTREAM)
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
