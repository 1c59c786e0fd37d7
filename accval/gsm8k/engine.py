"""The model an arm runs on: generation and teacher forcing through the ``o_a_proj`` site."""

from __future__ import annotations

from collections.abc import Callable

import torch

from accval.model.builtin import LoadedModel
from accval.site import Arm, OAProjSite, sharding
from accval.site.sharding import PREFILL_TOKENS

#: the oldest transformers whose DeepSeek-V4 ``generate`` takes ``cache=`` (pyproject.toml pins the same)
MIN_TRANSFORMERS = "5.24"


def check_transformers(version: str) -> None:
    """A RuntimeError naming both versions when ``version`` is older than :data:`MIN_TRANSFORMERS`
    (5.17 fails deep inside ``generate``: "model_kwargs are not used by the model: ['cache']")."""
    from packaging.version import InvalidVersion, Version

    try:
        old = Version(version) < Version(MIN_TRANSFORMERS)
    except InvalidVersion:
        old = True
    if old:
        raise RuntimeError(f"the engine needs transformers>={MIN_TRANSFORMERS} (DeepSeek-V4 generation with a "
                           f"prebuilt cache), this environment has {version}: pip install 'transformers>={MIN_TRANSFORMERS}'")


def cut_at_stops(text: str, until: list[str]) -> str:
    """The text before the first stop string (lm-eval leaves this to the model)."""
    cut = len(text)
    for s in until:
        i = text.find(s) if s else -1
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


class Cancelled(Exception):
    """A generation stopped because its ``should_stop()`` said so (its client gone, its server stopping)."""


