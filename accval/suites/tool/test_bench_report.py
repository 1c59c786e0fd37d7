"""The bench report's arithmetic (pure functions over a result dict; the timings come from a GPU run)."""

from __future__ import annotations

from accval.bench import render, targets

from . import needs_interpreter


def _row(impl, shape, m, us, nbytes=12_500_000, layout="neox", as_called=None, op="producer", bare=None):
    return {"op": op, "impl": impl, "shape": shape, "M": m, "G": 8, "median_us": us, "p20_us": us, "p80_us": us,
            "bytes": nbytes, "flops": 0, "tb_per_s": nbytes / us / 1e6, "tflops": 0.0, "pct_copy_ceiling": 0.0,
            "timing": "cuda-graph", "config": "", "layout": layout, "as_called_us": as_called, "bare_as_called_us": bare}


def _result(rows):
    return {"device": "test card", "date": "2026-11-28", "torch": "t", "triton": "t", "cuda": "c", "clocks": "c",
            "copy_ceiling_tb_per_s": 2.5, "rows": rows}


def _target(result, prefix):
    (t,) = [t for t in targets.evaluate(result) if t["target"].startswith(prefix)]
    return t


def test_same_size_copy_is_a_reference_not_a_baseline():
    rows = [_row("accval", "dep8", 64, 12.0), _row(targets.UPSTREAM_STYLE, "dep8", 64, 15.0),
            _row(targets.COPY_SAME_BYTES, "dep8", 64, 9.0)]
    result = _result(rows)
    (c,) = targets.same_size_copy(result)
    assert (c["shape"], c["layout"], c["M"], c["copy_us"], c["accval_us"]) == ("dep8", "neox", 64, 9.0, 12.0)
    assert c["pct_of_copy"] == 75.0 and c["mbytes"] == 12.5
    # the copy is faster than accval but is no baseline: accval beats the upstream-style kernel by 1.25x
    speedup = _target(result, "producer speed-up over the upstream-style kernel")
    assert speedup["measured"] == "1.25x" and speedup["met"] and speedup["where"] == "dep8 neox M=64"
    md = render.to_markdown(result)
    assert "## The producer against a copy of its own size" in md and "| dep8 | neox | 64 | 12.5 | 12.0 | 9.0 | 75% |" in md
    assert md.index("## Targets") < md.index("Device copy ceiling"), "the Markdown opens with the targets"


def test_layout_ratio_and_host_path_targets_report_the_worst_case_and_where():
    rows = [_row("accval", "dep8", 64, 10.0, as_called=30.0), _row("accval", "dep8", 64, 10.2, layout="gptj", as_called=22.0),
            _row("accval", "tep8", 8192, 100.0, as_called=101.0), _row("accval", "tep8", 8192, 104.0, layout="gptj"),
            _row(targets.COPY_SAME_BYTES, "tep8", 8192, 80.0), _row(targets.COPY_SAME_BYTES, "tep8", 8192, 80.0, layout="gptj"),
            _row("accval-triton", "dep8", 64, 20.0, layout="", as_called=31.0, op="consumer")]
    result = _result(rows)
    ratio = _target(result, "producer GPT-J time / NEOX time")
    assert (ratio["measured"], ratio["where"], ratio["met"]) == ("1.040", "tep8 M=8192", False)
    host = _target(result, "producer host path")
    assert (host["measured"], host["where"], host["met"]) == ("20.0", "dep8 neox M=64", False)
    consumer_host = _target(result, "consumer host path")
    assert (consumer_host["measured"], consumer_host["met"]) == ("11.0", True)
    copy = _target(result, "producer % of a same-bytes copy")
    assert (copy["measured"], copy["where"], copy["met"]) == ("77%", "tep8 gptj M=8192", True)
    md = render.to_markdown(result)
    assert "| tep8 M=8192 | **no** |" in md and "| 30.0 |" in md


