"""lm-eval's gsm8k task config, unchanged except, with ``--data-dir``, where the data comes from."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

TASK = "gsm8k"
HF_DATASET = "openai/gsm8k"
_SOURCE_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs")


_MANAGER = None


def task_manager():
    """One lm-eval TaskManager per process, indexing only the folder lm-eval ships gsm8k in.

    lm-eval's default index parses every task yaml it ships (half a minute on a 2-core CPU); gsm8k's
    yaml includes nothing outside its folder, so indexing that folder alone gives the same config
    (``suites/ab/test_task.py`` compares it with the full index's and renders every prompt)."""
    global _MANAGER
    if _MANAGER is None:
        from lm_eval.tasks import TaskManager

        _MANAGER = TaskManager(include_defaults=False, include_path=str(builtin_task_dir()))
    return _MANAGER


def builtin_task_dir() -> Path:
    """The folder of lm-eval's own gsm8k task."""
    import lm_eval.tasks

    folder = Path(lm_eval.tasks.__file__).parent / TASK
    if not (folder / f"{TASK}.yaml").is_file():
        raise RuntimeError(f"lm-eval {_lm_eval_version()} ships no {TASK}.yaml in {folder}")
    return folder


def use_config_only_manager() -> None:
    """A TaskManager without lm-eval's task index, for a process that receives the finished config
    (a real rank other than 0): it loads a task from its config dict alone."""
    global _MANAGER
    from lm_eval.tasks import TaskManager

    _MANAGER = TaskManager(include_defaults=False)


def builtin_config() -> dict:
    """The task config exactly as lm-eval ships it (its ``gsm8k.yaml``)."""
    entry = task_manager().task_index.get(TASK)
    if entry is None or not entry.cfg:
        raise RuntimeError(f"lm-eval {_lm_eval_version()} has no task {TASK!r}")
    return copy.deepcopy(dict(entry.cfg))


def data_files(data_dir: Path) -> dict[str, str]:
    if Path(data_dir).is_file():
        raise ValueError(f"--data-dir: expected a directory holding train.jsonl and test.jsonl, got the file {data_dir}")
    files = {split: Path(data_dir) / f"{split}.jsonl" for split in ("train", "test")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ValueError(f"--data-dir: expected train.jsonl and test.jsonl in {data_dir}, missing {missing}")
    return {k: str(v.resolve()) for k, v in files.items()}


def check_data(data_dir: Path, limit: int | None = None, num_fewshot: int = 0) -> None:
    """``train.jsonl`` and ``test.jsonl`` as gsm8k's task reads them: one JSON object per line with a string
    ``question`` and a string ``answer`` holding ``#### <final answer>``; test with at least 2 questions
    (within ``limit``) for the paired statistics, train with at least ``num_fewshot`` examples (the task
    samples them from it: fewer failed after the model loaded, "Sample larger than population"). A
    ValueError names the file, the line and what is wrong (a missing field became the prompt text "None"
    and a number the target, without a word)."""
    counts = {}
    for split, path in data_files(data_dir).items():
        n = 0
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"--data-dir: {path} line {line_no}"
                try:
                    rec = json.loads(raw)
                except (UnicodeDecodeError, ValueError) as e:
                    raise ValueError(f"{where}: expected a JSON object per line, got invalid JSON ({e})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
                for field in ("question", "answer"):
                    if not isinstance(rec.get(field), str) or not rec[field].strip():
                        got = "nothing" if field not in rec else f"{type(rec[field]).__name__} {rec[field]!r:.40}"
                        raise ValueError(f"{where}: expected a non-empty string {field!r}, got {got}")
                if "####" not in rec["answer"]:
                    raise ValueError(f"{where}: expected the answer to end with '#### <final answer>' (gsm8k's format), "
                                     f"got {rec['answer'][-40:]!r}")
                n += 1
        counts[split] = (path, n)
    path, n = counts["test"]
    if min(n, limit or n) < 2:
        raise ValueError(f"--data-dir: {path} has {n} question(s); the paired statistics need at least 2")
    path, n = counts["train"]
    if n < max(num_fewshot, 1):  # lm-eval's task reads a first example from it even for 0 shots
        raise ValueError(f"--data-dir: {path} has {n} example(s); --num-fewshot {num_fewshot} takes "
                         f"{max(num_fewshot, 1)} from it")


def config(data_dir: Path | None = None) -> dict:
    """lm-eval's gsm8k config; with ``data_dir``, read through ``datasets``' json loader offline."""
    cfg = copy.deepcopy(builtin_config())
    if data_dir is not None:
        cfg["dataset_path"] = "json"
        cfg.pop("dataset_name", None)
        cfg["dataset_kwargs"] = {"data_files": data_files(data_dir)}
        offline()
    return cfg


def offline() -> None:
    """Local json data: keep ``datasets`` from asking the Hub."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def config_sha256(cfg: dict) -> str:
    """Hash of everything in the config but the data source: equal hashes render equal prompts from equal data."""
    rest = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def data_sha256(data_dir: Path | None) -> dict[str, str]:
    if data_dir is None:
        return {"source": f"hf:{HF_DATASET} (main)"}
    out = {"source": f"json:{Path(data_dir).resolve()}"}
    for split, path in data_files(data_dir).items():
        out[split] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
