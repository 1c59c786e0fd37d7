"""``accval results`` (docs/results.md from reports/), the report picture and ``accval report --label``.

The committed page must equal the command's output on the committed reports, so a report added
without regenerating the page (or a page edited by hand) fails here.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from accval import report, results
from accval.cli import main

REPO = Path(__file__).resolve().parents[3]
REPORTS = REPO / "reports"
PAGE = REPO / "docs" / "results.md"
#: A committed sensitivity run that keeps its scored samples: the scale-pad-btm mutant on the sentinel,
#: 11 questions A right and B wrong, none the other way.
SAMPLED_RUN = REPORTS / "gsm8k" / "cpu-sentinel-sensitivity-limit20" / "dep8-scale-pad-btm"


def _need_repository():
    if not REPORTS.is_dir() and not PAGE.exists():
        pytest.skip(f"accval installed without its repository: no {REPORTS} and no {PAGE}")


def test_committed_results_page_equals_the_command_output(monkeypatch):
    """docs/results.md is exactly what ``accval results`` makes of reports/ (run it and commit the page)."""
    _need_repository()
    monkeypatch.chdir(REPO)  # where ``accval results`` runs: the page names the reports directory as given
    want = results.render(REPORTS, PAGE)
    have = PAGE.read_text()
    if have != want:
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(have.splitlines(), want.splitlines()), 1) if a != b][:1]
        raise AssertionError(f"{PAGE} is out of date: run `accval results` and commit it; first differing line "
                             f"(line, committed, generated): {diff or 'lengths differ'}")


def _one_report_tree(tmp_path: Path, src: Path) -> tuple[Path, dict]:
    """reports/gsm8k/run-x/ under tmp_path, and the report.json of ``src`` to write there."""
    reports = tmp_path / "reports"
    (reports / "gsm8k" / "run-x").mkdir(parents=True)
    rep = json.loads((src / "report.json").read_text())
    return reports, rep


def test_results_rows_are_read_from_the_reports(tmp_path):
    """A number changed in a report.json changes the page; the link points at the run."""
    _need_repository()
    reports, rep = _one_report_tree(tmp_path, SAMPLED_RUN)
    rep["paired"]["strict-match"]["mcnemar_p"] = 0.0123
    rep["elapsed_s"] = 3725.0
    rep["settings"]["prefill_tokens"] = 4096
    (reports / "gsm8k" / "run-x" / "report.json").write_text(json.dumps(rep))
    page = tmp_path / "docs" / "results.md"
    text = results.render(reports, page)
    row = next(line for line in text.splitlines() if line.startswith("| [run-x]"))
    assert "(../reports/gsm8k/run-x)" in row and "| 0.012 |" in row and "| 62 min 05 s |" in row, row
    assert f"| {rep['mode']['name']}, prefill 4096 |" in row, row
    assert "85.00 / 30.00" in row and "-55.00 [-77.37, -32.63]" in row and "REGRESSION: significant, contract" in row, row
    assert "## Benchmarks" not in text and "## Defect catalog" not in text  # nothing of the sort under this reports/
    # ``accval report``'s comparison says the mode and the verdict as the page does, each reason once
    compared = report.compare([rep], ["run-x"]).splitlines()[2]
    assert f"| {rep['mode']['name']}, prefill 4096 |" in compared, compared
    assert compared.endswith("| REGRESSION: significant, contract |"), compared


def test_results_and_the_picture_show_the_paired_interval_clipped(tmp_path):
    """A committed report from before the interval was clipped holds [-1.0106, -0.6894] (20 questions, 17
    A-only): the page reads [-100.00, -68.94] and the picture's interval ends at -100 points."""
    _need_repository()
    reports, rep = _one_report_tree(tmp_path, SAMPLED_RUN)
    rep["paired"]["strict-match"].update(ci95=[-1.0105559419868648, -0.6894440580131351], delta=-0.85)
    (reports / "gsm8k" / "run-x" / "report.json").write_text(json.dumps(rep))
    row = next(line for line in results.render(reports, tmp_path / "results.md").splitlines()
               if line.startswith("| [run-x]"))
    assert "-85.00 [-100.00, -68.94]" in row and "-101" not in row, row
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shown = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        ax = fig.axes[0]
        shown["texts"] = [t.get_text() for t in ax.texts]
        shown["bar"] = [tuple(xy[0] for xy in seg) for seg in ax.containers[0].lines[2][0].get_segments()]
        return real_savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", keep)
        report.plot(rep, tmp_path / "fig.png", run_dir=tmp_path)
    assert any("delta -85.00 pts [-100.00, -68.94]" in t for t in shown["texts"]), shown["texts"]
    assert shown["bar"] == [pytest.approx((-100.0, -68.94440580131351))], shown["bar"]


