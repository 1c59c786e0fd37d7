"""The speed probe's kernel variants still apply to the kernel files: each is a text substitution
(scripts/kernel_variants.py) that raises once the code it edits has changed, and the probe runs only
on a GPU, so a stale one would first show there, with the device time already spent."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if not (ROOT / "scripts" / "speed_probe.py").exists():
    pytest.skip("scripts/ is in the repository, not in an installed accval", allow_module_level=True)
sys.path.insert(0, str(ROOT))

from scripts import consumer_probe, speed_probe  # noqa: E402
from scripts.kernel_variants import load_variant  # noqa: E402

PRODUCER_TABLES = {"PRODUCER_VARIANTS": speed_probe.PRODUCER_VARIANTS, "LAYOUT_VARIANTS": speed_probe.LAYOUT_VARIANTS,
                   "EXACT_DIV": {"exact-div": speed_probe.EXACT_DIV}, "WAVE_VARIANTS": speed_probe.WAVE_VARIANTS,
                   "M64_VARIANTS": speed_probe.M64_VARIANTS,
                   "regs": {f"maxnreg {cap}": speed_probe.reg_cap_subs(cap) for cap in speed_probe.REG_CAPS if cap}}
CASES = [(table, name, "inv_rope_fp8_quant", subs) for table, variants in PRODUCER_TABLES.items()
         for name, subs in variants.items()]
CASES += [(table, name, "fp8_block_bmm", subs) for table, variants in (("CEILING_VARIANTS", speed_probe.CEILING_VARIANTS),
                                                                       ("MUL_ADD_VARIANTS", speed_probe.MUL_ADD_VARIANTS),
                                                                       ("consumer_probe.VARIANTS",
                                                                        {k: v[1] for k, v in consumer_probe.VARIANTS.items()}))
          for name, subs in variants.items()]


@pytest.mark.parametrize("table,name,kernel,subs", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_probe_variant_applies_and_imports(table, name, kernel, subs):
    mod, path = load_variant(f"{kernel}.py", kernel, f"t{abs(hash((table, name))) % 10**8}", subs)
    try:
        shipped = importlib.import_module(f"accval.kernels.{kernel}")
        assert mod is not shipped and mod.__name__ == path.stem, f"{table}[{name!r}] loaded {mod.__name__}"
    finally:
        path.unlink(missing_ok=True)


def test_speed_probe_refuses_a_missing_baseline(monkeypatch, capsys, tmp_path):
    """A ``--baseline`` that is not a file is a usage error (exit 2, saying which), before any GPU work."""
    monkeypatch.setattr(sys, "argv", ["speed_probe.py", "--parts", "wave", "--baseline", str(tmp_path / "nope.py")])
    assert speed_probe.main() == 2
    assert "--baseline: expected a version of accval/kernels/inv_rope_fp8_quant.py" in capsys.readouterr().err


def test_speed_probe_refuses_a_rounding_without_its_baseline(monkeypatch, capsys, tmp_path):
    """``--baseline-rounding`` needs ``--baseline`` and an existing file: a usage error (exit 2) otherwise."""
    rounding = ROOT / "accval" / "kernels" / "fp8_rounding.py"
    monkeypatch.setattr(sys, "argv", ["speed_probe.py", "--parts", "wave", "--baseline-rounding", str(rounding)])
    assert speed_probe.main() == 2
    assert "without --baseline" in capsys.readouterr().err
    kernel = ROOT / "accval" / "kernels" / "inv_rope_fp8_quant.py"
    monkeypatch.setattr(sys, "argv", ["speed_probe.py", "--parts", "wave", "--baseline", str(kernel),
                                      "--baseline-rounding", str(tmp_path / "nope.py")])
    assert speed_probe.main() == 2
    assert "(no such file)" in capsys.readouterr().err


def test_a_baseline_imports_its_own_rounding(tmp_path):
    """The baseline kernel module takes its division and casts from the ``--baseline-rounding`` file, not
    from the working tree's fp8_rounding.py; without one it takes the tree's; both files are removed."""
    kernel = ROOT / "accval" / "kernels" / "inv_rope_fp8_quant.py"
    rounding = tmp_path / "fp8_rounding.py"
    rounding.write_text((ROOT / "accval" / "kernels" / "fp8_rounding.py").read_text() + "\nMARK = 'the baseline rounding'\n")
    tree = importlib.import_module("accval.kernels.fp8_rounding")
    with speed_probe.baseline_modules("tb", kernel, rounding) as mods:
        before = mods["before"]
        own = sys.modules[before.div_rn_by.fn.__module__]
        assert own is not tree and own.MARK == "the baseline rounding"
        files = sorted((ROOT / "scripts").glob("_probe_*tb*.py"))
        assert len(files) == 2, files
    assert not any(f.exists() for f in files)
    with speed_probe.baseline_modules("tc", kernel, None) as mods:
        assert sys.modules[mods["before"].div_rn_by.fn.__module__] is tree
    with speed_probe.baseline_modules("td", None, None) as mods:
        assert mods == {}
