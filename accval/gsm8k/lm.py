"""The lm-eval model that serves one arm of the A/B, with a per-sample store for resuming."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from accval import stats
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


class AgreementStore:
    """Append-only jsonl of ``{"doc_id", "tokens", "top1_agree", "kl_sum"}`` (teacher-forced agreement per
    question, :func:`accval.stats.token_agreement`); a line cut by a crash is redone."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.done: dict[int, tuple[int, int, float]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.done[int(row["doc_id"])] = (row["tokens"], row["top1_agree"], row["kl_sum"])

    def add(self, doc_id: int, row: tuple[int, int, float]) -> None:
        self.done[doc_id] = row
        with self.path.open("a") as f:
            f.write(json.dumps({"doc_id": doc_id, "tokens": row[0], "top1_agree": row[1], "kl_sum": row[2]}) + "\n")
            f.flush()


@dataclasses.dataclass
class Partner:
    """Arm B of a paired pass: each batch arm A generates, arm B generates the same prompts, and the
    two arms' logits over the gold answer teacher-forced after each prompt (from each arm's own
    prefill) give the question's agreement. ``target(doc)`` renders the gold answer as lm-eval does."""

    arm: Arm
    store: SampleStore
    agreement: AgreementStore
    target: Callable[[dict], str]
    on_batch: Callable[[], object] | None = None


@register_model("accval-dsv4")
class ArmLM(LM):
    """Serves ``generate_until`` for one arm; gsm8k needs nothing else. With a :class:`Partner`, each
    batch also runs the partner arm and the agreement (a paired pass; the partner's own lm-eval pass
    then finds all its generations in its store)."""

    def __init__(self, engine: Engine, arm: Arm, store: SampleStore, batch_size: int = 8, max_gen_toks: int = 256,
                 progress: bool = True, on_batch=None, partner: Partner | None = None):
        super().__init__()
        self.engine, self.arm, self.store, self.on_batch = engine, arm, store, on_batch
        self.batch_size, self.max_gen_toks, self.progress = batch_size, max_gen_toks, progress
        self.partner = partner
        self.resumed = 0
        self.generated = 0

    def _missing(self, key: str, doc_id: int) -> bool:
        p = self.partner
        return key not in self.store.done or (p is not None and (key not in p.store.done or doc_id not in p.agreement.done))

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
            target = self.partner.target(req.doc) if self.partner is not None else None
            keyed.append((request_key(context, {"until": until, "max_gen_toks": max_toks}), context, until, max_toks,
                          req.doc_id, target))
        group = self.engine.group
        if group is not None:  # rank 0's prompts and rank 0's store decide; every rank works the same list
            mine = [k[0] for k in keyed]
            keyed = group.broadcast(keyed)
            if mine != [k[0] for k in keyed]:
                raise RuntimeError(f"rank {group.rank}: lm-eval built other prompts than rank 0 (task or data differ)")
        todo = [k for k in keyed if self._missing(k[0], k[4])]
        if group is not None:
            todo = group.broadcast(todo)
        self.resumed = len(keyed) - len(todo)
        self.generated = len(todo)
        todo.sort(key=lambda k: -len(k[1]))  # similar lengths batch together
        show = not (disable_tqdm or not self.progress or (group is not None and not group.root))
        arms = self.arm.describe() + (f" and {self.partner.arm.describe()}" if self.partner is not None else "")
        bar = tqdm(total=len(todo), desc=f"arm {self.arm.name}" + (f"+{self.partner.arm.name}" if self.partner else "")
                   + f" ({arms})", unit="q", disable=not show)
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            groups: dict[tuple, list] = {}
            for item in chunk:
                groups.setdefault((tuple(item[2]), item[3]), []).append(item)
            for (until, max_toks), items in groups.items():
                contexts = [it[1] for it in items]
                if self.partner is None:
                    texts = self._generate(self.arm, contexts, list(until), max_toks)
                    if self.on_batch is not None:
                        self.on_batch()  # site counters first: a sample on disk always has its counts saved
                    for it, text in zip(items, texts):
                        self.store.add(it[0], text)
                    continue
                p = self.partner
                targets = [it[5] for it in items]
                texts, forced_a = self._generate(self.arm, contexts, list(until), max_toks, targets)
                texts_b, forced_b = self._generate(p.arm, contexts, list(until), max_toks, targets)
                rows = {b: stats.token_agreement(forced_a[b], forced_b[b]) for b in forced_a}
                if group is not None:
                    rows = dict(kv for part in group.all_gather(list(rows.items())) for kv in part)
                for callback in (self.on_batch, p.on_batch):
                    if callback is not None:
                        callback()
                for b, it in enumerate(items):
                    if it[0] not in self.store.done:
                        self.store.add(it[0], texts[b])
                    if it[0] not in p.store.done:
                        p.store.add(it[0], texts_b[b])
                    if it[4] not in p.agreement.done:
                        p.agreement.add(it[4], rows[b])
            bar.update(len(chunk))
        bar.close()
        out = [self.store.done.get(k[0]) for k in keyed]
        return group.broadcast(out) if group is not None else out

    def _generate(self, arm: Arm, contexts: list[str], until: list[str], max_toks: int, targets: list[str] | None = None):
        """One batch: its texts, and with ``targets`` also ``{row: teacher-forced logits}`` of the rows
        this process ran. Real DEP ranks: process p generates rows b with b % world == p (logical rank
        b % 8, padded to the whole batch's width), then every process gathers all texts. Real TEP
        ranks: every process runs the whole batch; the site splits heads and groups and gathers the
        partial sums."""
        group, site = self.engine.group, self.engine.site
        conts = None if targets is None else [" " + t for t in targets]
        if group is None or site.kind != "dep":
            got = self.engine.generate(arm, contexts, until, max_toks, continuations=conts)
            if conts is None:
                return got
            if group is not None and not group.root:
                return got[0], {}  # TEP: rank 0's logits stand for the rows (every process has them all)
            return got[0], dict(enumerate(got[1]))
        width = max(len(self.engine.encode(c)) for c in contexts)
        rows = [b for b in range(len(contexts)) if b % group.world == group.rank]
        texts, forced = [], []
        if rows:
            got = self.engine.generate(arm, [contexts[b] for b in rows], until, max_toks, pad_to=width,
                                       row_ranks=[b % site.ranks for b in rows],
                                       continuations=None if conts is None else [conts[b] for b in rows])
            texts, forced = (got, []) if conts is None else got
        gathered = dict(kv for part in group.all_gather(list(zip(rows, texts))) for kv in part)
        texts = [gathered[b] for b in range(len(contexts))]
        return texts if conts is None else (texts, dict(zip(rows, forced)))

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("accval-dsv4 serves generate_until tasks (gsm8k) only, not loglikelihood")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("accval-dsv4 serves generate_until tasks (gsm8k) only, not loglikelihood_rolling")
