"""The A/B's arms: what computes the ``o_a_proj`` site, and what ran there.

* ``bf16-fallback`` (arm A): :func:`accval.kernels.o_a_proj_bf16_fallback`, inverse RoPE in bf16 and a bf16 bmm
  against the dequantized FP8 weight;
* ``fp8-chain`` (arm B): :func:`accval.kernels.o_a_proj_fp8_chain` (:func:`fp8_chain`), the producer, a
  contract check of its buffers, then the consumer run as engines run it, on a chain backend of
  :data:`accval.kernels.CHAIN_BACKENDS`, optionally with plugged implementations or a catalog mutant;
* ``native``: the model's own code path, for the test that proves the site's replacement faithful.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

import torch

import accval.kernels as kernels
from accval.kernels import provenance
from accval.kernels.validation import contract_problems

PATHS = ("native", "bf16-fallback", "fp8-chain")
_CONSUMER_IMPL = {"triton": "triton", "torch": "torch", "emulated": "emulated"}


class UnknownBackend(ValueError):
    """An ``fp8-chain`` arm named a backend outside :data:`accval.kernels.CHAIN_BACKENDS` (``.choices``, ``.got``),
    so a command line can say which option to fix."""

    def __init__(self, arm: str, got):
        self.choices, self.got = sorted(kernels.CHAIN_BACKENDS), got
        super().__init__(f"arm {arm}: backend expected one of {self.choices}, got {got!r}")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of the A/B: what computes the ``o_a_proj`` site (a path of :data:`PATHS`) and, for the
    FP8 chain, on which backend and with which plugged implementations or catalog mutant. Invalid
    combinations raise ValueError here, once, whoever builds the arm (the A/B, the server, a test)."""

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
            raise UnknownBackend(self.name, self.backend)
        if (self.inject or self.producer or self.consumer) and self.path != "fp8-chain":
            raise ValueError(f"arm {self.name}: --inject, --producer and --consumer apply to the FP8 chain, not to {self.path!r}")

    def implementations(self):
        """``(producer, consumer)``: the plugged implementations (``accval.implementations`` wrappers) or
        None for the backend's own; ValueError when a name is unknown or the two read different recipes."""
        from accval.implementations import CONSUMERS, PRODUCERS

        def get(registry, name: str | None, flag: str):
            if not name:
                return None
            try:
                return registry.get(name)
            except KeyError as e:
                said = str(e).strip("'\"")  # a KeyError's message comes quoted
                raise ValueError(f"{flag} {name}: {said}") from None
            except ValueError as e:  # PluginError, or a module:attr that does not import
                raise ValueError(f"{flag} {name}: {e}") from None

        prod = get(PRODUCERS, self.producer, "--producer")
        cons = get(CONSUMERS, self.consumer, "--consumer")
        recipe = prod.recipe.name if prod is not None else "fp32-div"
        if cons is not None and not cons.reads(recipe):
            raise ValueError(f"--consumer {cons.name} reads {', '.join(cons.recipes)} scales; the producer "
                             f"({prod.name if prod else 'accval'}) writes {recipe}"
                             + ("" if prod else f"; add --producer reference:{cons.recipes[0]} (the mirror reference "
                                                "writes every recipe)"))
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
    #: calls whose output the arm's injected catalog defect changed (bits of the clean chain's output)
    inject_changed: int = 0

    def state(self) -> dict:
        """Everything, for a resumed run to continue counting (:meth:`from_state`)."""
        return {"calls": self.calls, "tokens": self.tokens, "m_counts": {str(k): v for k, v in self.m_counts.items()},
                "ran": dict(self.ran), "contract_violations": self.contract_violations,
                "first_violation": self.first_violation, "provenance_problems": list(self.provenance_problems),
                "inject_changed": self.inject_changed}

    @classmethod
    def from_state(cls, d: dict) -> "SiteStats":
        return cls(calls=d["calls"], tokens=d["tokens"], m_counts=collections.Counter({int(k): v for k, v in d["m_counts"].items()}),
                   ran=collections.Counter(d["ran"]), contract_violations=d["contract_violations"],
                   first_violation=d["first_violation"], provenance_problems=list(d["provenance_problems"]),
                   inject_changed=d.get("inject_changed", 0))  # not recorded before injected defects were checked

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
            out.inject_changed += part.inject_changed
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
            "provenance_problems": list(self.provenance_problems), "inject_changed_calls": self.inject_changed,
        }


def _stop_at_violation(prod, stats: Callable[[], SiteStats]):
    """A plugged producer as the chain calls it: outputs that are not the contract's buffers (or views over
    them) are counted and end the run with the producer's :class:`~accval.implementations.ContractViolation`
    (a regression: the CLI exits 1). Unlike a catalog mutant, whose wrong buffers are known to be
    consumable, a foreign kernel's may not be: the consumer could read past them or crash on them."""
    from accval.implementations import ContractViolation

    def produce(o, *args, **kwargs):
        try:
            return prod(o, *args, **kwargs)
        except ContractViolation as e:
            stats().contract_violations += 1
            stats().first_violation = stats().first_violation or f"M={o.shape[0]}: {e}"
            raise ContractViolation(f"at the model's o_a_proj (M={o.shape[0]}): {e}") from None

    return produce


def fp8_chain(arm: Arm, stats: Callable[[], SiteStats], plugged=None):
    """Arm B: :func:`accval.kernels.o_a_proj_fp8_chain` (the function the kernel suite tests) with the arm's
    backend, plugged implementations or catalog mutant, run as engines run it (the consumer trusts
    the producer's layout), counting contract violations between the two in ``stats()`` (the stats of
    the arm now running). ``(fn, expected)``: the site's per-call function and the implementation each
    op must report (:mod:`accval.kernels.provenance`). ``plugged``: ``arm.implementations()`` when the caller
    has resolved them already."""
    from accval import mutants

    produce, consumer_backend = kernels.CHAIN_BACKENDS[arm.backend]
    expected = {"producer": "torch-reference" if produce is kernels.inv_rope_fp8_quant_ref else "triton",
                "consumer": _CONSUMER_IMPL[consumer_backend]}
    prod, cons = plugged if plugged is not None else arm.implementations()
    producer = consumer = None
    if prod is not None:
        producer = _stop_at_violation(prod, stats)
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

    def chain(o, positions, cache, w_fp8, w_scale, n_groups, hpg, nope, rope):
        m, k = o.shape[0], hpg * o.shape[2]

        def run(producer, consumer, inspect=None):
            return kernels.o_a_proj_fp8_chain(o, positions, cache, w_fp8, w_scale, n_groups, hpg, nope, rope,
                                              is_neox=False, backend=arm.backend, check_contract=False,
                                              producer=producer, consumer=consumer, inspect=inspect)

        def count(fp8, scale):
            problems = contract_problems(fp8, scale, n_groups, m, k)
            if problems:
                stats().contract_violations += 1
                stats().first_violation = stats().first_violation or f"M={m}: {problems[0]}"

        out = run(producer, consumer, inspect=count)
        if arm.inject:  # did the defect change anything here? (a run that never exercises it cannot see it)
            with provenance.unrecorded():
                want = run(prod, cons)  # the chain without the defect
            if not torch.equal(out.contiguous().view(torch.int16), want.contiguous().view(torch.int16)):
                stats().inject_changed += 1
        return out

    return chain, expected