def test_host_path_target_names_the_bare_launch_of_its_worst_shape():
    """Next to the host path's worst case the report says what launching the same kernels bare cost at
    that shape (the part of the host path no Python caller avoids); an older report's rows have nothing to show there."""
    rows = [_row("accval", "dep8", 64, 10.0, as_called=30.0, bare=17.0), _row("accval", "tep8", 64, 6.0, as_called=40.0, bare=19.5)]
    host = _target(_result(rows), "producer host path")
    assert (host["measured"], host["where"], host["reference"]) == ("34.0", "tep8 neox M=64", "same, its kernels launched bare: 13.5")
    assert "| 34.0 | tep8 neox M=64 | **no** | same, its kernels launched bare: 13.5 |" in render.to_markdown(_result(rows))
    rows[1]["bare_outputs_as_called_us"] = 24.0
    assert _target(_result(rows), "producer host path")["reference"] == (
        "same, its kernels launched bare: 13.5; bare after allocating its outputs: 18.0")
    for r in rows:
        del r["bare_as_called_us"]
    assert _target(_result(rows), "producer host path")["reference"] == "bare after allocating its outputs: 18.0"
    for r in rows:
        r.pop("bare_outputs_as_called_us", None)
    assert _target(_result(rows), "producer host path")["reference"] == ""


def test_a_host_path_missed_by_less_than_timing_it_twice_is_within_noise():
    """The host path's "as called" is timed twice (``as_called_again_us``): missed by less than the two
    timings' difference, the target is within noise; by more, or where it was timed once, it is missed."""
    rows = [_row("accval", "dep8", 64, 10.0, as_called=20.0), _row("accval", "tep8", 64, 6.0, as_called=38.0)]
    host = _target(_result(rows), "producer host path")
    assert (host["measured"], host["where"], targets.verdict(host)) == ("32.0", "tep8 neox M=64", "**no**")
    rows[1]["as_called_again_us"] = 20.5  # 17.0 us over; the two timings 17.5 apart
    host = _target(_result(rows), "producer host path")
    assert (host["met"], targets.verdict(host)) == (False, "within noise")
    assert host["noise"] == "tep8 neox M=64: 17.00 us over, timing a row twice differed by 17.50"
    assert "| 32.0 | tep8 neox M=64 | within noise |" in render.to_markdown(_result(rows))
    rows[1]["as_called_again_us"] = 37.0  # the same miss, timed again: a measured one
    assert targets.verdict(_target(_result(rows), "producer host path")) == "**no**"
    rows[0].update(as_called_us=26.0, as_called_again_us=25.0)  # dep8 over by 1.0 with timings 1.0 apart: not below it
    rows[1].update(as_called_us=20.0, as_called_again_us=20.5)
    host = _target(_result(rows), "producer host path")
    assert (host["where"], targets.verdict(host)) == ("dep8 neox M=64", "**no**")


def test_upstream_style_target_names_both_spreads_at_its_worst_shape():
    """Next to the producer's worst ratio to the upstream-style kernel the report gives both rows' p20-p80,
    and whether they overlap: a ratio below 1 inside the timings' own spread is told from one outside it.
    The target is judged on the medians all the same."""
    rows = [_row("accval", "tep8", 64, 7.0), _row(targets.UPSTREAM_STYLE, "tep8", 64, 6.8),
            _row("accval", "dep8", 2048, 110.0), _row(targets.UPSTREAM_STYLE, "dep8", 2048, 130.0)]
    rows[0].update(p20_us=6.8, p80_us=7.3)
    rows[1].update(p20_us=6.6, p80_us=7.0)
    t = _target(_result(rows), "producer speed-up over the upstream-style kernel")
    assert (t["measured"], t["where"], t["met"]) == ("0.97x", "tep8 neox M=64", False)
    assert t["reference"] == "p20-p80 us: accval 6.80-7.30, upstream-style 6.60-7.00 (overlapping)"
    rows[0].update(p20_us=7.05, p80_us=7.3)
    assert _target(_result(rows), "producer speed-up")["reference"].endswith("accval 7.05-7.30, upstream-style 6.60-7.00 (not overlapping)")
    for r in rows:
        del r["p20_us"]
    assert _target(_result(rows), "producer speed-up")["reference"] == ""


