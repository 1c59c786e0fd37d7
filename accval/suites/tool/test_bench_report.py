"""The bench report's arithmetic (pure functions over a result dict; the timings come from a GPU run)."""

from __future__ import annotations

from accval import bench


def _row(impl, shape, m, us, nbytes=12_500_000):
    return {"op": "producer", "impl": impl, "shape": shape, "M": m, "G": 8, "median_us": us, "p20_us": us, "p80_us": us,
            "bytes": nbytes, "flops": 0, "tb_per_s": nbytes / us / 1e6, "tflops": 0.0, "pct_copy_ceiling": 0.0,
            "timing": "cuda-graph", "config": ""}


def _result(rows):
    return {"device": "test card", "date": "2026-11-28", "torch": "t", "triton": "t", "cuda": "c", "clocks": "c",
            "copy_ceiling_tb_per_s": 2.5, "rows": rows}


def test_same_size_copy_is_a_reference_not_a_baseline():
    rows = [_row("accval", "dep8", 64, 12.0), _row("pr-btm1-only", "dep8", 64, 15.0),
            _row(bench.COPY_SAME_BYTES, "dep8", 64, 9.0)]
    result = _result(rows)
    (c,) = bench.same_size_copy(result)
    assert (c["shape"], c["M"], c["copy_us"], c["accval_us"]) == ("dep8", 64, 9.0, 12.0)
    assert c["pct_of_copy"] == 75.0 and c["mbytes"] == 12.5
    # the copy is faster than accval but is no baseline: accval beats the best baseline (15 us) by 1.25x
    (speedup,) = [t for t in bench.targets(result) if t["target"] == "producer speed-up over the best baseline, every M"]
    assert speedup["measured"] == "1.25x" and speedup["met"]
    md = bench.to_markdown(result)
    assert "## The producer against a copy of its own size" in md and "| dep8 | 64 | 12.5 | 12.0 | 9.0 | 75% |" in md


def test_a_result_without_copy_rows_renders_as_before():
    result = _result([_row("accval", "tep8", 64, 7.0)])
    assert bench.same_size_copy(result) == []
    assert "copy of its own size" not in bench.to_markdown(result)
