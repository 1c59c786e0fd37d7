"""The lm-eval model that serves one arm of the A/B, with a per-sample store for resuming."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from accval import stats, stop
from accval.site import Arm, SiteStats, sharding

from .engine import Engine


def request_key(context: str, gen_kwargs: dict) -> str:
    return hashlib.sha256(json.dumps([context, gen_kwargs], sort_keys=True, default=str).encode()).hexdigest()


class RunStoreError(ValueError):
    """A run directory's file that cannot be read as the run store it should be."""


#: what a damaged run store error tells the user to do: its finished work cannot be trusted
DAMAGED = "the run directory is damaged: start the run afresh in another --out"


def damaged(path: Path, line: int, what: str, problem: str) -> RunStoreError:
    """The one-line error for line ``line`` of a run store file that is not a ``what`` record."""
    article = "an" if what[:1] in "aeiou" else "a"
    return RunStoreError(f"{path}: line {line} is not {article} {what} record ({problem}); {DAMAGED}")


def _whole(x, least: int = 0) -> bool:
    """A JSON whole number (not a bool) of at least ``least``."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= least


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_jsonl(path: Path, what: str) -> list[dict]:
    """The records of an append-only jsonl file of the run store (:func:`read_records` without line numbers)."""
    return [row for _, row in read_records(path, what)]


def read_records(path: Path, what: str) -> list[tuple[int, dict]]:
    """The records of an append-only jsonl file of the run store, each with its line number.

    Each record is one line, written in one call as the work it records finishes. A crash (SIGKILL,
    a full disk, power) can cut the last line; that record is cut off the file (said on stderr) and
    its work is redone, so the next append starts on a fresh line. A bad line anywhere else means the
    file was changed by something other than accval: :class:`RunStoreError`."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    rows, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        line = data[start:] if end == -1 else data[start:end]
        nxt = len(data) if end == -1 else end + 1
        try:
            row = json.loads(line) if line.strip() else None
            if row is not None and not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            if row is not None and end == -1:
                raise ValueError("no end of line")  # a record is complete with its newline
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if nxt < len(data):
                raise damaged(path, data.count(b"\n", 0, start) + 1, what, str(e)) from None
            with path.open("r+b") as f:
                f.truncate(start)
            print(f"accval: {path.name}: removed a cut last line ({len(data) - start} bytes, a write the last run did "
                  f"not finish); that {what} is redone", file=sys.stderr)
            break
        if row is not None:
            rows.append((data.count(b"\n", 0, start) + 1, row))
        start = nxt
    return rows


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append records, one line each, in one write, flushed to the OS."""
    if rows:
        with Path(path).open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))


class SampleStore:
    """Append-only jsonl of ``{"key", "text"}``: one arm's generation per request. A record counts as
    done only once its batch is in the :class:`CommitLog`; a record written again (a batch redone
    after a crash) replaces the earlier one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.done: dict[str, str] = {}
        for line, row in read_records(self.path, "generation"):
            if not is_request_key(row.get("key")) or not isinstance(row.get("text"), str):
                raise damaged(self.path, line, "generation", f"expected a string key and text, got {_fields(row)}")
            self.done[row["key"]] = row["text"]

    def add_many(self, rows: list[tuple[str, str]]) -> None:
        for key, text in rows:
            self.done[key] = text
        append_jsonl(self.path, [{"key": k, "text": t} for k, t in rows])

    def add(self, key: str, text: str) -> None:
        self.add_many([(key, text)])


