"""The lm-eval model that serves one arm of the A/B, with a per-sample store for resuming."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from accval.model.site import Arm

from .engine import Engine


def request_key(context: str, gen_kwargs: dict) -> str:
    return hashlib.sha256(json.dumps([context, gen_kwargs], sort_keys=True, default=str).encode()).hexdigest()


class SampleStore:
    """Append-only jsonl of ``{"key", "text"}``: each generation is on disk once its batch completes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.done: dict[str, str] = {}
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.done[row["key"]] = row["text"]
            except (json.JSONDecodeError, KeyError):
                if n == len(lines):
                    break  # a line cut by a crash: that sample is simply redone
                raise ValueError(f"{self.path}:{n}: not a sample record; the run directory is damaged")

    def add(self, key: str, text: str) -> None:
        self.done[key] = text
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "text": text}) + "\n")
            f.flush()


@register_model("accval-dsv4")
class ArmLM(LM):
    """Serves ``generate_until`` for one arm; gsm8k needs nothing else."""

    def __init__(self, engine: Engine, arm: Arm, store: SampleStore, batch_size: int = 8, max_gen_toks: int = 256,
                 progress: bool = True, on_batch=None):
        super().__init__()
        self.engine, self.arm, self.store, self.on_batch = engine, arm, store, on_batch
        self.batch_size, self.max_gen_toks, self.progress = batch_size, max_gen_toks, progress
        self.resumed = 0

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm.auto import tqdm

        keyed = []
        for req in requests:
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs)
            if gen_kwargs.get("do_sample"):
                raise ValueError(f"arm {self.arm.name}: accval runs greedy decoding; the task asked for sampling")
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_toks = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            keyed.append((request_key(context, {"until": until, "max_gen_toks": max_toks}), context, until, max_toks))
        group = self.engine.group
        if group is not None:  # rank 0's prompts and rank 0's store decide; every rank works the same list
            mine = [k[0] for k in keyed]
            keyed = group.broadcast(keyed)
            if mine != [k[0] for k in keyed]:
                raise RuntimeError(f"rank {group.rank}: lm-eval built other prompts than rank 0 (task or data differ)")
        todo = [k for k in keyed if k[0] not in self.store.done]
        if group is not None:
            todo = group.broadcast(todo)
        self.resumed = len(keyed) - len(todo)
        todo.sort(key=lambda k: -len(k[1]))  # similar lengths batch together
        show = not (disable_tqdm or not self.progress or (group is not None and not group.root))
        bar = tqdm(total=len(todo), desc=f"arm {self.arm.name} ({self.arm.describe()})", unit="q", disable=not show)
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            groups: dict[tuple, list] = {}
            for item in chunk:
                groups.setdefault((tuple(item[2]), item[3]), []).append(item)
            for (until, max_toks), items in groups.items():
                texts = self._generate([it[1] for it in items], list(until), max_toks)
                if self.on_batch is not None:
                    self.on_batch()  # site counters first: a sample on disk always has its counts saved
                for it, text in zip(items, texts):
                    self.store.add(it[0], text)
            bar.update(len(chunk))
        bar.close()
        out = [self.store.done.get(k[0]) for k in keyed]
        return group.broadcast(out) if group is not None else out

    def _generate(self, contexts: list[str], until: list[str], max_toks: int) -> list[str]:
        """One batch. Real DEP ranks: process p generates rows b with b % world == p (logical rank b % 8,
        padded to the whole batch's width), then every process gathers all rows. Real TEP ranks: every
        process runs the whole batch; the site splits heads and groups and gathers the partial sums."""
        group, site = self.engine.group, self.engine.site
        if group is None or site.kind != "dep":
            return self.engine.generate(self.arm, contexts, until, max_toks)
        width = max(len(self.engine.encode(c)) for c in contexts)
        rows = [b for b in range(len(contexts)) if b % group.world == group.rank]
        texts = (self.engine.generate(self.arm, [contexts[b] for b in rows], until, max_toks, pad_to=width,
                                      row_ranks=[b % site.ranks for b in rows]) if rows else [])
        got = dict(kv for part in group.all_gather(list(zip(rows, texts))) for kv in part)
        return [got[b] for b in range(len(contexts))]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("accval-dsv4 serves generate_until tasks (gsm8k) only, not loglikelihood")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("accval-dsv4 serves generate_until tasks (gsm8k) only, not loglikelihood_rolling")
