"""accval itself: the implementation registry, the pytest plugin with a foreign implementation, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from accval.cli import main
from accval.implementations import CONSUMERS, PRODUCERS, PluginError
from accval.mutants import CATALOG
from accval.registry import Registry
from accval.testing import child_pytest_env, plugin_args

REPO = Path(__file__).resolve().parents[3]


def test_registry_duplicate_and_unknown_names():
    reg: Registry[object] = Registry("widget")
    reg.register("a", object())
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", object())
    with pytest.raises(KeyError, match="registered: a"):
        reg.get("b")


def test_registry_lazy_module_attr_and_bad_specs():
    assert PRODUCERS.get("accval.examples.torch_producer:inv_rope_fp8_quant").name == "accval.examples.torch_producer:inv_rope_fp8_quant"
    with pytest.raises(ValueError, match="cannot import module"):
        PRODUCERS.get("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="has no attribute"):
        PRODUCERS.get("accval.examples.torch_producer:nope")


@pytest.mark.parametrize("body, error", [("def f(:\n", "SyntaxError"), ("1 / 0\n", "ZeroDivisionError"),
                                         ("import os\nos.no_such_thing\n", "AttributeError")])
def test_a_module_failing_at_import_is_a_value_error_naming_it(tmp_path, monkeypatch, body, error):
    """The module's own code failing (not a missing module) was a traceback, and the CLI's exit 1 ("regression")."""
    (tmp_path / "accval_broken_plug.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=f"cannot import module 'accval_broken_plug' .*: {error}"):
        PRODUCERS.get("accval_broken_plug:f")


@pytest.mark.parametrize("spec", [":", ":f", ".rel:f", "mod:"])
def test_a_spec_without_an_absolute_module_and_an_attribute_is_refused(spec):
    with pytest.raises(ValueError, match="expected 'module:attr' with an absolute module name and an attribute"):
        PRODUCERS.get(spec)


def test_plugged_implementation_with_wrong_signature_is_refused():
    with pytest.raises(PluginError, match="cannot be called with the contract's 9 positional arguments"):
        PRODUCERS.get("accval.examples.torch_producer:wrong_signature")


def test_every_mutant_is_registered_under_its_role():
    for m in CATALOG.values():
        assert f"mutant:{m.id}" in (PRODUCERS if m.role == "producer" else CONSUMERS)


def test_env_variable_selects_the_implementation_and_bad_plugin_is_a_usage_error():
    env = child_pytest_env(ACCVAL_PRODUCER="accval.examples.torch_producer:wrong_signature")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "suites/kernel/test_provenance.py"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage-error exit code, before any test
    assert "cannot be called with the contract's 9 positional arguments" in proc.stderr



def test_unknown_hypothesis_profile_is_a_one_line_usage_error():
    """A mistyped ``ACCVAL_HYPOTHESIS_PROFILE`` ends the run before any test with pytest's usage-error exit
    code and one line naming the profiles (it was a nine-line ImportError from the root conftest)."""
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="nigthly")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "suites/kernel/test_provenance.py"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["ERROR: accval: ACCVAL_HYPOTHESIS_PROFILE: expected one of ['ci', 'cpu', 'gpu', 'nightly', 'smoke'], "
                     "got 'nigthly'"], proc.stderr

def test_cli_usage_errors_exit_2(capsys):
    assert main(["mutants", "--only", "no-such-mutant", "--no-baseline", "--quiet"]) == 2
    assert "unknown mutant" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2


def test_cli_mutants_kills_one_and_writes_json(tmp_path):
    """`accval mutants --only silent-fallback --no-baseline` exits 0 (killed) and writes the documented
    JSON shape (the quickest kill; CI's full `accval mutants` run covers every mutant and the baseline)."""
    out = tmp_path / "m.json"
    assert main(["mutants", "--only", "silent-fallback", "--no-baseline", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    (m,) = report["mutants"]
    assert m["id"] == "silent-fallback" and m["killed"] and m["ran"] and m["seconds"] > 0
    assert m["killed_by"].endswith("test_consumer_records_what_ran_or_raises") and "baseline_pr" not in m
    assert (tmp_path / "m.md").exists()


def test_bench_without_gpu_is_an_environment_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the bench runs for real there")
    assert main(["bench", "--m", "64"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_bench_sweep_takes_only_the_swept_ops(capsys):
    """--sweep times producer and consumer launches: chain (or a typo) is a usage error, before any GPU check."""
    assert main(["bench", "--sweep", "--ops", "chain"]) == 2
    assert "--ops with --sweep: expected a non-empty subset" in capsys.readouterr().err


def test_consumer_config_rejects_bad_sizes():
    import torch

    import accval.kernels as kernels

    with pytest.raises(ValueError, match="m: expected an int >= 0"):
        kernels.consumer_config(-1, 1024, 8192, 8, torch.device("cpu"))
    with pytest.raises(TypeError, match="k: expected an int"):
        kernels.consumer_config(64, 1024, 8192.0, 8, torch.device("cpu"))


def test_mutant_run_loads_the_plugin_when_pytest_does_not(monkeypatch):
    """A checkout used through PYTHONPATH has no ``pytest11`` entry point (the lent GPU runs accval that
    way), so pytest would not know ``--producer``: the mutant runner must load the plugin itself, and
    must not load it twice where pip installed it. ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` stands in for
    the missing entry point."""
    from accval import mutation

    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    outcome = mutation.run_suite("accval", "silent-fallback", gpu=False)
    assert outcome.ran and outcome.killed, outcome


def test_summary_says_why_each_test_failed_under_its_implementations_line():
    """A plugged kernel's errors are buried under Hypothesis' output (a newcomer's wrong fp8 dtype: ~100 lines
    per failure); the summary names each failing test with the first line of its error, and counts repeats."""
    import types

    from accval.pytest_plugin import _Summary

    def failed(nodeid, message, when="call"):
        return types.SimpleNamespace(when=when, outcome="failed", nodeid=nodeid,
                                     longrepr=types.SimpleNamespace(reprcrash=types.SimpleNamespace(message=message)),
                                     user_properties=[("accval_roles", ("producer",))])

    summary = _Summary()
    wrong = "ContractViolation: producer 'q' outputs: fp8 dtype torch.bfloat16 != float8_e4m3fn\nmore lines"
    for m in (1, 5, 1500):
        summary.add(failed(f"suites/kernel/test_producer.py::test_explicit_sizes_match_reference[M{m}]", wrong))
    summary.add(failed("suites/kernel/test_contract.py::test_layout_contract", "AssertionError: " + "x" * 400))
    lines = summary.lines({"producer": PRODUCERS.get("accval"), "consumer": CONSUMERS.get("accval")})
    assert "0 passed, 4 failed" in lines[0], lines
    assert lines[1] == ("  failed 3x: test_explicit_sizes_match_reference: ContractViolation: producer 'q' outputs: "
                        "fp8 dtype torch.bfloat16 != float8_e4m3fn"), lines
    assert lines[2].startswith("  failed 1x: test_layout_contract: AssertionError: xxx") and lines[2].endswith("...")
    assert len(lines[2]) < 300, lines[2]


def test_summary_lists_every_skip_reason_in_full_under_its_implementations_line():
    """The run's summary: one line per implementation (what tools grep), then every skip reason with its count,
    most frequent first, none cut short (it listed four, cut at 110 characters)."""
    import types

    from accval.pytest_plugin import _Summary

    long_reason = "large case, a minute for Triton kernels in the CPU interpreter: " + "x" * 120
    reasons = [long_reason] * 3 + [f"reason {i}" for i in range(5)]
    summary = _Summary()
    for i, reason in enumerate(reasons):
        summary.add(types.SimpleNamespace(when="call", outcome="skipped", longrepr=("f.py", i, f"Skipped: {reason}"),
                                          user_properties=[("accval_roles", ("producer",))]))
    summary.add(types.SimpleNamespace(when="call", outcome="passed", longrepr=None,
                                      user_properties=[("accval_roles", ("producer",))]))
    lines = summary.lines({"producer": PRODUCERS.get("accval"), "consumer": CONSUMERS.get("accval")})
    assert lines[0].startswith("producer accval: ") and "1 passed, 0 failed, 8 skipped" in lines[0], lines
    assert lines[1:] == [f"  skipped 3x: {long_reason}", *(f"  skipped 1x: reason {i}" for i in range(5))], lines


@pytest.mark.parametrize("registry, name, near", [("producer", "mutant:bogus", "mutant:scale-pad-btm"),
                                                  ("consumer", "mutant:rope-sign", "mutant:silent-fallback"),
                                                  ("consumer", "reference:fp32-div", "reference")])
def test_a_registered_kind_of_the_wrong_role_is_named_not_imported(registry, name, near):
    """``--consumer mutant:rope-sign`` (a producer mutant) said "cannot import module 'mutant'"."""
    reg = PRODUCERS if registry == "producer" else CONSUMERS
    with pytest.raises(KeyError) as err:
        reg.get(name)
    assert f"unknown {registry} {name!r}; a {registry} of that kind is one of:" in str(err.value) and near in str(err.value)
    assert reg.get("accval.examples.torch_producer:inv_rope_fp8_quant" if registry == "producer"
                   else "accval.examples.torch_consumer:fp8_block_bmm").name.startswith("accval.examples.")


def test_the_core_tests_a_mutant_run_takes_first_exist():
    """``accval mutants`` runs ``CORE_FIRST`` before the rest of the suite (``-x`` stops at the first failure): a
    renamed test would silently drop out of that order and a kill would take the whole suite's time."""
    import re

    from accval.mutation import CORE_FIRST, KERNEL_ORDER, SUITES_DIR

    defined = {name for f in KERNEL_ORDER
               for name in re.findall(r"^def (test_\w+)\(", (SUITES_DIR / "kernel" / f).read_text(), re.M)}
    missing = {role: [t for t in tests if t not in defined] for role, tests in CORE_FIRST.items()}
    assert not any(missing.values()), missing



def test_gpu_memory_tests_of_several_processes_never_overlap(tmp_path):
    """Two tests marked ``gpu_memory`` on two xdist workers run one after the other (the lock every pytest
    process of the machine shares), where the same tests unmarked overlap: without it, large GPU tests of
    several processes held one card's memory together and ran out of it."""
    body = ("    with open(os.environ['HOLD_LOG'], 'a') as f:\n"
            "        f.write(f'{time.time()} enter\\n')\n"
            "    time.sleep(2.0)\n"
            "    with open(os.environ['HOLD_LOG'], 'a') as f:\n"
            "        f.write(f'{time.time()} exit\\n')\n")
    (tmp_path / "test_hold.py").write_text(
        "import os, time\nimport pytest\n\n"
        f"@pytest.mark.gpu_memory\n@pytest.mark.parametrize('i', [0, 1])\ndef test_marked(i):\n{body}\n"
        f"@pytest.mark.parametrize('i', [0, 1])\ndef test_plain(i):\n{body}")

    def order(which: str) -> list[str]:
        log = tmp_path / f"{which}.log"
        env = child_pytest_env(HOLD_LOG=str(log))
        proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-n", "2", "-p", "no:cacheprovider",
                               str(tmp_path / f"test_hold.py::test_{which}")], cwd=tmp_path, capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [kind for _, kind in sorted((float(t), kind) for t, kind in map(str.split, log.read_text().splitlines()))]

    assert order("plain") == ["enter", "enter", "exit", "exit"]  # the two workers do run side by side
    assert order("marked") == ["enter", "exit", "enter", "exit"]