class AgreementStore:
    """Append-only jsonl of ``{"doc_id", "tokens", "top1_agree", "kl_sum"}`` (teacher-forced agreement per
    question, :func:`accval.stats.token_agreement`); as :class:`SampleStore`, a later record of a
    question replaces an earlier one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.done: dict[int, tuple[int, int, float]] = {}
        for line, row in read_records(self.path, "agreement"):
            doc_id, tokens, agree, kl = (row.get(k) for k in ("doc_id", "tokens", "top1_agree", "kl_sum"))
            # kl_sum may be NaN or inf (arm B's logits broke); it is never negative (token_agreement clamps)
            if not (_whole(doc_id) and _whole(tokens, 1) and _whole(agree) and agree <= tokens and _number(kl)
                    and not kl < 0):
                raise damaged(self.path, line, "agreement", "expected whole numbers doc_id >= 0, tokens >= 1, "
                              f"top1_agree from 0 to tokens and a number kl_sum >= 0, got {_fields(row)}")
            self.done[doc_id] = (tokens, agree, float(kl))

    def add_many(self, rows: dict[int, tuple[int, int, float]]) -> None:
        self.done.update(rows)
        append_jsonl(self.path, [{"doc_id": d, "tokens": r[0], "top1_agree": r[1], "kl_sum": r[2]} for d, r in rows.items()])

    def add(self, doc_id: int, row: tuple[int, int, float]) -> None:
        self.add_many({doc_id: row})


def committed_digests(generations: dict[str, SampleStore], agreement: AgreementStore, keys: list[str],
                      doc_ids: list[int]) -> dict[str, str]:
    """sha256 of what a batch's commit record commits, per file: each arm's generations of ``keys`` and the
    agreement rows of ``doc_ids``, as the stores hold them (so a line edited into another valid record
    afterwards no longer matches its commit)."""
    def digest(values) -> str:
        return hashlib.sha256(json.dumps(values).encode()).hexdigest()

    out = {gens.path.name: digest([gens.done[k] for k in keys]) for _, gens in sorted(generations.items())}
    out[agreement.path.name] = digest([[int(t), int(a), float(kl)] for t, a, kl in (agreement.done[d] for d in doc_ids)])
    return out


class CommitLog:
    """``commits.jsonl``: one record per finished batch of the paired pass, appended after the batch's
    generations and agreement rows: ``{"keys", "doc_ids", "site": {arm: SiteStats state}, "digests"}``
    where ``site`` holds the ``o_a_proj`` site's counts of that batch (every process's, summed) and
    ``digests`` the sha256 of the records it commits, per file (:func:`committed_digests`; runs from
    before it have none).

    A question is done when its batch's record is on disk, and the site counters of a run are the sum
    of the records. Work a crash or an interrupt cut short (generations on disk, no record yet) is
    redone and counted once: its counts were never recorded."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.keys: set[str] = set()
        self.doc_ids: set[int] = set()
        self.site: dict[str, SiteStats] = {}
        self.lines: list[tuple[int, list[str], list[int], dict | None]] = []  # (line, keys, doc_ids, digests)
        for line, row in read_records(self.path, "batch"):
            keys, doc_ids, site, digests = row.get("keys"), row.get("doc_ids"), row.get("site"), row.get("digests")
            problem = None
            if digests is not None and not (isinstance(digests, dict) and all(
                    isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in digests.items())):
                problem = f"expected digests, sha256 hex strings per file, got {digests!r:.80}"
            elif not (isinstance(keys, list) and keys and all(is_request_key(k) for k in keys)):
                problem = f"expected keys, a non-empty list of request keys (strings), got {keys!r:.80}"
            elif not (isinstance(doc_ids, list) and len(doc_ids) == len(keys) and all(_whole(d) for d in doc_ids)):
                problem = f"expected doc_ids, {len(keys)} whole numbers >= 0 (one per key), got {doc_ids!r:.80}"
            elif not (isinstance(site, dict) and site):
                problem = f"expected site, an object of site counts per arm, got {site!r:.80}"
            else:
                problem = next((f"site {arm!r}: {p}" for arm, state in site.items()
                                if (p := site_state_problem(state)) is not None), None)
            if problem is not None:
                raise damaged(self.path, line, "batch", problem)
            self._count(site)
            self.keys.update(keys)
            self.doc_ids.update(doc_ids)
            self.lines.append((line, keys, doc_ids, digests))

    def _count(self, site: dict[str, dict]) -> None:
        for name, state in site.items():
            self.site[name] = SiteStats.merged([self.site.get(name, SiteStats()).state(), state])

    def add(self, keys: list[str], doc_ids: list[int], site: dict[str, dict], digests: dict[str, str] | None = None) -> None:
        self._count(site)
        self.keys.update(keys)
        self.doc_ids.update(doc_ids)
        record = {"keys": list(keys), "doc_ids": list(doc_ids), "site": site}
        append_jsonl(self.path, [record if digests is None else {**record, "digests": digests}])


