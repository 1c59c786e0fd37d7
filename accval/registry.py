"""A small named registry (after lm-eval's ``lm_eval/api/registry.py``).

Entries are objects or lazy ``"module:attr"`` strings resolved on first use. A duplicate name raises
ValueError; an unknown name raises KeyError listing what exists.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def _import(module_name: str):
    """Import a module, also from the current directory (as ``python -m`` and pytest do; the ``accval``
    console script alone would not look there)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if cwd in sys.path or (e.name or "").split(".")[0] != module_name.split(".")[0]:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def resolve(spec: str) -> object:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"expected 'module:attr', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    if not module_name or module_name.startswith(".") or not attr:
        raise ValueError(f"expected 'module:attr' with an absolute module name and an attribute, got {spec!r}")
    try:
        obj: object = _import(module_name)
    except Exception as e:  # the module's own code failed (a SyntaxError, a raise at import): the user's to fix
        raise ValueError(f"cannot import module {module_name!r} from {spec!r}: {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})") from None
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str, wrap: Callable[[str, object], T] | None = None):
        self.kind = kind
        self._entries: dict[str, object] = {}
        self._resolved: dict[str, T] = {}
        self._wrap = wrap

    def register(self, name: str, entry: object) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name: expected a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        if name not in self._resolved:
            if name in self._entries:
                entry = self._entries[name]
            elif ":" in name and self._looks_registered(name):
                # "mutant:x" or "reference:x" not registered for this role, and no module of that name
                prefix = name.partition(":")[0]
                near = [n for n in sorted(self._entries) if n == prefix or n.startswith(prefix + ":")]
                raise KeyError(f"unknown {self.kind} {name!r}; a {self.kind} of that kind is one of: {', '.join(near)}")
            elif ":" in name:  # an ad-hoc "module:attr" given by the user
                entry = name
            else:
                raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._entries))}")
            obj = resolve(entry) if isinstance(entry, str) else entry
            self._resolved[name] = self._wrap(name, obj) if self._wrap else obj  # type: ignore[assignment]
        return self._resolved[name]

    def _looks_registered(self, name: str) -> bool:
        """``name`` reads as a registered kind (``mutant:...``, ``reference...``), not an importable module."""
        import importlib.util

        prefix = name.partition(":")[0]
        if not any(n == prefix or n.startswith(prefix + ":") for n in self._entries):
            return False
        try:
            return importlib.util.find_spec(prefix) is None
        except (ImportError, ValueError):
            return True

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
