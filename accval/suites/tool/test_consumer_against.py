"""scripts/consumer_against.py: usage errors exit 2 before any GPU work; ``--compare`` reads what
``--out`` writes and divides each label's median by the first label's and by ``_scaled_mm``'s."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if not (ROOT / "scripts" / "consumer_against.py").exists():
    pytest.skip("scripts/ is in the repository, not in an installed accval", allow_module_level=True)
sys.path.insert(0, str(ROOT))

from scripts import consumer_against  # noqa: E402


@pytest.mark.parametrize("argv,says", [
    (["--kernels-root", "/nonexistent"], "--kernels-root: expected a checkout holding accval/kernels/__init__.py"),
    (["--ms", "64,x"], "--ms: expected comma-separated integers, got '64,x'"),
    (["--compare", "/nonexistent.json"], "--compare: expected files written by --out"),
])
def test_usage_errors_exit_2(argv, says, capsys):
    assert consumer_against.main(argv) == 2
    assert says in capsys.readouterr().err


def _run(path: Path, label: str, accval_us: dict, scaled_mm_us: float) -> Path:
    rows = [r for m, us in accval_us.items() for r in (
        {"label": label, "shape": "dep8", "M": m, "impl": "accval", "median_us": us},
        {"label": label, "shape": "dep8", "M": m, "impl": "scaled_mm", "median_us": scaled_mm_us})]
    path.write_text(json.dumps({"facts": {}, "rows": rows}))
    return path


def test_compare_gives_each_labels_median_and_ratios(tmp_path, capsys):
    files = [_run(tmp_path / "a1.json", "before", {2048: 100.0}, 90.0), _run(tmp_path / "b1.json", "after", {2048: 80.0}, 90.0),
             _run(tmp_path / "a2.json", "before", {2048: 104.0}, 90.0), _run(tmp_path / "b2.json", "after", {2048: 84.0}, 90.0)]
    assert consumer_against.main(["--compare", *map(str, files)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| shape | M | before us (runs) |") and table[0].endswith("after / before |")
    assert table[2] == "| dep8 | 2048 | 102.0 (100.0/104.0) | 0.88x | 82.0 (80.0/84.0) | 1.10x | 0.804 |"


def test_compare_marks_what_a_label_did_not_measure(tmp_path, capsys):
    """Runs of different M: a label's missing cell is '-', not an error; one label has no ratio column."""
    files = [_run(tmp_path / "a.json", "before", {2048: 100.0, 4096: 200.0}, 90.0), _run(tmp_path / "b.json", "after", {2048: 80.0}, 90.0)]
    assert consumer_against.main(["--compare", *map(str, files)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[3] == "| dep8 | 4096 | 200.0 (200.0) | 0.45x | - | - | - |"
    assert consumer_against.main(["--compare", str(files[0])]) == 0
    one = capsys.readouterr().out.splitlines()
    assert one[0] == "| shape | M | before us (runs) | before / _scaled_mm |" and one[1] == "|---|---|---|---|"
    assert one[2] == "| dep8 | 2048 | 100.0 (100.0) | 0.90x |"
