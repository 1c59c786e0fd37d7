"""The sentinel's data: gsm8k-format jsonl splits, its tokenizer, and 5-shot training sequences.

``write_splits(dir)`` writes ``train.jsonl`` (the task's few-shot pool) and ``test.jsonl`` (the
held-out questions) with gsm8k's ``question``/``answer`` fields, so lm-eval's gsm8k task reads them
through ``--data-dir`` exactly as it reads gsm8k. The training pool continues the train stream past
the few-shot pool, so no test question is ever trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import problems

N_TEST = 1000  # held-out questions (the accuracy target is stated over 1000)
N_FEWSHOT_POOL = 2000  # train.jsonl: what lm-eval draws the 5 shots from
SEED = 0
SHOTS = 5
VOCAB_SIZE = 512
SPECIALS = ("<s>", "</s>", "<pad>")


def example_text(q: str, a: str) -> str:
    """One labelled example exactly as lm-eval's gsm8k renders it (doc_to_text + ' ' + doc_to_target)."""
    return f"Question: {q}\nAnswer: {a}"


def default_dir() -> Path:
    root = Path(os.environ.get("ACCVAL_CACHE", Path.home() / ".cache" / "accval"))
    return root / f"sentinel-data-v{problems.GENERATOR_VERSION}-seed{SEED}"


def write_splits(out_dir: Path | None = None, n_test: int = N_TEST, n_train: int = N_FEWSHOT_POOL,
                 seed: int = SEED) -> Path:
    """Write (or verify and reuse) the splits. Returns the directory."""
    out_dir = Path(out_dir) if out_dir is not None else default_dir()
    train, test = problems.splits(n_train, n_test, seed)
    want = {name: "".join(json.dumps(p.row()) + "\n" for p in rows) for name, rows in
            (("train.jsonl", train), ("test.jsonl", test))}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in want.items():
        path = out_dir / name
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
    meta = {"generator_version": problems.GENERATOR_VERSION, "seed": seed, "n_train": n_train, "n_test": n_test,
            "sha256": {k: hashlib.sha256(v.encode()).hexdigest() for k, v in want.items()}}
    meta_text = json.dumps(meta, indent=1) + "\n"
    meta_path = out_dir / "sentinel.json"
    if not meta_path.is_file() or meta_path.read_text() != meta_text:
        meta_path.write_text(meta_text)
    return out_dir


def training_pool(n: int, seed: int = SEED) -> list[problems.Problem]:
    """``n`` training problems: the train stream after the few-shot pool, none equal to a test question."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int (training problems), got {n!r}")
    train, _ = problems.splits(N_FEWSHOT_POOL + n, N_TEST, seed)
    return train[N_FEWSHOT_POOL:]


def build_tokenizer(out_dir: Path, seed: int = SEED):
    """A byte-level BPE with every digit its own token (arithmetic is learnt digit by digit), trained on
    the few-shot pool only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    train, _ = problems.splits(N_FEWSHOT_POOL, N_TEST, seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((example_text(p.question, p.answer) + "\n\n" for p in train), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1],
                                   pad_token=SPECIALS[2], padding_side="left")
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def encode_example(tok, q: str, a: str) -> tuple[list[int], list[int]]:
    """Token ids of one labelled example and a 0/1 loss mask that is 0 over the question's own text
    (random by construction, nothing to learn) and 1 over the prompt words, the answer and the rest."""
    enc = tok(example_text(q, a), add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], _loss_mask(enc["offset_mapping"], q)


def _loss_mask(offsets, question: str) -> list[int]:
    lo = len("Question: ")
    hi = lo + len(question)
    return [0 if (s >= lo and e <= hi) else 1 for s, e in offsets]


def encode_examples(tok, rows: list[problems.Problem]) -> dict[str, tuple[list[int], list[int]]]:
    """:func:`encode_example` for many problems in one batched tokenizer call, keyed by question."""
    texts = [example_text(p.question, p.answer) for p in rows]
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    return {p.question: (ids, _loss_mask(offs, p.question))
            for p, ids, offs in zip(rows, enc["input_ids"], enc["offset_mapping"])}


def separator_ids(tok) -> list[int]:
    """The few-shot delimiter "\\n\\n" as it tokenizes *between* examples (two newline tokens: the
    byte-level split keeps a newline run before a word apart from it)."""
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    return nl + nl


def sequence(tok, examples: list[problems.Problem], encoded: dict | None = None) -> tuple[list[int], list[int]]:
    """BOS, then the examples joined by the few-shot delimiter and followed by it: the token stream of
    lm-eval's 5-shot gsm8k context with every question answered (``suites/ab/test_sentinel.py`` checks
    it equals tokenizing the joined text)."""
    sep = separator_ids(tok)
    ids, mask = [tok.bos_token_id], [0]
    for p in examples:
        e_ids, e_mask = encoded[p.question] if encoded is not None else encode_example(tok, p.question, p.answer)
        ids += e_ids + sep
        mask += e_mask + [1] * len(sep)
    return ids, mask
