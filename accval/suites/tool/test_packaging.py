"""accval's checkout and install add one top-level import name, ``accval``: a top-level package of the
checkout (on the path whenever pytest or a script runs from it) that another installed distribution also
provides shadows that distribution. transformers 5.25 requires Hugging Face's hub package, whose import
name is ``kernels``, and imports it while loading ``DeepseekV4ForCausalLM``; accval's kernels were a
top-level ``kernels`` package then, and every fresh install failed there. Its examples were a top-level
``examples`` package, which e3nn also installs (found on a GPU box that has it)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _top_level_packages(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def _clashes(root: Path) -> dict[str, list[str]]:
    """Top-level packages of the checkout at ``root`` that installed distributions other than accval provide."""
    owners = importlib.metadata.packages_distributions()
    found = {name: sorted(set(owners.get(name, [])) - {"accval"}) for name in _top_level_packages(root)}
    return {name: dists for name, dists in found.items() if dists}


def test_the_checkout_has_no_top_level_package_another_distribution_provides():
    assert _clashes(ROOT) == {}, "these top-level packages shadow installed distributions of the same import name"


def test_the_checkout_adds_only_accval_and_the_suites_path():
    """Whatever is installed here: a generic top-level name (``kernels``, ``examples``) is one some distribution
    provides somewhere. ``suites`` is the link the README's ``pytest suites`` runs through."""
    assert _top_level_packages(ROOT) == ["accval", "suites"]


def test_the_install_adds_only_accval():
    provided = sorted(name for name, dists in importlib.metadata.packages_distributions().items() if "accval" in dists)
    if not provided:
        pytest.skip("accval is not installed here (run from a checkout on the path)")
    assert provided == ["accval"], provided


def test_a_kernels_package_of_its_own_would_be_caught(tmp_path):
    """The check sees the clash that broke installs, where Hugging Face's ``kernels`` is installed (transformers
    from 5.25 on requires it)."""
    if "kernels" not in importlib.metadata.packages_distributions():
        pytest.skip("no installed distribution provides a top-level 'kernels' here (transformers < 5.25)")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    assert "kernels" in _clashes(tmp_path)
    spec = importlib.util.find_spec("kernels")
    assert spec is not None and Path(spec.origin).resolve().parent.parent != ROOT, spec  # not the checkout's own


@pytest.mark.parametrize("version, runs", [("5.17.0", False), ("5.23.9", False), ("4.57.1", False), ("main", False),
                                           ("5.24.0", True), ("5.25.0", True), ("5.26.0.dev0", True), ("6.0.0", True)])
def test_an_older_transformers_is_refused_naming_both_versions(version, runs):
    """On the lent GPU box (transformers 5.17) every generation failed inside ``generate`` with
    "model_kwargs are not used by the model: ['cache']"; the engine now says what it needs."""
    from accval.gsm8k.engine import MIN_TRANSFORMERS, check_transformers

    if runs:
        check_transformers(version)
        return
    with pytest.raises(RuntimeError, match=rf"transformers>={MIN_TRANSFORMERS} .* has {version}"):
        check_transformers(version)


def test_the_pinned_transformers_is_the_one_the_engine_checks():
    from importlib.metadata import PackageNotFoundError, requires

    from accval.gsm8k.engine import MIN_TRANSFORMERS

    try:
        deps = requires("accval") or []
    except PackageNotFoundError:
        pytest.skip("accval is used from a checkout, not installed: no package metadata to read its pins from")
    pins = [d.replace(" ", "") for d in deps if d.startswith("transformers")]
    assert pins == [f"transformers>={MIN_TRANSFORMERS}"], pins
