"""Load a variant of one of accval's kernel files, edited by text substitution (for the probe scripts).

Each variant is written next to this file (Triton reads a jit function's source from its file),
imported as its own module with its torch ops in their own namespace, and removed by the caller.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_variant(kernel_file: str, op_prefix: str, name: str, subs: list[tuple[str, str]], source: str | None = None):
    """``accval/kernels/<kernel_file>`` (or ``source``, another version of that file's text) with ``subs``
    applied and its ops ``"accval::<op_prefix>..."`` renamed to ``"accval_probe_<name>::..."``:
    ``(module, path)``; the caller unlinks ``path``. Raises RuntimeError when a substitution no
    longer matches the kernel source."""
    text = (ROOT / "accval" / "kernels" / kernel_file).read_text() if source is None else source
    for old, new in subs:
        if old not in text:
            raise RuntimeError(f"variant {name}: {old!r} is not in accval/kernels/{kernel_file} any more")
        text = text.replace(old, new)
    text = text.replace("from . import", "from accval.kernels import").replace("from .", "from accval.kernels.")
    tag = name.replace("-", "_")
    text = text.replace(f'"accval::{op_prefix}', f'"accval_probe_{tag}::{op_prefix}')
    path = ROOT / "scripts" / f"_probe_{Path(kernel_file).stem}_{tag}.py"
    path.write_text(text)
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
        return mod, path
    except Exception:
        path.unlink()
        raise


@contextlib.contextmanager
def loaded_variants(kernel_file: str, op_prefix: str, tag: str, variants: dict, source: str | None = None):
    """Every entry of ``variants`` (key -> substitutions) loaded by :func:`load_variant` (from ``source``
    when given), as ``{key: module}``; their files are removed on exit, also when one fails to load."""
    loaded = {}
    try:
        for i, (key, subs) in enumerate(variants.items()):
            loaded[key] = load_variant(kernel_file, op_prefix, f"{tag}{i}", subs, source)
        yield {key: mod for key, (mod, _) in loaded.items()}
    finally:
        for _, path in loaded.values():
            path.unlink(missing_ok=True)
