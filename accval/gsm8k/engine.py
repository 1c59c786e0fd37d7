"""The model an arm runs on: generation and teacher forcing through the ``o_a_proj`` site."""

from __future__ import annotations

import torch

from accval import stats
from accval.model.builtin import LoadedModel
from accval.model.site import Arm, OAProjSite


def cut_at_stops(text: str, until: list[str]) -> str:
    """The text before the first stop string (lm-eval leaves this to the model)."""
    cut = len(text)
    for s in until:
        i = text.find(s) if s else -1
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


class Engine:
    def __init__(self, loaded: LoadedModel, mode: str, device: str | torch.device, group=None, matmul: str = "model"):
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

    @torch.no_grad()
    def generate(self, arm: Arm, contexts: list[str], until: list[str], max_gen_toks: int, pad_to: int | None = None,
                 row_ranks: list[int] | None = None) -> list[str]:
        """Greedy continuations of ``contexts`` (one left-padded batch), cut at the first stop string.

        Real DEP ranks: ``pad_to`` pads to the whole batch's width (so each row sees exactly the tokens
        it sees in the one-process batch) and ``row_ranks`` names each row's logical rank."""
        if not contexts or not all(isinstance(c, str) for c in contexts):
            raise ValueError(f"contexts: expected a non-empty list of strings, got {contexts!r:.80}")
        if max_gen_toks < 1:
            raise ValueError(f"max_gen_toks: expected >= 1, got {max_gen_toks}")
        self.site.set_arm(arm)
        enc = [self.encode(c) for c in contexts]
        width = max([len(e) for e in enc] + [pad_to or 0])
        if self.max_positions and width + max_gen_toks > self.max_positions:
            raise ValueError(f"prompt of {width} tokens + {max_gen_toks} new exceeds the model's "
                             f"{self.max_positions} positions")
        pad = self.tok.pad_token_id
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, width - len(e):] = torch.tensor(e)
            mask[i, width - len(e):] = 1
        self.site.track_padding([width - len(e) for e in enc])
        self.site.set_row_ranks(row_ranks)
        try:
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_gen_toks,
                do_sample=False, temperature=None, top_p=None, top_k=None, stop_strings=[s for s in until if s],
                tokenizer=self.tok, pad_token_id=pad, eos_token_id=self.tok.eos_token_id)
        finally:
            self.site.track_padding(None)
            self.site.set_row_ranks(None)
        texts = self.tok.batch_decode(out[:, width:].cpu(), skip_special_tokens=True)
        return [cut_at_stops(t, until) for t in texts]

    @torch.no_grad()
    def teacher_forced(self, arm_a: Arm, arm_b: Arm, context: str, continuation: str,
                       row_rank: int | None = None) -> tuple[int, int, float]:
        """``(tokens, top1_agreeing, kl_sum)`` of the two arms' next-token distributions over ``continuation``
        (one row; under real DEP ranks ``row_rank`` is the logical rank it runs on, one this process hosts)."""
        ctx = self.encode(context)
        cont = self.encode(continuation, bos=False)
        ids = torch.tensor([ctx + cont], device=self.device)
        logits = []
        self.site.set_row_ranks(None if row_rank is None else [row_rank])
        try:
            for arm in (arm_a, arm_b):
                self.site.set_arm(arm)
                out = self.model(input_ids=ids, use_cache=False).logits[0]
                logits.append(out[len(ctx) - 1: len(ctx) + len(cont) - 1].float().cpu())
        finally:
            self.site.set_row_ranks(None)
        return stats.token_agreement(logits[0], logits[1])