def is_request_key(key) -> bool:
    """A request key as the run store keeps it: a non-empty string (:func:`request_key` makes them)."""
    return isinstance(key, str) and bool(key)


def _fields(row: dict) -> str:
    """A record's fields for an error message, shortened."""
    return f"{row!r:.120}"


#: a site count state's fields (:meth:`accval.site.SiteStats.state`) that are whole numbers >= 0
_SITE_WHOLE = ("calls", "tokens", "contract_violations")


def site_state_problem(state) -> str | None:
    """What is wrong with a recorded :meth:`accval.site.SiteStats.state` (None: nothing), so a changed
    commit record is refused instead of summed into wrong counts: whole counts >= 0, ``m_counts`` from
    token counts M to calls, ``ran`` from ``op:impl`` to calls, a string or null ``first_violation`` and a list
    of strings ``provenance_problems``."""
    if not isinstance(state, dict):
        return f"expected an object, got {type(state).__name__}"
    want = set(_SITE_WHOLE) | {"m_counts", "ran", "first_violation", "provenance_problems"}
    if set(state) - {"inject_changed"} != want:  # records written before injected defects were checked lack it
        return f"expected the fields {sorted(want | {'inject_changed'})}, got {sorted(state)}"
    bad = [k for k in (*_SITE_WHOLE, "inject_changed") if k in state and not _whole(state[k])]
    if bad:
        return f"expected whole numbers >= 0 for {bad}, got {[state[k] for k in bad]}"
    m_counts, ran = state["m_counts"], state["ran"]
    if not (isinstance(m_counts, dict) and all(isinstance(m, str) and m.isdigit() and _whole(c)
                                               for m, c in m_counts.items())):
        return f"expected m_counts from token counts M to whole numbers, got {m_counts!r:.80}"
    if not (isinstance(ran, dict) and all(isinstance(k, str) and _whole(c) for k, c in ran.items())):
        return f"expected ran from 'op:impl' to whole numbers, got {ran!r:.80}"
    if state["first_violation"] is not None and not isinstance(state["first_violation"], str):
        return f"expected first_violation a string or null, got {state['first_violation']!r:.80}"
    problems = state["provenance_problems"]
    if not (isinstance(problems, list) and all(isinstance(x, str) for x in problems)):
        return f"expected provenance_problems a list of strings, got {problems!r:.80}"
    return None


@dataclasses.dataclass
class RunStore:
    """A run directory's finished work: each arm's generations, the agreement rows and the commit log,
    read and checked together. Every question a commit record names must have both arms' generations
    and its agreement row: otherwise (a line changed by hand, a file replaced) the paired pass would
    redo the question and count its site counts twice, so :class:`RunStoreError` names the commit line."""

    generations: dict[str, SampleStore]
    agreement: AgreementStore
    commits: CommitLog

    @classmethod
    def open(cls, path: Path, arms: tuple[str, ...] = ("A", "B")) -> "RunStore":
        path = Path(path)
        store = cls({name: SampleStore(path / f"generations-{name}.jsonl") for name in arms},
                    AgreementStore(path / "agreement.jsonl"), CommitLog(path / "commits.jsonl"))
        for line, keys, doc_ids, digests in store.commits.lines:
            for name, gens in store.generations.items():
                missing = [k for k in keys if k not in gens.done]
                if missing:
                    raise RunStoreError(f"{store.commits.path}: line {line} commits {len(missing)} generation(s) of "
                                        f"arm {name} that {gens.path.name} lacks (first {missing[0][:12]}...); {DAMAGED}")
            missing_ids = [d for d in doc_ids if d not in store.agreement.done]
            if missing_ids:
                raise RunStoreError(f"{store.commits.path}: line {line} commits question(s) {missing_ids} whose "
                                    f"agreement row {store.agreement.path.name} lacks; {DAMAGED}")
            if digests is not None:
                now = committed_digests(store.generations, store.agreement, keys, doc_ids)
                changed = [name for name in now if digests.get(name) != now[name]]
                if changed:
                    raise RunStoreError(f"{store.commits.path}: line {line} commits records of questions {doc_ids} "
                                        f"that {', '.join(changed)} no longer hold{'s' if len(changed) == 1 else ''} as "
                                        f"committed (a line edited since?); {DAMAGED}")
        return store