def test_a_comparison_missed_by_less_than_timing_a_row_twice_is_within_noise():
    """The producer's comparisons (against the upstream-style kernel, GPT-J against NEOX) between rows each
    timed twice: missed by less than the larger difference between one row's two timings, the target is
    "within noise", not met and not missed; missed by more anywhere, it is missed. Rows timed once (older
    reports) are judged on the medians alone."""
    rows = [_row("accval", "tep8", 64, 7.0), _row(targets.UPSTREAM_STYLE, "tep8", 64, 6.8),
            _row("accval", "dep8", 64, 10.0), _row(targets.UPSTREAM_STYLE, "dep8", 64, 10.5)]
    t = _target(_result(rows), "producer speed-up over the upstream-style kernel")
    assert (t["met"], "within_noise" in t, targets.verdict(t)) == (False, False, "**no**")  # timed once: no rule
    for r, again in zip(rows, (6.7, 7.0, 10.1, 10.4)):
        r["again_us"] = again
    t = _target(_result(rows), "producer speed-up over the upstream-style kernel")
    assert (t["measured"], t["where"], t["met"], t["within_noise"]) == ("0.97x", "tep8 neox M=64", False, True)
    assert t["noise"] == "tep8 neox M=64: 0.20 us over, timing a row twice differed by 0.30"
    md = render.to_markdown(_result(rows))
    assert "| 0.97x | tep8 neox M=64 | within noise |" in md and "differed by 0.30 |" in md
    rows[0]["again_us"], rows[1]["again_us"] = 7.1, 6.9  # each row's two timings 0.1 apart: 0.2 over is not noise
    t = _target(_result(rows), "producer speed-up over the upstream-style kernel")
    assert (t["within_noise"], targets.verdict(t)) == (False, "**no**")
    rows[0]["again_us"], rows[1]["again_us"] = 6.7, 7.0  # within noise at tep8 again; dep8 missed by 1.0 us
    rows[2].update(median_us=11.5, again_us=11.6)
    t = _target(_result(rows), "producer speed-up over the upstream-style kernel")
    assert (t["where"], t["within_noise"]) == ("dep8 neox M=64", False)
    assert t["noise"] == ("dep8 neox M=64: 1.00 us over, timing a row twice differed by 0.10; "
                          "tep8 neox M=64: 0.20 us over, timing a row twice differed by 0.30")
    # GPT-J against NEOX: at most 1.03x; 10.5 against 10.0 is 0.2 us over 1.03x, the rows' timings 0.3 apart
    lay = [_row("accval", "tep8", 64, 10.0), _row("accval", "tep8", 64, 10.5, layout="gptj")]
    lay[0]["again_us"], lay[1]["again_us"] = 10.3, 10.45
    t = _target(_result(lay), "producer GPT-J time / NEOX time")
    assert (t["measured"], t["met"], t["within_noise"]) == ("1.050", False, True)
    assert t["noise"] == "tep8 M=64: 0.20 us over, timing a row twice differed by 0.30"
    assert "within noise" in render.to_markdown(_result(lay))


def test_small_m_consumer_target_names_what_a_copy_of_its_bytes_takes():
    """Next to the consumer's worst case against 2x torch._scaled_mm at small M the report says what a
    plain copy of the consumer's bytes took there and what time the target asks for: the bandwidth
    floor the kernel cannot go under. The copy row is no producer copy."""
    rows = [_row("accval-triton", "tep8", 64, 14.8, layout="", op="consumer"),
            _row("torch-scaled-mm", "tep8", 64, 20.1, layout="", op="consumer"),
            _row(targets.COPY_SAME_BYTES, "tep8", 64, 8.3, layout="", op="consumer"),
            _row("accval-triton", "dep8", 256, 56.2, layout="", op="consumer"),
            _row("torch-scaled-mm", "dep8", 256, 218.3, layout="", op="consumer")]
    t = _target(_result(rows), "consumer vs torch._scaled_mm blockwise, M <= 256")
    assert (t["measured"], t["where"], t["met"]) == ("1.36x", "tep8 M=64", False)
    assert t["reference"] == "a copy of its bytes: 8.3 us; 2x torch._scaled_mm asks for <= 10.1 us"
    assert targets.same_size_copy(_result(rows)) == []
    assert _target(_result(rows[3:]), "consumer vs torch._scaled_mm blockwise, M <= 256")["reference"] == ""
    # with the kernel that only reads the consumer's input bytes, its time leads (the tighter floor)
    rows.append(_row(targets.READ_ONCE_INPUTS, "tep8", 64, 9.3, layout="", op="consumer"))
    assert _target(_result(rows), "consumer vs torch._scaled_mm blockwise, M <= 256")["reference"] == (
        "reading its input bytes once (no math, no output): 9.3 us; a copy of its bytes: 8.3 us; "
        "2x torch._scaled_mm asks for <= 10.1 us")


