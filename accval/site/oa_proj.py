"""The ``o_a_proj`` site of every DeepSeek-V4 attention layer, run by an arm under DEP or TEP.

transformers computes the attention output path inline in ``DeepseekV4Attention.forward``
(inverse RoPE on the trailing rope channels, interleaved pairs, then ``o_a_proj`` and ``o_b_proj``),
so :class:`OAProjSite` replaces that forward per layer (:func:`accval.site.attention.attention_forward`).
The replacement computes the attention exactly as the model does (same submodules, same helpers from
the modeling file) and hands the attention output ``[B, S, H, D]``, before inverse RoPE, to the arm
(:mod:`accval.site.arms`).

Both arms use the same FP8 128x128-quantized ``o_a_proj`` weight; the model's own weight is set to
its dequantized value, so ``native`` and ``bf16-fallback`` compute the same function.

Sharding at this site is emulated in one process (the logical ranks in a loop) or spread over real
processes, by the rules of :mod:`accval.site.sharding`: **DEP** gives each rank its own requests with
all groups, so every rank sees its own M; **TEP** gives each rank ``G / ranks`` groups (their heads)
for all tokens and sums the ranks' ``o_b_proj`` partial products (:mod:`accval.site.exchange`).
Padding tokens of left-padded batches are excluded from M, as an engine would never see them
(:meth:`OAProjSite.track_padding`), and so are rows whose answer has ended, as an engine drops finished
requests from its batch (:meth:`OAProjSite.set_ended`).
"""

from __future__ import annotations

import functools
import types

import torch

import accval.kernels as kernels
from accval.kernels import provenance
from accval.kernels.reference import dequantize_weight

from . import exchange, fp32, sharding
from .arms import Arm, SiteStats, fp8_chain
from .attention import attention_forward
from .fp32 import MATMUL
from .sharding import MODES


