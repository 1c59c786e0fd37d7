"""Puts ./upstream (the upstream files and their shims, beside this file) on sys.path."""
import os
import sys

UPSTREAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upstream")
if UPSTREAM not in sys.path:
    sys.path.insert(0, UPSTREAM)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