def take_site_counts(engine: Engine, names) -> dict[str, dict]:
    """This batch's site counts of the arms ``names``, summed over the processes (real ranks), and a
    fresh count for the next batch."""
    mine = {}
    for name in names:
        mine[name] = engine.site.stats.get(name, SiteStats()).state()
        engine.site.stats[name] = SiteStats()
    group = engine.group
    parts = group.all_gather(mine) if group is not None else [mine]
    return {name: SiteStats.merged([p[name] for p in parts]).state() for name in names}


def eta_line(seconds: float, questions: int, arms: int, done: int) -> str:
    """The A/B's estimate, said once: the time left for the ``questions`` this invocation runs (on a resume,
    those not yet done), from the pace of its first ``done``."""
    m, s = divmod(round(seconds), 60)
    return (f"accval gsm8k: ETA ~{m}m {s}s for {questions} questions x {arms} arms "
            f"(from the pace of this session's first {done}, whose prompts are the longest)")


class Progress:
    """The one progress bar of a pass, on rank 0 (or the only process), counting answers: questions x
    arms, each counted as its generation ends (:class:`accval.gsm8k.engine.EndedRows`), so the bar
    moves per question within a batch. After the first batch it says an ETA once (:func:`eta_line`).

    With real DEP ranks rank 0 generates only its share of a batch's rows; it counts its own finished
    rows scaled to the whole batch (the bar says so) and takes the exact count when the batch's texts
    are gathered. Disabled (``show=False``: ``--quiet``, another rank) it shows and says nothing."""

    def __init__(self, questions: int, arms: int, desc: str, show: bool, scaled_over: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        from tqdm.auto import tqdm

        self.questions, self.arms, self.show, self.clock = questions, arms, show and questions > 0, clock
        if scaled_over:
            desc += f" [rank 0's rows, scaled to {scaled_over} processes]"
        # smoothing=0: the time left from the average pace since the start. The default moving average
        # follows the arm of the moment, and arms differ in pace (a plugged Triton kernel on a CPU: 100x)
        self.bar = tqdm(total=questions * arms, desc=desc, unit="answer", disable=not self.show, smoothing=0)
        self.t0 = clock()
        self.eta_said = False
        self._base = self._rows = self._mine = self._mine_done = 0

    def begin(self, rows: int, mine: int) -> None:
        """One arm's batch of ``rows`` rows starts, ``mine`` of them generated in this process."""
        self._base, self._rows, self._mine, self._mine_done = self.bar.n, rows, mine, 0

    def row_done(self) -> None:
        """One of this process's rows has its answer."""
        self._mine_done += 1
        self._to(self._base + min(self._rows, self._mine_done * self._rows // max(self._mine, 1)))

    def end(self) -> None:
        """The arm's batch is done in every process (its texts are gathered): the exact count."""
        self._to(self._base + self._rows)

    def questions_done(self, done: int) -> None:
        """``done`` questions have both arms' answers (a batch is committed); the first time, with
        questions left, say the ETA."""
        self._to(done * self.arms)
        if self.show and not self.eta_said and 0 < done < self.questions:
            self.eta_said = True
            left = (self.clock() - self.t0) / done * (self.questions - done)
            self.bar.write(eta_line(left, self.questions, self.arms, done), file=sys.stderr)

    def _to(self, n: int) -> None:
        if self.show and n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.close()


@dataclasses.dataclass
class Partner:
    """Arm B of a paired pass: each batch arm A generates, arm B generates the same prompts, and the
    two arms' logits over the gold answer teacher-forced after each prompt (from each arm's own
    prefill) give the question's agreement. ``target(doc)`` renders the gold answer as lm-eval does."""

    arm: Arm
    store: SampleStore
    agreement: AgreementStore
    target: Callable[[dict], str]
    commits: CommitLog
    on_commit: Callable[[], object] | None = None  # called after each batch's commit record is written


@register_model("accval-dsv4")
class ArmLM(LM):
    """Serves ``generate_until`` for one arm; gsm8k needs nothing else. With a :class:`Partner`, each
    batch also runs the partner arm and the agreement (a paired pass; the partner's own lm-eval pass
    then finds all its generations in its store)."""

    def __init__(self, engine: Engine, arm: Arm, store: SampleStore, batch_size: int = 8, max_gen_toks: int = 256,
                 progress: bool = True, partner: Partner | None = None):
        super().__init__()
        self.engine, self.arm, self.store = engine, arm, store
        self.batch_size, self.max_gen_toks, self.progress = batch_size, max_gen_toks, progress
        self.partner = partner
        self.resumed = 0
        self.generated = 0
        self._progress: Progress | None = None

    def _missing(self, key: str, doc_id: int) -> bool:
        p = self.partner
        if p is None:
            return key not in self.store.done
        return (key not in p.commits.keys or key not in self.store.done or key not in p.store.done
                or doc_id not in p.agreement.done)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
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
        self._check_room(todo)
        todo.sort(key=lambda k: -len(k[1]))  # similar lengths batch together
        show = not (disable_tqdm or not self.progress or (group is not None and not group.root))
        arms = self.arm.describe() + (f" and {self.partner.arm.describe()}" if self.partner is not None else "")
        desc = f"arm {self.arm.name}" + (f"+{self.partner.arm.name}" if self.partner else "") + f" ({arms})"
        dep_ranks = group is not None and self.engine.site.kind == "dep"
        progress = self._progress = Progress(len(todo), 2 if self.partner is not None else 1, desc, show,
                                             scaled_over=group.world if dep_ranks else None)
        stop.batches_begin()
        self._stop_if_asked(0, len(todo), progress)
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            groups: dict[tuple, list] = {}
            for item in chunk:
                groups.setdefault((tuple(item[2]), item[3]), []).append(item)
            for (until, max_toks), items in groups.items():
                contexts = [it[1] for it in items]
                if self.partner is None:
                    texts = self._generate(self.arm, contexts, list(until), max_toks)
                    self.store.add_many([(it[0], text) for it, text in zip(items, texts)])
                    continue
                p = self.partner
                targets = [it[5] for it in items]
                texts, forced_a = self._generate(self.arm, contexts, list(until), max_toks, targets)
                texts_b, forced_b = self._generate(p.arm, contexts, list(until), max_toks, targets)
                rows = {b: stats.token_agreement(forced_a[b], forced_b[b]) for b in forced_a}
                if group is not None:
                    rows = dict(kv for part in group.all_gather(list(rows.items())) for kv in part)
                site = take_site_counts(self.engine, (self.arm.name, p.arm.name))
                # the batch's records, then its commit: a crash between them leaves uncommitted records
                # that the next run redoes (and counts) once
                self.store.add_many([(it[0], texts[b]) for b, it in enumerate(items)])
                p.store.add_many([(it[0], texts_b[b]) for b, it in enumerate(items)])
                p.agreement.add_many({it[4]: rows[b] for b, it in enumerate(items)})
                keys, doc_ids = [it[0] for it in items], [it[4] for it in items]
                digests = committed_digests({self.arm.name: self.store, p.arm.name: p.store}, p.agreement, keys, doc_ids)
                p.commits.add(keys, doc_ids, site, digests)
                if p.on_commit is not None:
                    p.on_commit()
            progress.questions_done(i + len(chunk))
            self._stop_if_asked(i + len(chunk), len(todo), progress)
        progress.close()
        out = [self.store.done.get(k[0]) for k in keyed]
        return group.broadcast(out) if group is not None else out

    def _check_room(self, todo: list[tuple]) -> None:
        """``--max-gen-toks`` against the model's positions, before any batch runs: the longest prompt
        and ``max_gen_toks`` new tokens must fit (a batch is as wide as its longest prompt)."""
        positions = self.engine.max_positions
        if not positions:
            return
        longest: dict[int, int] = {}
        for _key, context, _until, max_toks, _doc_id, _target in todo:
            longest[max_toks] = max(longest.get(max_toks, 0), len(self.engine.encode(context)))
        for max_toks, width in longest.items():
            if width >= positions:
                raise ValueError(f"--num-fewshot: the longest prompt has {width} tokens, the model {positions} "
                                 "positions: no room for an answer (fewer examples make shorter prompts)")
            if width + max_toks > positions:
                raise ValueError(f"--max-gen-toks: expected 1 to {positions - width} for these prompts (the model's "
                                 f"{positions} positions less the longest prompt's {width} tokens), got {max_toks}")

    def _stop_if_asked(self, done: int, total: int, progress: Progress) -> None:
        """At a batch boundary of the paired pass: raise :class:`stop.Interrupted` when a stop was asked
        for (rank 0's view decides, so every process leaves at the same boundary). After the last batch
        there is nothing left to stop: the run goes on to its report."""
        if self.partner is None or done >= total:
            return
        stopping = stop.requested()
        if self.engine.group is not None:
            stopping = self.engine.group.broadcast(stopping)
        if stopping:
            progress.close()
            raise stop.Interrupted(f"stopped on request after {done} of {total} questions")

    def _generate(self, arm: Arm, contexts: list[str], until: list[str], max_toks: int, targets: list[str] | None = None):
        """One batch: its texts, and with ``targets`` also ``{row: teacher-forced logits}`` of the rows
        this process ran.

        DEP: each logical rank generates its own rows in a batch of their own, as a DEP rank decodes its own
        requests, left-padded to the whole batch's width; so a row's tokens follow from its rank's rows
        alone, whichever process hosts the rank (a CPU's matmuls sum in another order for another row
        count, and a batch of all ranks' rows moved answers with ``--ranks``). Real DEP ranks: each process
        generates the ranks it hosts (:func:`accval.site.sharding.process_rows`), then every process
        gathers all texts. TEP: every rank sees all tokens; the batch is generated whole (real TEP ranks:
        in every process; the site splits heads and groups and gathers the partial sums).

        Progress: each row of this process is counted as its answer ends; the batch is counted whole
        once every process has its texts."""
        group, site = self.engine.group, self.engine.site
        conts = None if targets is None else [" " + t for t in targets]
        progress = self._progress
        on_row_done = progress.row_done if progress is not None and progress.show else None
        if site.kind != "dep":
            if progress is not None:
                progress.begin(len(contexts), len(contexts))
            got = self.engine.generate(arm, contexts, until, max_toks, continuations=conts, on_row_done=on_row_done)
            if progress is not None:
                progress.end()
            if conts is None:
                return got
            if group is not None and not group.root:
                return got[0], {}  # TEP: rank 0's logits stand for the rows (every process has them all)
            return got[0], dict(enumerate(got[1]))
        width = max(len(self.engine.encode(c)) for c in contexts)
        rows = (list(range(len(contexts))) if group is None
                else sharding.process_rows(len(contexts), site.ranks, group.world, group.rank))
        if progress is not None:
            progress.begin(len(contexts), len(rows))
        by_rank: dict[int, list[int]] = {}
        for b in rows:
            by_rank.setdefault(sharding.row_rank(b, site.ranks), []).append(b)
        texts, forced = {}, {}
        for r, mine in sorted(by_rank.items()):
            got = self.engine.generate(arm, [contexts[b] for b in mine], until, max_toks, pad_to=width,
                                       row_ranks=[r] * len(mine),
                                       continuations=None if conts is None else [conts[b] for b in mine],
                                       on_row_done=on_row_done)
            got_texts, got_forced = (got, None) if conts is None else got
            texts.update(zip(mine, got_texts))
            if got_forced is not None:
                forced.update(zip(mine, got_forced))
        if group is not None:
            texts = dict(kv for part in group.all_gather(sorted(texts.items())) for kv in part)
        if progress is not None:
            progress.end()
        texts = [texts[b] for b in range(len(contexts))]
        return texts if conts is None else (texts, forced)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("accval-dsv4 serves generate_until tasks (gsm8k) only, not loglikelihood")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("accval-dsv4 serves generate_until tasks (gsm8k) only, not loglikelihood_rolling")