class OAProjSite:
    """Installs the arm-switchable attention output path into every layer of ``model``."""

    def __init__(self, model: torch.nn.Module, mode: str, group=None, matmul: str = "model"):
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {sorted(MODES)}, got {mode!r}")
        if matmul not in MATMUL:
            raise ValueError(f"matmul: expected one of {MATMUL}, got {matmul!r}")
        self.matmul = matmul
        self.model = model
        self.mode = mode
        self.kind, self.ranks = MODES[mode]
        # real ranks (accval.gsm8k.ranks.Group): this process hosts some of the logical ranks; None: all
        self.group = group if group is not None and group.world > 1 else None
        if self.group is not None and self.ranks % self.group.world:
            raise ValueError(f"mode {mode}: {self.ranks} ranks do not split over {self.group.world} processes")
        self.hosted = (sharding.hosted_ranks(self.kind, self.ranks, self.group.world, self.group.rank)
                       if self.group is not None else list(range(self.ranks)))
        self._row_ranks: torch.Tensor | None = None
        cfg = model.config
        self.n_groups, self.rank_r = cfg.o_groups, cfg.o_lora_rank
        self.head_dim, self.rope_dim = cfg.head_dim, cfg.qk_rope_head_dim
        self.hpg = cfg.num_attention_heads // cfg.o_groups
        if self.kind == "tep":
            sharding.check_tep(self.n_groups, self.ranks, mode)
        self.arm: Arm | None = None
        self.stats: dict[str, SiteStats] = {}
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._caches: dict[str, torch.Tensor] = {}
        self._pad_lens: torch.Tensor | None = None
        self._ended: torch.Tensor | None = None
        self._seen = 0
        self._real: torch.Tensor | None = None
        self._fn = None
        self._dequantized: dict[tuple, torch.Tensor] = {}
        self._expected: dict[str, str] = {}
        self._fp32_weights: dict = {}  # fp32.fp32_weight's cache for the TEP o_b_proj slices
        from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hf

        self._hf = hf
        layers = [m for m in model.modules() if isinstance(m, hf.DeepseekV4Attention)]
        if not layers:
            raise ValueError("model: no DeepseekV4Attention layers found (is this a DeepSeek-V4 model?)")
        self._o_dtype = layers[0].o_a_proj.weight.dtype  # the attention output's, o's
        for attn in layers:
            w = attn.o_a_proj.weight.detach()
            w_fp8, w_scale = kernels.quantize_weight_fp8(w.view(self.n_groups, self.rank_r, -1))
            self._weights[attn.layer_idx] = (w_fp8, w_scale)
            with torch.no_grad():  # the model's own path now computes with the same (dequantized) weight
                attn.o_a_proj.weight.copy_(dequantize_weight(w_fp8, w_scale, dtype=w.dtype).view_as(w))
            attn.forward = types.MethodType(functools.partial(attention_forward, site=self), attn)
        if matmul == "fp32":  # after the o_a_proj weights are final (the fp32 copies follow later changes anyway)
            fp32.install(model, hf.DeepseekV4Experts)
        inner = model.model if hasattr(model, "model") else model
        inner.register_forward_pre_hook(self._on_model_forward, with_kwargs=True)

    # --- arms ----------------------------------------------------------------------------------------

    def set_arm(self, arm: Arm) -> None:
        self.arm = arm
        self.stats.setdefault(arm.name, SiteStats())
        if arm.path == "native":
            self._fn, self._expected = None, {}
        elif arm.path == "bf16-fallback":
            self._fn = self._bf16_fallback
            self._expected = {"o_a_proj": "bf16-fallback"}
        else:
            plugged = arm.implementations()
            self._check_declaration(plugged[0])
            self._fn, self._expected = fp8_chain(arm, lambda: self.stats[arm.name], plugged)

    def _check_declaration(self, prod) -> None:
        """A plugged producer must declare what the model's o_a_proj calls it with (GPT-J RoPE, the model's
        dtype and head dims): refused here, before any question, instead of failing in the first batch."""
        if prod is None:
            return
        dtype = self._o_dtype
        why = prod.uncovered(head_dim=self.head_dim, rope_dim=self.rope_dim, is_neox=False, dtype=dtype)
        if why is not None:
            raise ValueError(f"--producer: the model's o_a_proj calls it with GPT-J RoPE, {str(dtype).removeprefix('torch.')} "
                             f"o, head_dim {self.head_dim}, rope_dim {self.rope_dim}; {why}")

    def _bf16_fallback(self, o, pos, cache, w_fp8, w_scale, *args):
        """Arm A with each layer's weight dequantized once (as an engine does at load), not per call.
        Under :data:`accval.site.fp32.MATMUL` ``fp32`` its bf16 bmm is an fp32 bmm of the same bf16
        values rounded to bf16, like the model's own bf16 matmuls (the weight is kept as float32 copies
        of its bf16 values)."""
        fp32_matmul = self.matmul == "fp32"
        key = (w_fp8.data_ptr(), w_fp8.storage_offset(), tuple(w_fp8.shape), w_scale.data_ptr(), fp32_matmul)
        w = self._dequantized.get(key)
        if w is None:
            w = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
            w = self._dequantized[key] = w.float() if fp32_matmul else w
        return kernels.o_a_proj_bf16_fallback(o, pos, cache, w_fp8, w_scale, *args, is_neox=False, w_bf16=w,
                                              fp32_matmul=fp32_matmul)

    # --- padding: which tokens of a left-padded batch are real ------------------------------------------

    def set_row_ranks(self, row_ranks: list[int] | None) -> None:
        """DEP over real ranks: the logical rank of each row of the next batches (None: each row's
        :func:`accval.site.sharding.row_rank`)."""
        self._row_ranks = None if row_ranks is None else torch.tensor(row_ranks, dtype=torch.long)

    def local_heads(self) -> slice:
        """TEP over real ranks: the attention heads of this process's logical ranks (all heads otherwise)."""
        if self.kind != "tep" or self.group is None:
            return slice(None)
        first, last = (sharding.tep_heads(r, self.n_groups, self.ranks, self.hpg)
                       for r in (self.hosted[0], self.hosted[-1]))
        return slice(first.start, last.stop)

    def track_padding(self, pad_lens: list[int] | None, seen: int = 0) -> None:
        """Before a (batched) generate or forward: ``pad_lens[b]`` left-padding tokens of row b; None stops.
        ``seen``: the positions already in the cache the next forward continues (its first token's slot)."""
        if seen < 0:
            raise ValueError(f"track_padding: seen expected >= 0, got {seen}")
        self._pad_lens = None if pad_lens is None else torch.tensor(pad_lens, dtype=torch.long)
        self._seen = seen

    def set_ended(self, ended: torch.Tensor | None) -> None:
        """While a batch decodes: ``ended[b]`` true once row b's answer has ended (a CPU bool tensor its
        owner updates in place between forwards); each forward leaves those rows out of M, as an engine
        drops finished requests from its batch. None stops."""
        if ended is not None and (not isinstance(ended, torch.Tensor) or ended.dtype != torch.bool or ended.dim() != 1):
            raise TypeError(f"set_ended: expected a 1-d bool tensor or None, got {ended!r:.80}")
        self._ended = ended

    def _on_model_forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        emb = kwargs.get("inputs_embeds")
        b, s = (ids.shape[:2] if ids is not None else emb.shape[:2])
        if self._pad_lens is None and self._ended is None:
            self._real = None
            return None
        real = torch.ones((b, s), dtype=torch.bool)
        if self._pad_lens is not None:
            if self._pad_lens.numel() != b:
                raise ValueError(f"track_padding: {self._pad_lens.numel()} rows announced, forward has batch {b}")
            idx = self._seen + torch.arange(s)
            real = idx[None, :] >= self._pad_lens[:, None]
            self._seen += s
        if self._ended is not None:
            if self._ended.numel() != b:
                raise ValueError(f"set_ended: {self._ended.numel()} rows announced, forward has batch {b}")
            real = real & ~self._ended[:, None]
        self._real = real
        return None

    # --- the site --------------------------------------------------------------------------------------

    def _cos_sin_cache(self, attn, n_pos: int, dtype, device) -> torch.Tensor:
        key = attn.rope_layer_type
        cache = self._caches.get(key)
        if cache is None or cache.shape[0] < n_pos or cache.device != device:
            rot = self.model.model.rotary_emb
            inv_freq = getattr(rot, f"{key}_inv_freq").to(device=device, dtype=torch.float)
            scaling = getattr(rot, f"{key}_attention_scaling")
            n = max(n_pos, 2 * (cache.shape[0] if cache is not None else 1024))
            freqs = torch.arange(n, device=device).float()[:, None] * inv_freq[None, :]
            # the model's rounding: cos/sin in fp32, scaled, cast to the activation dtype
            cos = (freqs.cos() * scaling).to(dtype).float()
            sin = (freqs.sin() * scaling).to(dtype).float()
            cache = self._caches[key] = torch.cat([cos, sin], dim=-1).contiguous()
        return cache

    def o_proj(self, attn, o: torch.Tensor, position_ids: torch.Tensor, cos, sin) -> torch.Tensor:
        """``o [B, S, H, D]`` (attention output before inverse RoPE) -> ``[B, S, hidden]``."""
        if self.arm is None:
            raise RuntimeError("OAProjSite: no arm set (call set_arm first)")
        b, s, h, d = o.shape
        if self.arm.path == "native":
            x = self._hf.apply_rotary_pos_emb(o.transpose(1, 2), cos, -sin).transpose(1, 2)
            return attn.o_b_proj(attn.o_a_proj(x.reshape(b, s, self.n_groups, -1)).flatten(2))
        stats = self.stats[self.arm.name]
        pos = position_ids.expand(b, s)
        real = self._real.to(o.device) if self._real is not None else torch.ones((b, s), dtype=torch.bool, device=o.device)
        if real.shape != (b, s):
            raise RuntimeError(f"OAProjSite: padding mask {tuple(real.shape)} does not match the batch {(b, s)}")
        cache = self._cos_sin_cache(attn, int(pos.max().item()) + 1, o.dtype, o.device)
        w_fp8, w_scale = self._weights[attn.layer_idx]
        nope = d - self.rope_dim
        w_b = attn.o_b_proj.weight
        if self.kind == "tep":
            if not bool(real.any()):  # every row has ended (generate may run a step past the last one)
                return o.new_zeros((b, s, w_b.shape[0]))
            xt, pt = o[real], pos[real]
            m = xt.shape[0]
            first = self.local_heads().start or 0  # o holds the hosted ranks' heads, in rank order
            parts = []
            for r in self.hosted:
                gs = sharding.tep_groups(r, self.n_groups, self.ranks)
                hs = sharding.tep_heads(r, self.n_groups, self.ranks, self.hpg)
                gl = gs.stop - gs.start
                lora = self._call(stats, xt[:, hs.start - first:hs.stop - first], pt, cache, w_fp8[gs],
                                  w_scale[gs], gl, nope)
                w_r = w_b[:, sharding.tep_lora_columns(r, self.n_groups, self.ranks, self.rank_r)]
                parts.append(fp32.linear(lora.reshape(m, gl * self.rank_r), w_r, self.matmul, self._fp32_weights))
            out = o.new_zeros((b, s, w_b.shape[0]))
            out[real] = exchange.tep_all_reduce(parts, self.group)
            return out
        lora = o.new_zeros((b, s, self.n_groups, self.rank_r))
        row_ranks = (self._row_ranks if self._row_ranks is not None
                     else torch.tensor(sharding.row_ranks(b, self.ranks), dtype=torch.long))
        if row_ranks.numel() != b:
            raise RuntimeError(f"OAProjSite: {row_ranks.numel()} row ranks set, batch has {b} rows")
        rows = row_ranks.to(o.device)[:, None].expand(b, s)
        for r in self.hosted:
            sel = real & (rows % self.ranks == r)
            if bool(sel.any()):
                lora[sel] = self._call(stats, o[sel], pos[sel], cache, w_fp8, w_scale, self.n_groups, nope)
        return attn.o_b_proj(lora.flatten(2))

    def _call(self, stats: SiteStats, o, pos, cache, w_fp8, w_scale, n_groups, nope):
        m = o.shape[0]
        stats.calls += 1
        stats.tokens += m
        stats.m_counts[m] += 1
        with provenance.capture() as ran:
            out = self._fn(o.contiguous(), pos, cache, w_fp8, w_scale, n_groups, self.hpg, nope, self.rope_dim)
        impls = {}
        for run in ran:  # arm A's fp32-matmul mode is named: it is not the bf16 bmm a GPU runs
            variant = " fp32-matmul" if run.mode.endswith(" fp32-matmul") else ""
            stats.ran[f"{run.op}:{run.impl}{variant}"] += 1
            impls.setdefault(run.op, run.impl)
        for op, want in self._expected.items():
            got = impls.get(op)
            if got != want and len(stats.provenance_problems) < 5:
                msg = f"arm {self.arm.name} asked for {op} {want!r}, ran {got!r}"
                if msg not in stats.provenance_problems:
                    stats.provenance_problems.append(msg)
        return out
