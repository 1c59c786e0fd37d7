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


def test_producer_resources_are_reported_for_every_launch():
    """``kernel_ir.py --producer`` (run in its own process): registers, spills, shared memory and layout conversions of the straight
    kernel at both layouts and the heads and warps per program the Hopper tables give: 1, 2, 4 heads with
    1 warp, 8 with 2 (the facts SM90_DISPATCH_MEASUREMENT cites), and the upstream-style kernel's, with
    each kernel's PTX instruction count; and tep8 M=64's NEOX launch (the rope slice in the row's tile) with and
    without the rounding and the exact divisions. With one warp more heads per program
    never take fewer registers, and every launch converts a layout at least once (the block scales,
    reduced across threads, are stored in another layout)."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--producer", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])

    def launch_name(lay, h, w):
        return f"{lay} {h} head{'s' if h > 1 else ''} {w} warp{'s' if w > 1 else ''}"

    ours = [launch_name(lay, h, w) for lay in ("neox", "gptj") for h, w in ((1, 1), (2, 1), (4, 1), (8, 2))]
    tile = "neox 1 head 1 warp, rope in the row's tile"
    left_out = [f"{tile}, {what}" for what in ("no rounding", "inexact divisions", "neither")]
    assert sorted(rows) == sorted(ours + [f"{lay} upstream-style 1 warp" for lay in ("neox", "gptj")] + [tile] + left_out)
    assert all(rows[name].get("ptx_instructions", 1) > 0 for name in rows)
    if all("error" in r for r in rows.values()):
        pytest.skip(f"this Triton cannot compile for sm90 here: {next(iter(rows.values()))['error']}")
    for name, r in rows.items():
        assert "error" not in r, (name, r)
        assert r["layout_conversions"] >= 1 and r["shared_bytes"] >= 0, (name, r)
    import triton

    has_cuobjdump = (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists()
    for lay in ("neox", "gptj"):
        regs = [rows[launch_name(lay, h, 1)]["registers"] for h in (1, 2, 4)]
        if has_cuobjdump or None not in regs:  # Triton ships cuobjdump: then every count must be read
            assert None not in regs and regs == sorted(regs) and regs[0] > 0, (lay, regs)
    # what the bit-exact arithmetic costs the tep8 M=64 launch (one program's latency is its time there): each
    # piece the upstream-style kernel leaves out takes instructions out of the program
    sass = {name: rows[name]["sass_instructions"] for name in [tile] + left_out}
    if has_cuobjdump or None not in sass.values():
        assert None not in sass.values(), sass
        assert sass[f"{tile}, neither"] < min(sass[f"{tile}, no rounding"], sass[f"{tile}, inexact divisions"]) < sass[tile], sass


def test_wgmma_kernel_scales_each_block_under_the_next_wgmma_without_serializing():
    """``kernel_ir.py --wgmma`` (its own process): the Gluon consumer as the dispatch launches it (4 blocks
    per unrolled chunk, each block's scaling pinned between waits, each chunk's last product scaled in
    under the next chunk's first wgmma) waits with one wgmma still in flight, has one block's
    multiply-adds (64 per thread) between two waits, in registers without spills, and ptxas has nothing
    to say but its register count: no wgmma serialized (C7512/C7514), no wait injected (C7517: what it
    does when it cannot tell that the deferred product retired). Not pinned, the compiler sinks a chunk's
    multiply-adds past its last wait (all 4 blocks' at once) and runs out of registers (spills, or ptxas'
    note that it serializes the wgmmas: what the module says of it, and proof the check sees such
    notes); 1 block per chunk waits for each product."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--wgmma", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    if all("error" in r for r in rows.values()):
        pytest.skip(f"this Triton cannot compile Gluon for sm90 here: {next(iter(rows.values()))['error']}")
    for name in ("BLOCK_M 128 8 warps 4 buffers 4 per chunk", "BLOCK_M 64 4 warps 4 buffers 4 per chunk",  # WGMMA_TABLE
                 "BLOCK_M 128 8 warps 4 buffers 4 per chunk not deferred"):
        row = rows[name]
        assert "error" not in row, (name, row)
        assert "1" in row["wait_group"] and row["spill_stack_bytes"] == 0, (name, row)
        assert row["max_fma_between_waits"] == 64, (name, row)
        assert row["ptxas"] and all(note.startswith("Used ") for note in row["ptxas"]), (name, row)
    for name in ("BLOCK_M 128 8 warps 4 buffers 4 per chunk persistent", "BLOCK_M 64 4 warps 4 buffers 4 per chunk persistent"):
        row = rows[name]  # compiles, its scaling pinned between waits (it spills about 100 bytes)
        assert "error" not in row and row["max_fma_between_waits"] == 64, (name, row)
    plain, loader = rows["BLOCK_M 128 8 warps 4 buffers 4 per chunk"], rows["BLOCK_M 128 8 warps 4 buffers 4 per chunk loader warp"]
    # the table's 128-row launch with a loader warp: the compute warps get 240 registers (setmaxnreg), the loader
    # 24, no spills, each block pinned between waits; its k loop waits at fewer thread-block barriers (the
    # loads and their barriers are the loader's)
    assert "error" not in loader and loader["spill_stack_bytes"] == 0 and loader["max_fma_between_waits"] == 64, loader
    assert loader["setmaxnreg"] == [24, 240], loader
    if "k_loop_bar_sync" in loader:
        assert loader["k_loop_wgmma"] == plain["k_loop_wgmma"] == 16, (plain, loader)
        assert loader["k_loop_bar_sync"] < plain["k_loop_bar_sync"], (plain, loader)
    assert "error" not in rows["BLOCK_M 64 4 warps 4 buffers 4 per chunk loader warp"]
    sunk = rows["BLOCK_M 128 8 warps 4 buffers 4 per chunk not pinned"]
    assert sunk["max_fma_between_waits"] == 4 * 64, sunk
    assert sunk["spill_stack_bytes"] > 0 or any("Potential Performance Loss" in note for note in sunk["ptxas"]), sunk
    assert rows["BLOCK_M 128 8 warps 4 buffers 2 per chunk not pinned"]["max_fma_between_waits"] == 2 * 64
    assert rows["BLOCK_M 128 8 warps 4 buffers 1 per chunk not deferred"]["wait_group"] == ["0"]
