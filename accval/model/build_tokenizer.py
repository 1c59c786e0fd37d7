"""Rebuild the built-in model's tokenizer (``assets/tokenizer``): a 512-entry byte-level BPE.

Reproducible: ``python -m accval.model.build_tokenizer --data-dir ../shared/data/gsm8k``. It is
trained with Hugging Face ``tokenizers`` on gsm8k's *train* split formatted as the task's prompts
("Question: ...\\nAnswer: ...", so test questions never shape it) and saved as a
``PreTrainedTokenizerFast`` directory. Only the vocabulary and merges are shipped, not the data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VOCAB_SIZE = 512
SPECIALS = ("<s>", "</s>", "<pad>")  # ids 0, 1, 2: bos, eos, pad (the built-in config's ids)
ASSET_DIR = Path(__file__).parent / "assets" / "tokenizer"


def build(train_jsonl: Path, out_dir: Path = ASSET_DIR) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows = [json.loads(line) for line in train_jsonl.read_text().splitlines() if line.strip()]
    texts = (f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in rows)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1],
                                   pad_token=SPECIALS[2], padding_side="left")
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, type=Path, help="directory with gsm8k train.jsonl")
    ap.add_argument("--out", type=Path, default=ASSET_DIR)
    args = ap.parse_args()
    print(build(args.data_dir / "train.jsonl", args.out))


if __name__ == "__main__":
    main()
