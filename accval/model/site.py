"""The ``o_a_proj`` site of every DeepSeek-V4 attention layer, run by arm A or arm B under DEP or TEP.

transformers computes the attention output path inline in ``DeepseekV4Attention.forward``
(inverse RoPE on the trailing rope channels, interleaved pairs, then ``o_a_proj`` and ``o_b_proj``),
so :class:`OAProjSite` replaces that forward per layer. The replacement computes the attention
exactly as the model does (same submodules, same helpers from the modeling file) and hands the
attention output ``[B, S, H, D]``, before inverse RoPE, to the arm:

* arm ``bf16-fallback``: :func:`kernels.o_a_proj_bf16_fallback` (inverse RoPE in bf16, bf16 bmm
  against the dequantized FP8 weight);
* arm ``fp8-chain``: the producer, a contract check of its buffers, then the consumer run as engines
  run it (trusting the producer's layout), on a chain backend of :data:`kernels.CHAIN_BACKENDS`,
  optionally with a catalog mutant in place of the producer or the consumer;
* arm ``native``: the model's own code path, for the test that proves this replacement faithful.

Both arms use the same FP8 128x128-quantized ``o_a_proj`` weight; the model's own weight is set to
its dequantized value, so ``native`` and ``bf16-fallback`` compute the same function.

Sharding at this site is emulated in one process (8 ranks in a loop): **DEP** gives each rank its own
requests (batch rows ``b % ranks == rank``) with all groups, so every rank sees its own M; **TEP**
gives each rank ``G / ranks`` groups (their heads) for all tokens and sums the ranks' ``o_b_proj``
partial products in bf16, in rank order, as an all-reduce would. Padding tokens of left-padded
batches are excluded from M, as an engine would never see them (:meth:`OAProjSite.track_padding`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import types

import torch
import torch.nn.functional as F

import kernels
from kernels import provenance
from kernels.reference import dequantize_weight
from kernels.validation import contract_problems

PATHS = ("native", "bf16-fallback", "fp8-chain")
MODES = {"dep8": ("dep", 8), "tep8": ("tep", 8), "single": ("dep", 1)}
_CONSUMER_IMPL = {"triton": "triton", "torch": "torch", "emulated": "emulated"}


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str  # "A" or "B"
    path: str  # one of PATHS
    backend: str | None = None  # chain backend for fp8-chain
    inject: str | None = None  # catalog mutant id applied to this arm
    #: plugged implementations (names for accval.implementations' registries) replacing the backend's
    producer: str | None = None
    consumer: str | None = None

    def __post_init__(self):
        if self.path not in PATHS:
            raise ValueError(f"arm {self.name}: path expected one of {PATHS}, got {self.path!r}")
        if self.path == "fp8-chain" and self.backend not in kernels.CHAIN_BACKENDS:
            raise ValueError(f"arm {self.name}: backend expected one of {sorted(kernels.CHAIN_BACKENDS)}, got {self.backend!r}")
        if (self.inject or self.producer or self.consumer) and self.path != "fp8-chain":
            raise ValueError(f"arm {self.name}: --inject, --producer and --consumer apply to the FP8 chain, not to {self.path!r}")

    def implementations(self):
        """``(producer, consumer)``: the plugged implementations (``accval.implementations`` wrappers) or
        None for the backend's own; ValueError when a name is unknown or the two read different recipes."""
        from accval.implementations import CONSUMERS, PRODUCERS, PluginError

        try:
            prod = PRODUCERS.get(self.producer) if self.producer else None
            cons = CONSUMERS.get(self.consumer) if self.consumer else None
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
        except PluginError as e:
            raise ValueError(str(e)) from None
        recipe = prod.recipe.name if prod is not None else "fp32-div"
        if cons is not None and not cons.reads(recipe):
            raise ValueError(f"--consumer {cons.name} reads {', '.join(cons.recipes)} scales; the producer "
                             f"({prod.name if prod else 'accval'}) writes {recipe}")
        if prod is not None and cons is None and prod.recipe.packed:
            raise ValueError(f"--producer {prod.name} writes {recipe} scales, which accval's consumers do not read; "
                             f"add --consumer reference (the math reference reads every recipe)")
        return prod, cons

    def describe(self) -> str:
        if self.path != "fp8-chain":
            return self.path
        plugged = ", ".join(f"{k}={v}" for k, v in (("producer", self.producer), ("consumer", self.consumer)) if v)
        return (f"fp8-chain[{self.backend}" + (f"; {plugged}" if plugged else "") + "]"
                + (f" + mutant {self.inject}" if self.inject else ""))


