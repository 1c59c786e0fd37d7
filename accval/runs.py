"""Where a command's work goes when the command line names no place: ``<runs dir>/<kind>/<timestamp>``."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

RUNS_DIR_ENV = "ACCVAL_RUNS_DIR"


def new_path(kind: str, suffix: str = "") -> Path:
    """``$ACCVAL_RUNS_DIR/<kind>/<timestamp><suffix>``, or under ``runs`` in the current directory."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs") / kind / f"{stamp}{suffix}"
