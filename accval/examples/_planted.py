"""The two defects planted into each example producer, so the suite can be seen to catch them.

* ``padded_rows``: the scale buffer padded to ``max(BTM, 4)`` rows, with BTM from the token-block table
  the original pull request shipped (1 below M=1024, 8 from 1024, 16 from 2048, 32 from 4096), while
  every consumer reads with the row stride ``pad4(M)``.
* the stale fake: a fake (meta) implementation that allocates those ``max(BTM, 4)`` rows while the real
  implementation pads to 4 (what TensorRT-LLM's fake still does).
"""

from __future__ import annotations


def seed_btm(m: int) -> int:
    """Tokens per program in the pull request's dispatch table."""
    return 32 if m >= 4096 else 16 if m >= 2048 else 8 if m >= 1024 else 1


def padded_rows(m: int, align: int = 4) -> int:
    """``pad_up(m, max(BTM, align))``: the defective padding (``align`` 4 gives the contract's pad4 when BTM <= 4)."""
    pad = max(seed_btm(m), align)
    return -(-m // pad) * pad