class EndedRows:
    """Which rows of a ``model.generate`` batch have ended, and the stop strings' rule.

    A row ends at the step that emits the end-of-text token (transformers' ``EosTokenCriteria``, which
    generate also applies) or completes a stop string in its new tokens. The stop strings are this
    criterion's to apply, on the tokens after the prompt only, as lm-eval and OpenAI-style servers match
    them; transformers' ``StopStringCriteria`` on the whole sequence also matched a stop string that
    straddles the prompt's end, and ended such an answer after a token or two. Generate pads a row from the
    step after it ends. ``done`` (a CPU bool tensor, one per row, updated in place) is what the ``o_a_proj``
    site reads to leave ended rows out of M, as an engine drops finished requests from its batch;
    :meth:`check` confirms afterwards that generate ended the same rows at the same steps (a row left out
    of M while generate continued it would decode from a zeroed projection). ``on_done()`` is called once
    per row as it ends and, for rows still running, from :meth:`finish`; ``should_stop()`` is polled at
    every step and raises :class:`Cancelled`."""

    def __init__(self, rows: int, eos_token_id: int | None, stop_strings: list[str], tokenizer, prompt_width: int,
                 on_done: Callable[[], None] | None = None, should_stop: Callable[[], bool] | None = None):
        from transformers.generation.stopping_criteria import EosTokenCriteria, StopStringCriteria

        self.done = torch.zeros(rows, dtype=torch.bool)
        self.ended_at: list[int | None] = [None] * rows  # the step (1: the first new token) that ended each row
        self.steps = 0
        self.width = prompt_width
        self.on_done, self.should_stop = on_done, should_stop
        self._eos = EosTokenCriteria(eos_token_id) if eos_token_id is not None else None
        self._stops = StopStringCriteria(tokenizer, stop_strings) if stop_strings else None

    def step(self, input_ids: torch.Tensor, scores) -> torch.Tensor:
        """After each step: the rows that end now (on ``input_ids``' device)."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("generation cancelled")
        self.steps += 1
        now = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self._eos is not None:
            now |= self._eos(input_ids, scores)
        if self._stops is not None:
            now |= self._stops(input_ids[:, self.width:], scores)
        ended = now.cpu() & ~self.done
        for b in ended.nonzero().flatten().tolist():
            self.ended_at[b] = self.steps
            if self.on_done is not None:
                self.on_done()
        self.done |= ended
        return now

    def criteria(self):
        """This rule as ``model.generate``'s ``stopping_criteria`` (pass generate no ``stop_strings``)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        record = self

        class Record(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return record.step(input_ids, scores)

        return StoppingCriteriaList([Record()])

    def finish(self) -> None:
        """Generation ended: ``on_done()`` for each row still running (stopped by the token limit)."""
        for _ in range(int((~self.done).sum())):
            if self.on_done is not None:
                self.on_done()
        self.done.fill_(True)

    def check(self, new: torch.Tensor, pad: int | None) -> None:
        """``new [B, steps]``: the tokens generate returned. Every row recorded as ended must be padded from
        the step after it, as generate pads the rows it ended; a RuntimeError otherwise."""
        for b, t in enumerate(self.ended_at):
            if t is not None and bool((new[b, t:] != pad).any()):
                raise RuntimeError(f"row {b}: accval recorded it ended at step {t} and left it out of the o_a_proj "
                                   f"site's M, but model.generate went on decoding it (tokens "
                                   f"{new[b, t:t + 8].tolist()}); this transformers' stopping rule differs from "
                                   "accval.gsm8k.engine.EndedRows")


class Engine:
    def __init__(self, loaded: LoadedModel, mode: str, device: str | torch.device, group=None, matmul: str = "model",
                 prefill_tokens: int = PREFILL_TOKENS):
        import transformers

        check_transformers(transformers.__version__)
        sharding.check_prefill_budget(prefill_tokens)
        self.prefill_tokens = prefill_tokens
        self.loaded = loaded
        self.model = loaded.model
        self.tok = loaded.tokenizer
        self.device = torch.device(device)
        self.group = group  # accval.gsm8k.ranks.Group when the ranks are real processes
        self.site = OAProjSite(self.model, mode, group, matmul)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False)
        return ([self.tok.bos_token_id] if bos and self.tok.bos_token_id is not None else []) + ids

    def generate(self, arm: Arm, contexts: list[str], until: list[str], max_gen_toks: int, pad_to: int | None = None,
                 row_ranks: list[int] | None = None, continuations: list[str] | None = None,
                 on_row_done: Callable[[], None] | None = None):
        """Greedy continuations of ``contexts``, cut at the first stop string.

        The contexts are prefilled, all but their last tokens, as an engine's ranks batch their requests:
        each logical rank puts its rows into one left-padded forward while their tokens stay within
        ``prefill_tokens`` (:meth:`prefill_plan`), so its M is their real tokens. The rows' caches are
        then laid out as one left-padded batch cache and ``model.generate`` decodes the batch from there,
        starting with the contexts' last tokens.

        ``continuations`` (one per context): also returns, per row, the arm's next-token logits over
        the continuation teacher-forced after the context (``[len, vocab]`` float32 on the CPU), from a
        copy of the row's prefill cache, for the A/B's agreement without a second prefill.

        Real DEP ranks: ``pad_to`` pads to the whole batch's width (so each row sees exactly the tokens
        it sees in the one-process batch) and ``row_ranks`` names each row's logical rank.

        Decoding, a rank's M is its rows still running: a row that has ended (:class:`EndedRows`) leaves
        the site's M from the next step, as an engine drops a finished request from its batch.

        ``on_row_done()`` is called once per row as its answer ends (:class:`EndedRows`), for progress."""
        out, width, forced = self.generate_tokens(arm, contexts, until, max_gen_toks, pad_to, row_ranks, continuations,
                                                  on_row_done)
        texts = [cut_at_stops(t, until) for t in self.tok.batch_decode(out[:, width:].cpu(), skip_special_tokens=True)]
        return texts if continuations is None else (texts, forced)

    def complete(self, arm: Arm, context: str, until: list[str], max_gen_toks: int,
                 should_stop: Callable[[], bool] | None = None) -> tuple[str, str, int, int]:
        """One greedy completion as a completions server returns it: ``(text, finish_reason, prompt_tokens,
        completion_tokens)``, the text as :meth:`generate` gives it, ``finish_reason`` ``"stop"`` (the end
        of text or a stop string) or ``"length"`` (``max_gen_toks`` reached). ``should_stop()`` is polled
        before the prefill and at every decoding step; when true, :class:`Cancelled` is raised."""
        out, width, _ = self.generate_tokens(arm, [context], until, max_gen_toks, should_stop=should_stop)
        new = out[0, width:].tolist()
        eos, pad = self.tok.eos_token_id, self.tok.pad_token_id
        end = next((i for i, t in enumerate(new) if t in (eos, pad)), None)
        n = len(new) if end is None else end + (new[end] == eos)
        raw = self.tok.batch_decode(out[:, width:].cpu(), skip_special_tokens=True)[0]
        text = cut_at_stops(raw, until)
        return text, "stop" if end is not None or text != raw else "length", width, n

    @torch.no_grad()
    def generate_tokens(self, arm: Arm, contexts: list[str], until: list[str], max_gen_toks: int,
                        pad_to: int | None = None, row_ranks: list[int] | None = None,
                        continuations: list[str] | None = None, on_row_done: Callable[[], None] | None = None,
                        should_stop: Callable[[], bool] | None = None):
        """:meth:`generate` before decoding: ``(ids, width, forced)``, ``ids [B, width + new]`` the
        left-padded contexts and the new tokens (pad after a row's end), ``forced`` the teacher-forced
        logits (None without ``continuations``). ``should_stop``: as in :meth:`complete`."""
        if not contexts or not all(isinstance(c, str) for c in contexts):
            raise ValueError(f"contexts: expected a non-empty list of strings, got {contexts!r:.80}")
        if max_gen_toks < 1:
            raise ValueError(f"max_gen_toks: expected >= 1, got {max_gen_toks}")
        if continuations is not None and (len(continuations) != len(contexts)
                                          or not all(isinstance(c, str) and c for c in continuations)):
            raise ValueError(f"continuations: expected {len(contexts)} non-empty strings (one per context), "
                             f"got {continuations!r:.80}")
        if row_ranks is not None and len(row_ranks) != len(contexts):
            raise ValueError(f"row_ranks: expected {len(contexts)} ranks (one per context), got {len(row_ranks)}")
        self.site.set_arm(arm)
        enc = [self.encode(c) for c in contexts]
        if not all(enc):
            raise ValueError("contexts: every context must encode to at least one token")
        conts = None if continuations is None else [self.encode(c, bos=False) for c in continuations]
        width = max([len(e) for e in enc] + [pad_to or 0])
        longest = max(width + max_gen_toks, max((len(e) + len(c) for e, c in zip(enc, conts)), default=0) if conts else 0)
        if self.max_positions and longest > self.max_positions:
            raise ValueError(f"prompt of {width} tokens + {max_gen_toks} new exceeds the model's "
                             f"{self.max_positions} positions")
        ranks = list(row_ranks) if row_ranks is not None else sharding.row_ranks(len(enc), self.site.ranks)
        lengths = [len(e) - 1 for e in enc]  # what each row prefills: all but its last token
        plan = self.prefill_plan(lengths, ranks)
        held: list[tuple] = [(None, 0, 0)] * len(enc)  # per row: (its forward's cache, its row there, its tokens)
        forced = []
        try:
            for rows, w in plan:
                if should_stop is not None and should_stop():
                    raise Cancelled("generation cancelled before its prefill")
                cache = self._prefill(enc, rows, w, [ranks[b] for b in rows])
                for i, b in enumerate(rows):
                    held[b] = (cache, i, lengths[b])
            for b, e in enumerate(enc if conts is not None else []):  # each row's own copy of its prefill
                if should_stop is not None and should_stop():
                    raise Cancelled("generation cancelled before its teacher-forced pass")
                self.site.set_row_ranks([ranks[b]])
                branch = self._left_padded_cache([held[b]], lengths[b])
                ids = torch.tensor([[e[-1]] + conts[b][:-1]], device=self.device)
                self.site.track_padding([0], seen=len(e) - 1)
                out = self.model(input_ids=ids, cache=branch, use_cache=True,
                                 position_ids=torch.arange(len(e) - 1, len(e) - 1 + ids.shape[1], device=self.device)[None])
                forced.append(out.logits[0].float().cpu())
            pad = self.tok.pad_token_id
            ids = torch.full((len(enc), width), pad, dtype=torch.long)
            mask = torch.zeros((len(enc), width), dtype=torch.long)
            for i, e in enumerate(enc):
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            batch_cache = self._left_padded_cache(held, width - 1)
            self.site.track_padding([width - len(e) for e in enc], seen=width - 1)
            self.site.set_row_ranks(row_ranks)
            stops = [s for s in until if s]
            ended = EndedRows(len(enc), self.tok.eos_token_id, stops, self.tok, width, on_row_done, should_stop)
            self.site.set_ended(ended.done)
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), cache=batch_cache,
                max_new_tokens=max_gen_toks, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=pad, eos_token_id=self.tok.eos_token_id, stopping_criteria=ended.criteria())
            ended.check(out[:, width:].cpu(), pad if pad is not None else self.tok.eos_token_id)
            ended.finish()
        finally:
            self.site.track_padding(None)
            self.site.set_row_ranks(None)
            self.site.set_ended(None)
        return out, width, (forced if conts is not None else None)

    def prefill_plan(self, lengths: list[int], row_ranks: list[int]) -> list[tuple[list[int], int]]:
        """The prefill's forwards for rows of ``lengths`` tokens on logical ranks ``row_ranks``: each
        forward's rows (:func:`accval.site.sharding.prefill_steps` with ``prefill_tokens``; under TEP
        every rank sees all of a forward's tokens) and its width, its longest row."""
        keys = [0] * len(lengths) if self.site.kind == "tep" else list(row_ranks)
        steps = sharding.prefill_steps(lengths, keys, self.prefill_tokens)
        return [(rows, max(lengths[b] for b in rows)) for rows in steps]

    def _prefill(self, enc: list[list[int]], rows: list[int], width: int, ranks: list[int]):
        """One prefill forward of ``rows`` (all but each row's last token), left-padded to ``width``,
        on logical ranks ``ranks``: a new cache holding them."""
        pad = self.tok.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        pads = []
        for i, b in enumerate(rows):
            n = len(enc[b]) - 1
            ids[i, width - n:] = torch.tensor(enc[b][:-1])
            mask[i, width - n:] = 1
            pos[i, width - n:] = torch.arange(n)
            pads.append(width - n)
        cache = self._new_cache()
        self.site.set_row_ranks(ranks)
        self.site.track_padding(pads)
        padded = any(pads)  # a forward without padding runs as a plain one (no mask)
        self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device) if padded else None,
                   position_ids=pos.to(self.device), cache=cache, use_cache=True, logits_to_keep=1)
        return cache

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _left_padded_cache(self, held: list[tuple], seen: int):
        """Prefilled rows as the cache of one left-padded batch whose rows end together at position
        ``seen``: ``held[b]`` is ``(cache, row, n)``, row ``row`` of ``cache`` holding row b's ``n``
        tokens right-aligned (``cache`` None when n is 0). Each layer keeps its last ``seen`` slots (a
        sliding window layer its last ``window - 1``), each row right-aligned in them, zeros before
        (slots the attention mask marks as padding)."""
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        batch = self._new_cache()
        for li, layer in enumerate(batch.layers):
            if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
                raise RuntimeError(f"layer {li}: accval lays out caches of plain and sliding-window attention, not "
                                   f"{type(layer).__name__}")
            rows = [(c.layers[li], i, n) if c is not None and n else (None, 0, 0) for c, i, n in held]
            filled = [r for r, _, _ in rows if r is not None and r.is_initialized and r.keys.shape[-2]]
            if not filled:
                continue  # every context is one token: nothing cached yet
            sliding = isinstance(layer, DynamicSlidingWindowLayer)
            size = min(seen, layer.sliding_window - 1) if sliding else seen
            ref = filled[0]
            keys = ref.keys.new_zeros((len(rows), ref.keys.shape[1], size, ref.keys.shape[3]))
            values = ref.values.new_zeros((len(rows), ref.values.shape[1], size, ref.values.shape[3]))
            for b, (r, i, n) in enumerate(rows):
                n = min(n, r.keys.shape[-2], size) if r is not None and r.is_initialized else 0
                if n:
                    keys[b, :, size - n:] = r.keys[i, :, -n:]
                    values[b, :, size - n:] = r.values[i, :, -n:]
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            if sliding:
                layer.cumulative_length = seen
        return batch
