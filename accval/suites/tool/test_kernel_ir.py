"""What Triton makes of the consumer's k loop, compiled for sm90 on this machine (``scripts/kernel_ir.py``,
run in its own process: it compiles instead of interpreting). The H200 speed-up of ``prefetch_scales``
rests on it: a prefetched launch keeps the tile pipelining and uses no scale in the iteration that loads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "kernel_ir.py"


@pytest.fixture(scope="module")
def facts() -> dict:
    if not SCRIPT.exists():
        pytest.skip("scripts/kernel_ir.py is in the repository, not in an installed accval")
    run = subprocess.run([sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    if all("error" in r for r in rows.values()):
        pytest.skip(f"this Triton cannot compile for sm90 here: {next(iter(rows.values()))['error']}")
    return rows


@pytest.mark.parametrize("variant", ["pointer", "pointer split 16", "tma"])
def test_prefetched_scales_are_used_one_iteration_later(facts, variant):
    plain, ahead = facts[variant], facts[f"{variant} prefetch"]
    for row in (plain, ahead):
        if "error" in row:
            pytest.fail(f"{variant}: {row['error']}")
    assert plain["loads_in_loop"] == ahead["loads_in_loop"] == 2, (plain, ahead)  # a_s and b_s, each block
    assert plain["used_same_iteration"] == 2, plain  # what the prefetch removes
    assert ahead["used_same_iteration"] == 0, ahead
    copies = "tma_copy" if variant == "tma" else "async_copy"
    assert ahead[copies] == plain[copies] > 0, (plain, ahead)  # the tile loads stay pipelined