def test_results_of_a_directory_without_reports_is_one_line_and_exit_2(tmp_path, capsys):
    """``--reports`` at a directory holding no A/B, benchmark or catalog report (/tmp, say) is refused: it
    wrote a page of no results, exit 0, that said it came from ``reports/``. Nothing is written."""
    (tmp_path / "gsm8k" / "run").mkdir(parents=True)  # folders, and files that are no report, are not reports
    (tmp_path / "gsm8k" / "run" / "notes.txt").write_text("x")
    (tmp_path / "bench").mkdir()
    page = tmp_path / "x.md"
    with pytest.raises(ValueError, match=r"--reports: expected a directory holding accval reports \(gsm8k/\*\*/report.json, "
                                         r"bench/\*.json, mutants/\*.json\), got .*, which holds none"):
        results.render(tmp_path, page)
    for extra in ([], ["--check"]):
        assert main(["results", "--reports", str(tmp_path), "--out", str(page), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("accval: error: --reports: expected a directory holding accval reports") \
            and str(tmp_path) in err[0], err
    assert not page.exists()


def test_the_page_names_the_reports_directory_it_read(tmp_path, monkeypatch):
    """The page says which directory it was generated from, as given (it always said `reports/`); an
    absolute path inside the current directory reads as the relative one, so both make one page."""
    entry = {"id": "scale-pad-btm", "role": "producer", "ran": True, "killed": True, "killed_by": "t", "seconds": 1.0}
    (tmp_path / "mine" / "mutants").mkdir(parents=True)
    (tmp_path / "mine" / "mutants" / "m.json").write_text(json.dumps(
        {"schema": 1, "device": "cpu", "date": "d", "mutants": [entry]}))
    monkeypatch.chdir(tmp_path)
    page = Path("docs") / "results.md"
    relative = results.render(Path("mine"), page)
    assert "from the reports under `mine/`;" in relative, relative
    assert results.render(tmp_path / "mine", page) == relative
    elsewhere = tmp_path / "inner"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert f"from the reports under `{(tmp_path / 'mine').as_posix()}/`;" in results.render(tmp_path / "mine", page)
    assert "from the reports under `../mine/`;" in results.render(Path("../mine"), page)


def test_results_refuses_a_benchmark_file_it_cannot_read(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "odd.json").write_text(json.dumps({"device": "x", "rows": []}))
    with pytest.raises(ValueError, match=r"odd\.json: expected an accval bench run, sweep or probe JSON"):
        results.render(tmp_path, tmp_path / "results.md")


@pytest.mark.parametrize("where, content, message", [
    ("bench/b.json", "[1]", "b.json: expected an accval bench, sweep or probe report (a JSON object), got a JSON list"),
    ("bench/b.json", "zz", "b.json: expected an accval bench, sweep or probe report (JSON), got unreadable text"),
    ("bench/b.json", '{"schema": 1, "rows": [], "copy_ceiling_tb_per_s": 1, "device": "x"}',
     "b.json: expected an accval bench run with 'date', got nothing"),
    ("mutants/m.json", '{"mutants": 5}', "m.json: expected an accval mutants report with 'mutants', got int 5"),
    ("mutants/m.json", '{"mutants": [{"id": "x"}], "device": "d", "date": "t"}', "m.json: mutants[0]: expected an object"),
])
def test_junk_under_reports_is_one_line_naming_the_file(tmp_path, capsys, where, content, message):
    """A file under reports/ that accval did not write: exit 2 with one line naming it (it was an
    AttributeError traceback, or an error reading only "device")."""
    from accval.cli import main

    path = tmp_path / "reports" / where
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert main(["results", "--reports", str(tmp_path / "reports"), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0], err
    assert main(["results", "--reports", str(tmp_path / "reports"), "--out", str(tmp_path)]) == 2
    assert "--out: expected a file path for the page, got the directory" in capsys.readouterr().err


def test_cli_results_check_exits_1_when_stale_and_0_when_written(tmp_path, capsys):
    _need_repository()
    reports, rep = _one_report_tree(tmp_path, SAMPLED_RUN)
    (reports / "gsm8k" / "run-x" / "report.json").write_text(json.dumps(rep))
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nedited by hand\n")
    args = ["results", "--reports", str(reports), "--out", str(page)]
    assert main([*args, "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(args) == 0 and main([*args, "--check"]) == 0
    assert main(["results", "--reports", str(tmp_path / "missing"), "--out", str(page)]) == 2


def _samples(run: Path, arm: str) -> list[dict]:
    return report.read_jsonl(report.jsonl_path(run, f"samples-{arm}.jsonl"))


def test_discordant_questions_read_plain_or_gzip_samples(tmp_path):
    """The questions A got right and B wrong (and the reverse) come from the scored samples, compressed or not,
    and agree with the report's McNemar counts."""
    _need_repository()
    rep = report.load(SAMPLED_RUN)
    got = report.discordant(SAMPLED_RUN)
    p = rep["paired"]["strict-match"]
    assert (len(got["a_only"]), len(got["b_only"])) == (p["a_only"], p["b_only"]) == (11, 0), got
    assert got["a_only"][0] == {"doc_id": 0, "gold": "205", "A": "205", "B": "175"}, got["a_only"][0]
    plain = tmp_path / "plain"
    plain.mkdir()
    for arm in ("A", "B"):
        (plain / f"samples-{arm}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in _samples(SAMPLED_RUN, arm)))
    assert report.discordant(plain) == got
    with gzip.open(plain / "samples-A.jsonl.gz", "wt") as f:
        f.write("{}\n")
    with pytest.raises(ValueError, match="both samples-A.jsonl and samples-A.jsonl.gz exist"):
        report.discordant(plain)
    assert report.discordant(tmp_path) is None  # a run directory without samples: counts only


def test_plot_draws_a_report_and_refuses_samples_that_contradict_it(tmp_path):
    """The picture is written for a committed report (its samples beside it); samples whose discordant
    questions differ from the report's counts are an error, not a silently wrong figure."""
    _need_repository()
    rep = report.load(SAMPLED_RUN)
    run = tmp_path / "run"
    shutil.copytree(SAMPLED_RUN, run)
    report.plot(rep, tmp_path / "fig.png", run_dir=run)
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    flipped = _samples(run, "B")
    for s in flipped:
        if s["doc_id"] == 0 and s["filter"] == "strict-match":
            s["exact_match"] = 1.0  # B now right where the report says only A was
    for p in run.glob("samples-B.jsonl*"):
        p.unlink()
    (run / "samples-B.jsonl").write_text("".join(json.dumps(s) + "\n" for s in flipped))
    with pytest.raises(ValueError, match="the scored samples give 10 A-only and 0 B-only questions, the report 11 and 0"):
        report.plot(rep, tmp_path / "fig2.png", run_dir=run)


#: A committed clean run that keeps its scored samples and has no discordant question.
CLEAN_RUN = REPORTS / "gsm8k" / "cpu-sentinel-sensitivity-limit20" / "dep8-clean"


def _drawn(rep: dict, run: Path, tmp_path: Path) -> dict:
    """What :func:`report.plot` puts on its figure: every text, and the delta axes' labels and zero line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    got = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        got["texts"] = [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]
        got["labels"] = [t for t in fig.axes[0].texts]
        got["zero"] = next(line for line in fig.axes[0].lines if list(line.get_xdata()) == [0, 0])
        return real_savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", keep)
        report.plot(rep, tmp_path / "fig.png", run_dir=run)
    return got


def test_the_picture_says_what_report_md_says_of_no_discordant_questions(tmp_path):
    """No discordant question: the paired MDE reads "n/a" as in report.md (it read "MDE ±0.00"), the
    discordant list says "none" (its heading stood alone), and each filter's label sits on a white box
    above the zero line, which ran through its text."""
    _need_repository()
    rep = report.load(CLEAN_RUN)
    assert (rep["paired"]["strict-match"]["a_only"], rep["paired"]["strict-match"]["b_only"]) == (0, 0)
    got = _drawn(rep, CLEAN_RUN, tmp_path)
    text = "\n".join(got["texts"])
    assert "MDE n/a (no discordant questions)" in text and "±0.00" not in text, text
    assert "Discordant questions (strict-match):\n  none: A and B are right on the same questions" in text, text
    for label in got["labels"]:
        assert label.get_bbox_patch() is not None and label.get_bbox_patch().get_facecolor()[:3] == (1, 1, 1), label
        assert label.get_zorder() > got["zero"].get_zorder(), (label.get_text(), label.get_zorder())


def test_the_pictures_labels_and_discordant_lines():
    """Each direction of discordant questions is listed or said to be none; a run without scored samples
    gives the counts; the label gives the MDE as report.md does."""
    p = {"a_only": 2, "b_only": 0}
    listed = {"a_only": [{"doc_id": 3, "gold": "7", "A": "7", "B": "8"}, {"doc_id": 9, "gold": "1", "A": "1", "B": "2"}],
              "b_only": []}
    assert report.discordant_lines(p, listed) == ["Discordant questions (strict-match):",
                                                  "  A right, B wrong: q3 (gold 7, B 8), q9 (gold 1, B 2)",
                                                  "  B right, A wrong: none"]
    assert report.discordant_lines(p, None)[1] == ("  A right, B wrong: 2; B right, A wrong: 0 (ids: the run's "
                                                   "samples-A/B.jsonl)")
    assert report.discordant_lines({"a_only": 0, "b_only": 0}, None)[1:] == [
        "  none: A and B are right on the same questions"]
    _need_repository()
    rep = report.load(SAMPLED_RUN)
    assert report.delta_label(rep, "strict-match") == ("strict-match: A 85.00%  B 30.00%\n"
                                                       "delta -55.00 pts [-77.37, -32.63], McNemar p 0.00098, MDE ±31.98")


def test_compare_labels_each_row_and_the_cli_takes_one_label_per_path(tmp_path, capsys):
    _need_repository()
    a, b = REPORTS / "gsm8k" / "h100-dep8-full", SAMPLED_RUN
    reps = [report.load(a), report.load(b)]
    rows = report.compare(reps, ["old|run", "new"]).splitlines()
    assert rows[0].startswith("| report |") and rows[2].startswith("| old\\|run |") and rows[3].startswith("| new |"), rows
    with pytest.raises(ValueError, match=r"expected one per report \(2\), got 1"):
        report.compare(reps, ["one"])
    assert main(["report", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith(f"| {a} |") and out[3].startswith(f"| {b} |"), out[:4]
    assert main(["report", str(a), str(b), "--label", "nightly-1", "--label", "nightly-2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| nightly-1 |") and out[3].startswith("| nightly-2 |"), out[:4]
    assert main(["report", str(a), str(b), "--label", "only-one"]) == 2
    assert "--label: expected one per report path (2), got 1" in capsys.readouterr().err