@dataclasses.dataclass
class SiteStats:
    """What ran at the site for one arm: calls, token counts per call (M), provenance, contract."""

    calls: int = 0
    tokens: int = 0
    m_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    ran: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # "op:impl" -> calls
    contract_violations: int = 0
    first_violation: str | None = None
    provenance_problems: list[str] = dataclasses.field(default_factory=list)

    def state(self) -> dict:
        """Everything, for a resumed run to continue counting (:meth:`from_state`)."""
        return {"calls": self.calls, "tokens": self.tokens, "m_counts": {str(k): v for k, v in self.m_counts.items()},
                "ran": dict(self.ran), "contract_violations": self.contract_violations,
                "first_violation": self.first_violation, "provenance_problems": list(self.provenance_problems)}

    @classmethod
    def from_state(cls, d: dict) -> "SiteStats":
        return cls(calls=d["calls"], tokens=d["tokens"], m_counts=collections.Counter({int(k): v for k, v in d["m_counts"].items()}),
                   ran=collections.Counter(d["ran"]), contract_violations=d["contract_violations"],
                   first_violation=d["first_violation"], provenance_problems=list(d["provenance_problems"]))

    @classmethod
    def merged(cls, states: list[dict]) -> "SiteStats":
        """The sum of several processes' (or a resumed run's and this run's) counts."""
        out = cls()
        for d in states:
            part = cls.from_state(d)
            out.calls += part.calls
            out.tokens += part.tokens
            out.m_counts.update(part.m_counts)
            out.ran.update(part.ran)
            out.contract_violations += part.contract_violations
            out.first_violation = out.first_violation or part.first_violation
            for msg in part.provenance_problems:
                if msg not in out.provenance_problems and len(out.provenance_problems) < 5:
                    out.provenance_problems.append(msg)
        return out

    def to_json(self) -> dict:
        ms = sorted(self.m_counts)
        return {
            "calls": self.calls, "tokens": self.tokens,
            "m_min": ms[0] if ms else None, "m_max": ms[-1] if ms else None, "distinct_m": len(ms),
            "calls_m_ge_1024": sum(c for m, c in self.m_counts.items() if m >= 1024),
            "calls_m_not_multiple_of_4": sum(c for m, c in self.m_counts.items() if m % 4),
            "ran": dict(sorted(self.ran.items())),
            "contract_violations": self.contract_violations, "first_violation": self.first_violation,
            "provenance_problems": list(self.provenance_problems),
        }


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
        self.hosted = self.group.logical_ranks(self.kind) if self.group is not None else list(range(self.ranks))
        self._row_ranks: torch.Tensor | None = None
        cfg = model.config
        self.n_groups, self.rank_r = cfg.o_groups, cfg.o_lora_rank
        self.head_dim, self.rope_dim = cfg.head_dim, cfg.qk_rope_head_dim
        self.hpg = cfg.num_attention_heads // cfg.o_groups
        if self.kind == "tep" and self.n_groups % self.ranks:
            raise ValueError(f"mode {mode}: o_groups={self.n_groups} do not split over {self.ranks} TEP ranks")
        self.arm: Arm | None = None
        self.stats: dict[str, SiteStats] = {}
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._caches: dict[str, torch.Tensor] = {}
        self._pad_lens: torch.Tensor | None = None
        self._seen = 0
        self._real: torch.Tensor | None = None
        self._fn = None
        self._dequantized: dict[tuple, torch.Tensor] = {}
        self._expected: dict[str, str] = {}
        self._fp32_weights: dict = {}  # fp32_weight's cache for the TEP o_b_proj slices
        from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hf

        self._hf = hf
        layers = [m for m in model.modules() if isinstance(m, hf.DeepseekV4Attention)]
        if not layers:
            raise ValueError("model: no DeepseekV4Attention layers found (is this a DeepSeek-V4 model?)")
        for attn in layers:
            w = attn.o_a_proj.weight.detach()
            w_fp8, w_scale = kernels.quantize_weight_fp8(w.view(self.n_groups, self.rank_r, -1))
            self._weights[attn.layer_idx] = (w_fp8, w_scale)
            with torch.no_grad():  # the model's own path now computes with the same (dequantized) weight
                attn.o_a_proj.weight.copy_(dequantize_weight(w_fp8, w_scale, dtype=w.dtype).view_as(w))
            attn.forward = types.MethodType(functools.partial(_attention_forward, site=self), attn)
        if matmul == "fp32":  # after the o_a_proj weights are final (the fp32 copies follow later changes anyway)
            for mod in model.modules():
                if isinstance(mod, torch.nn.Linear):
                    mod.forward = types.MethodType(fp32_matmul_linear, mod)
                elif isinstance(mod, hf.DeepseekV4Experts):
                    mod.forward = _fp32_matmul_experts(mod.forward)
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
            self._fn, self._expected = self._chain(arm)

    def _bf16_fallback(self, o, pos, cache, w_fp8, w_scale, *args):
        """Arm A with each layer's weight dequantized once (as an engine does at load), not per call.
        Under :data:`MATMUL` ``fp32`` its bf16 bmm is an fp32 bmm of the same bf16 values rounded to bf16,
        like the model's own bf16 matmuls (the weight is kept as float32 copies of its bf16 values)."""
        fp32 = self.matmul == "fp32"
        key = (w_fp8.data_ptr(), w_fp8.storage_offset(), tuple(w_fp8.shape), w_scale.data_ptr(), fp32)
        w = self._dequantized.get(key)
        if w is None:
            w = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
            w = self._dequantized[key] = w.float() if fp32 else w
        return kernels.o_a_proj_bf16_fallback(o, pos, cache, w_fp8, w_scale, *args, is_neox=False, w_bf16=w,
                                              fp32_matmul=fp32)

    def _chain(self, arm: Arm):
        """Arm B: :func:`kernels.o_a_proj_fp8_chain` (the function the kernel suite tests) with the arm's
        backend, plugged implementations or catalog mutant, run as engines run it (the consumer trusts
        the producer's layout) while this site counts contract violations between the two."""
        from accval import mutants

        produce, consumer_backend = kernels.CHAIN_BACKENDS[arm.backend]
        expected = {"producer": "torch-reference" if produce is kernels.inv_rope_fp8_quant_ref else "triton",
                    "consumer": _CONSUMER_IMPL[consumer_backend]}
        prod, cons = arm.implementations()
        producer = consumer = None
        if prod is not None:
            producer = prod
            expected["producer"] = prod.expected_impl
        if cons is not None:
            consumer = cons
            expected["consumer"] = cons.expected_impl
        if arm.inject:
            role, fn = mutants.for_chain(arm.inject, arm.backend)
            if role == "producer":
                producer = fn
            else:
                consumer = fn
            expected[role] = getattr(fn, "accval_expected_impl", None)
        expected = {op: impl for op, impl in expected.items() if impl}
        stats = lambda: self.stats[arm.name]  # noqa: E731

        def chain(o, positions, cache, w_fp8, w_scale, n_groups, hpg, nope, rope):
            m, k = o.shape[0], hpg * o.shape[2]

            def count(fp8, scale):
                problems = contract_problems(fp8, scale, n_groups, m, k)
                if problems:
                    stats().contract_violations += 1
                    stats().first_violation = stats().first_violation or f"M={m}: {problems[0]}"

            return kernels.o_a_proj_fp8_chain(o, positions, cache, w_fp8, w_scale, n_groups, hpg, nope, rope,
                                              is_neox=False, backend=arm.backend, check_contract=False,
                                              producer=producer, consumer=consumer, inspect=count)

        return chain, expected

    # --- padding: which tokens of a left-padded batch are real ------------------------------------------

    def set_row_ranks(self, row_ranks: list[int] | None) -> None:
        """DEP over real ranks: the logical rank of each row of the next batches (None: row b is rank b % 8)."""
        self._row_ranks = None if row_ranks is None else torch.tensor(row_ranks, dtype=torch.long)

    def local_heads(self) -> slice:
        """TEP over real ranks: the attention heads of this process's logical ranks (all heads otherwise)."""
        if self.kind != "tep" or self.group is None:
            return slice(None)
        per_rank = self.n_groups // self.ranks * self.hpg
        return slice(self.hosted[0] * per_rank, (self.hosted[-1] + 1) * per_rank)

    def track_padding(self, pad_lens: list[int] | None, seen: int = 0) -> None:
        """Before a (batched) generate or forward: ``pad_lens[b]`` left-padding tokens of row b; None stops.
        ``seen``: the positions already in the cache the next forward continues (its first token's slot)."""
        if seen < 0:
            raise ValueError(f"track_padding: seen expected >= 0, got {seen}")
        self._pad_lens = None if pad_lens is None else torch.tensor(pad_lens, dtype=torch.long)
        self._seen = seen

    def _on_model_forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        emb = kwargs.get("inputs_embeds")
        b, s = (ids.shape[:2] if ids is not None else emb.shape[:2])
        if self._pad_lens is None:
            self._real = None
        else:
            if self._pad_lens.numel() != b:
                raise ValueError(f"track_padding: {self._pad_lens.numel()} rows announced, forward has batch {b}")
            idx = self._seen + torch.arange(s)
            self._real = idx[None, :] >= self._pad_lens[:, None]
            self._seen += s
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
            xt, pt = o[real], pos[real]
            m = xt.shape[0]
            gl = self.n_groups // self.ranks
            parts = []
            for i, r in enumerate(self.hosted):  # o holds the hosted ranks' heads, in rank order
                gs = slice(r * gl, (r + 1) * gl)
                lora = self._call(stats, xt[:, i * gl * self.hpg:(i + 1) * gl * self.hpg], pt, cache, w_fp8[gs],
                                  w_scale[gs], gl, nope)
                w_r = w_b[:, r * gl * self.rank_r:(r + 1) * gl * self.rank_r]
                parts.append(self._linear(lora.reshape(m, gl * self.rank_r), w_r))
            if self.group is not None:  # every process gets every rank's partial (blocks arrive in rank order)
                mine = torch.stack(parts).float()  # bf16 -> fp32 -> bf16 is exact; gloo has no bf16
                parts = [p.to(torch.bfloat16) for blk in self.group.all_gather_tensor(mine) for p in blk]
            total = None
            for part in parts:
                total = part if total is None else total + part  # the all-reduce, in rank order, in bf16
            out = o.new_zeros((b, s, w_b.shape[0]))
            out[real] = total
            return out
        lora = o.new_zeros((b, s, self.n_groups, self.rank_r))
        row_ranks = self._row_ranks if self._row_ranks is not None else torch.arange(b) % self.ranks
        if row_ranks.numel() != b:
            raise RuntimeError(f"OAProjSite: {row_ranks.numel()} row ranks set, batch has {b} rows")
        rows = row_ranks.to(o.device)[:, None].expand(b, s)
        for r in self.hosted:
            sel = real & (rows % self.ranks == r)
            if bool(sel.any()):
                lora[sel] = self._call(stats, o[sel], pos[sel], cache, w_fp8, w_scale, self.n_groups, nope)
        return attn.o_b_proj(lora.flatten(2))

    def _linear(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x @ w.T`` (``w`` a slice of a layer's weight) as the model's linear layers compute it under
        this site's :data:`MATMUL`."""
        if self.matmul == "fp32" and x.dtype == torch.bfloat16:
            return F.linear(x.float(), fp32_weight(self._fp32_weights, w)).to(x.dtype)
        return F.linear(x, w)

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


#: How the bf16 matmuls are computed (arm B's FP8 chain is the same under both):
#:   "model": as the model computes them (transformers' eager attention, bf16 ``nn.Linear``, bf16
#:   grouped matmuls of the MoE experts; arm A's bf16 bmm);
#:   "fp32": the attention's two matmuls (eager's arithmetic otherwise, :func:`fp32_matmul_eager_attention`),
#:   every bf16 ``nn.Linear`` (:func:`fp32_matmul_linear`), the experts' matmuls
#:   (:class:`Fp32Matmuls`) and arm A's bmm (``o_a_proj_bf16_fallback(fp32_matmul=True)``) are fp32
#:   matmuls of the same bf16 values, rounded to bf16: equal up to
#:   fp32 summation order, as a bf16 GEMM accumulates in fp32 and rounds once. CPUs without bf16
#:   units run bf16 matmuls ~10x slower than fp32 ones. Both arms of an A/B use the same one; the
#:   report names it.
MATMUL = ("model", "fp32")


def fp32_weight(cache: dict, w: torch.Tensor) -> torch.Tensor:
    """The fp32 copy of ``w`` (a parameter or a view of one), made once and remade when ``w`` changes
    (its ``_version``). Parameters outlive a call, so their address identifies them; an activation's
    address is reused by the next one, so activations are never kept (:func:`_is_weight`)."""
    key = (w.data_ptr(), w.storage_offset(), tuple(w.shape), w.stride())
    got = cache.get(key)
    if got is None or got[0] != w._version:
        got = cache[key] = (w._version, w.detach().float())
    return got[1]


def _is_weight(t: torch.Tensor) -> bool:
    """A parameter or a view of one (see :func:`fp32_weight`)."""
    return isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter)


def fp32_matmul_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``nn.Linear.forward`` for a bf16 layer as an fp32 matmul of the same bf16 values, rounded to bf16
    (the fp32 weight and bias are kept by :func:`fp32_weight`)."""
    if x.dtype != torch.bfloat16 or self.weight.dtype != torch.bfloat16:
        return F.linear(x, self.weight, self.bias)
    cache = self.__dict__.setdefault("_accval_fp32", {})
    bias = None if self.bias is None else fp32_weight(cache, self.bias)
    return F.linear(x.float(), fp32_weight(cache, self.weight), bias).to(x.dtype)


class Fp32Matmuls(torch.overrides.TorchFunctionMode):
    """Inside it, ``F.linear`` and grouped matmuls of two bf16 tensors run as fp32 matmuls of the same
    values, rounded to bf16 (the MoE experts' implementations call these; see :data:`MATMUL`). The
    fp32 copies of weights are kept (:func:`fp32_weight`)."""

    FUNCS = tuple(f for f in (F.linear, getattr(F, "grouped_mm", None), getattr(torch, "_grouped_mm", None)) if f)

    def __init__(self, cache: dict):
        super().__init__()
        self.cache = cache

    def _fp32(self, t: torch.Tensor) -> torch.Tensor:
        return fp32_weight(self.cache, t) if _is_weight(t) else t.float()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in self.FUNCS and len(args) >= 2 and isinstance(args[0], torch.Tensor) and isinstance(args[1], torch.Tensor)
                and args[0].dtype == args[1].dtype == torch.bfloat16):
            rest = [self._fp32(a) if isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 else a for a in args[2:]]
            return func(args[0].float(), self._fp32(args[1]), *rest, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def _fp32_matmul_experts(forward):
    """An experts module's ``forward`` with its matmuls under :class:`Fp32Matmuls`."""
    cache: dict = {}

    @functools.wraps(forward)
    def run(*args, **kwargs):
        with Fp32Matmuls(cache):
            return forward(*args, **kwargs)

    run.accval_fp32_matmuls = cache
    return run


#: Query rows per chunk of :func:`fp32_matmul_eager_attention` for prompts (measured on a 2-core EPYC,
#: B=8, 16 heads, 900 tokens, window 512: 64 rows 0.40 s, 128 rows 0.48 s, unchunked 1.84 s).
QUERY_CHUNK = 64


def fp32_matmul_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' DeepSeek-V4 eager attention (shared KV heads, sinks), its matmuls done in fp32.

    Mirrors ``eager_attention_forward`` line by line (``suites/ab/test_site.py`` compares them); the
    KV heads are not repeated: each KV head's query heads are stacked into one matmul.

    A prompt longer than :data:`QUERY_CHUNK` runs in chunks of query rows, each against only the key
    columns its mask rows allow (a sliding window of 512 over a 900-token prompt leaves about half):
    the columns left out add exact zeros to eager's softmax sums and products, so the result differs
    from the unchunked one by summation order only. Chunked calls return no attention weights (as
    transformers' fused attentions do not).
    """
    sq = query.shape[2]
    if not isinstance(attention_mask, torch.Tensor) or sq <= QUERY_CHUNK:
        return _fp32_eager_attention(module, query, key, value, attention_mask, scaling)
    allowed = attention_mask > torch.finfo(attention_mask.dtype).min if attention_mask.is_floating_point() else attention_mask
    outs = []
    for c0 in range(0, sq, QUERY_CHUNK):
        c1 = min(sq, c0 + QUERY_CHUNK)
        cols = allowed[..., c0:c1, :].flatten(0, -2).any(0).nonzero()
        k0, k1 = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)  # rows with no key: the sink only
        out, _ = _fp32_eager_attention(module, query[:, :, c0:c1], key[:, :, k0:k1], value[:, :, k0:k1],
                                       attention_mask[..., c0:c1, k0:k1], scaling)
        outs.append(out)
    return torch.cat(outs, dim=1), None


def _fp32_eager_attention(module, query, key, value, attention_mask, scaling):
    b, h, sq, d = query.shape
    kvh, sk = key.shape[1], key.shape[2]
    qf = query.float().reshape(b, kvh, (h // kvh) * sq, d)
    kf = key.float()
    vf = kf if value is key else value.float()  # DeepSeek-V4 passes its shared K=V tensor as both
    attn_weights = (qf @ kf.transpose(2, 3)).to(query.dtype).reshape(b, h, sq, sk) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    sinks = module.sinks.reshape(1, -1, 1, 1).expand(b, -1, sq, -1)
    combined_logits = torch.cat([attn_weights, sinks], dim=-1)
    combined_logits = combined_logits - combined_logits.max(dim=-1, keepdim=True).values
    probs = F.softmax(combined_logits, dim=-1, dtype=combined_logits.dtype)
    scores = probs[..., :-1].to(value.dtype)
    out = (scores.float().reshape(b, kvh, (h // kvh) * sq, sk) @ vf).to(value.dtype)
    return out.reshape(b, h, sq, value.shape[-1]).transpose(1, 2).contiguous(), scores


def _attention_forward(attn, hidden_states, position_embeddings, position_ids, attention_mask, cache=None, *, site,
                       **kwargs):
    """``DeepseekV4Attention.forward`` up to the attention output, then :meth:`OAProjSite.o_proj`.

    Mirrors transformers' forward step by step (checked against the installed modeling file by
    ``suites/ab/test_site.py``: with arm ``native`` the logits are bit-identical to the unpatched model).
    """
    hf = site._hf
    if "past_key_values" in kwargs:
        cache = kwargs.pop("past_key_values")
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, attn.head_dim)
    cos, sin = position_embeddings[attn.rope_layer_type]
    q_residual = attn.q_a_norm(attn.q_a_proj(hidden_states))
    q = attn.q_b_norm(attn.q_b_proj(q_residual).view(*hidden_shape).transpose(1, 2))
    q = hf.apply_rotary_pos_emb(q, cos, sin)
    kv = attn.kv_norm(attn.kv_proj(hidden_states)).view(*hidden_shape).transpose(1, 2)
    kv = hf.apply_rotary_pos_emb(kv, cos, sin)
    if cache is not None:
        kv = cache.update(kv, kv, attn.layer_idx, kwargs=kwargs)[0]
    block_bias = None
    if attn.compressor is not None:
        compressed_kv, block_bias = attn.compressor(hidden_states, q_residual, position_ids, cache, attn.layer_idx)
        kv = torch.cat([kv, compressed_kv], dim=2)
    if isinstance(attention_mask, torch.Tensor) and kv.shape[2] > attention_mask.shape[-1]:
        if block_bias is not None:
            attention_mask = torch.cat([attention_mask, block_bias.to(attention_mask.dtype)], dim=-1)
        else:
            attention_mask = F.pad(attention_mask, (0, kv.shape[2] - attention_mask.shape[-1]), value=0.0)
    interface = hf.ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, hf.eager_attention_forward)
    if site.matmul == "fp32":
        if interface is not hf.eager_attention_forward:
            raise RuntimeError(f"--matmul fp32 mirrors the eager attention implementation; this model runs "
                               f"{attn.config._attn_implementation!r}")
        interface = fp32_matmul_eager_attention
    heads = site.local_heads()
    module, sinks = attn, attn.sinks
    if heads != slice(None):  # TEP over real ranks: this process's heads only (per-head math is unchanged)
        q, sinks = q[:, heads], attn.sinks[heads]
        module = types.SimpleNamespace(num_key_value_groups=q.shape[1] // kv.shape[1], sinks=sinks,
                                       training=attn.training)
    attn_output, attn_weights = interface(module, q, kv, kv, attention_mask, dropout=0.0, scaling=attn.scaling,
                                          sliding_window=attn.sliding_window, s_aux=sinks, **kwargs)
    return site.o_proj(attn, attn_output, position_ids, cos, sin), attn_weights