def test_rows_without_a_layout_are_neox():
    """Reports written before layouts were measured have producer rows without one: NEOX."""
    old = _row("accval", "tep8", 64, 7.0)
    del old["layout"], old["as_called_us"]
    result = _result([old])
    assert targets.same_size_copy(result) == []
    md = render.to_markdown(result)
    assert "copy of its own size" not in md and "| tep8 G=8 | neox | 64 | accval | 7.0 |" in md


def test_sweep_summary_names_the_one_head_baseline_old_and_new():
    """``accval bench --sweep``'s summary puts the one-head, one-warp producer launch beside the best
    three, whether the row names it as LaunchConfig does now or as it did before min_programs."""
    from accval.bench import sweep
    from accval.kernels.inv_rope_fp8_quant import LaunchConfig

    old = "LaunchConfig(block_tokens_m=1, num_warps=1, num_stages=1, tokens_per_iter=1, heads_per_program=1)"
    for base in (str(LaunchConfig(1, 1, 1)), old):
        rows = [{"op": "producer", "shape": "dep8", "M": 64, "layout": "neox", "config": base, "median_us": 12.0},
                {"op": "producer", "shape": "dep8", "M": 64, "layout": "neox",
                 "config": str(LaunchConfig(1, 1, 1, heads_per_program=2)), "median_us": 10.0}]
        assert sweep.summary({"rows": rows}).endswith("(HB1 w1: 12.0us)"), base


@needs_interpreter
def test_consumer_row_names_what_ran():
    """A consumer row's ``config`` is the call's own provenance record (a launch the table asks for but
    the call could not run would otherwise be reported as the one that ran)."""
    import torch

    import accval.kernels as kernels
    from accval.bench.rows import _what_ran
    from accval.kernels import provenance

    a = torch.zeros(1, 4, 128).to(kernels.FP8_DTYPE)
    b = torch.zeros(1, 128, 128).to(kernels.FP8_DTYPE)
    with provenance.capture() as ran:
        kernels.fp8_block_bmm(a, torch.ones(1, 1, 4), b, torch.ones(1, 1, 1))
    text = _what_ran(ran)
    assert text.startswith(f"{ran[-1].impl}: ") and f"kernel={ran[-1].detail('kernel')}" in text, text
    assert "loads=" in text and "block_m=" in text, text
    assert _what_ran([]) == "no provenance recorded"


def test_a_bench_stopped_part_way_keeps_the_rows_it_measured(tmp_path, monkeypatch, capsys):
    """SIGTERM or a failure in the third of four row groups: the two groups measured are written, marked
    incomplete in the JSON and the Markdown, and the stop still propagates."""
    import json

    import pytest

    from accval.bench import rows

    calls = []

    def fake_producer_rows(m, g, ceiling, shape, layout="neox", **kwargs):
        calls.append(m)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return [rows.Row("producer", "accval", shape, m, g, 10.0, 9.0, 11.0, 1000, 0, 0.1, 0.0, 4.0, layout=layout)]

    monkeypatch.setattr(rows.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(rows.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(rows, "warm_up_clocks", lambda: None)
    monkeypatch.setattr(rows, "environment", lambda: {"device": "test card", "date": "2026-12-04", "torch": "t",
                                                      "triton": "t", "cuda": "c", "clocks": "c"})
    monkeypatch.setattr(rows, "copy_bandwidths", lambda reps_ms: {64: 2.5})
    monkeypatch.setattr(rows, "producer_rows", fake_producer_rows)
    with pytest.raises(KeyboardInterrupt):
        rows.run(ops=("producer",), ms=(64, 256, 1024, 2048), shapes=("dep8",), layouts=("neox",), out_dir=tmp_path,
                 progress=False)
    (saved,) = tmp_path.glob("*.json")
    data = json.loads(saved.read_text())
    assert data["complete"] is False and [r["M"] for r in data["rows"]] == [64, 256], data["rows"]
    assert "**Incomplete:** the run stopped after 2 rows" in saved.with_suffix(".md").read_text()
    assert f"stopped after 2 of 4 (op, shape, M, layout) groups; the 2 rows measured are saved in {saved}" in \
        capsys.readouterr().err
