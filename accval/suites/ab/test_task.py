"""The offline task config renders exactly lm-eval's own gsm8k prompts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from accval.gsm8k import task as task_mod  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "gsm8k"
DATA = Path(os.environ.get("ACCVAL_GSM8K_DIR", DATA)).resolve()
needs_data = pytest.mark.skipif(not (DATA / "test.jsonl").is_file(), reason=f"no local gsm8k at {DATA}")


def _requests(cfg: dict, limit=None):
    from lm_eval.tasks import TaskManager

    t = TaskManager(include_defaults=False).load_task_or_group([cfg])[task_mod.TASK]
    t.set_config("num_fewshot", 5)
    t.set_fewshot_seed(seed=1234)  # what simple_evaluate does (its fewshot_random_seed default)
    t.build_all_requests(limit=limit, rank=0, world_size=1)
    return [(inst.doc_id, inst.args[0], inst.args[1]) for inst in sorted(t.instances, key=lambda i: i.doc_id)]


@needs_data
def test_offline_prompts_are_byte_identical_to_lm_eval_builtin(monkeypatch):
    """lm-eval's unmodified gsm8k config (source openai/gsm8k), with only the download pointed at the
    same local files, against accval's offline config: every one of the 1319 prompts, stop strings
    and generation options are identical."""
    import datasets
    import lm_eval.api.task as lm_task

    real = datasets.load_dataset

    def from_local(path=None, name=None, **kwargs):
        assert path == task_mod.HF_DATASET and name == "main", (path, name)
        return real("json", data_files=task_mod.data_files(DATA), **kwargs)

    monkeypatch.setattr(lm_task.datasets, "load_dataset", from_local)
    builtin = _requests(task_mod.builtin_config())
    monkeypatch.setattr(lm_task.datasets, "load_dataset", real)
    offline = _requests(task_mod.config(DATA))
    assert len(builtin) == len(offline) == 1319
    for a, b in zip(builtin, offline):
        assert a == b, f"doc {a[0]}: prompts differ"
    assert builtin[0][1].count("Question:") == 6  # 5 shots + the question


def test_gsm8k_folder_index_gives_lm_eval_default_index_config():
    """accval indexes only lm-eval's gsm8k folder (the full index takes ~30 s to build on a 2-core
    CPU); the config it finds is the one lm-eval's default TaskManager finds."""
    from lm_eval.tasks import TaskManager

    full = TaskManager().task_index.get(task_mod.TASK)
    assert full is not None and full.cfg
    assert task_mod.builtin_config() == dict(full.cfg)
    assert task_mod.builtin_config()["dataset_path"] == task_mod.HF_DATASET


@needs_data
def test_config_differs_from_lm_eval_only_in_the_source():
    b, o = task_mod.builtin_config(), task_mod.config(DATA)
    assert {k for k in set(b) | set(o) if b.get(k) != o.get(k)} <= {"dataset_path", "dataset_name", "dataset_kwargs"}
    assert task_mod.config_sha256(b) == task_mod.config_sha256(o)
    assert o["dataset_path"] == "json" and b["dataset_path"] == task_mod.HF_DATASET


def test_missing_data_dir_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="expected train.jsonl and test.jsonl"):
        task_mod.config(tmp_path)
