"""Implementations under test, and the adapter that states what one must accept and return.

The kernel suite runs its properties against *a* producer and *a* consumer, chosen by name from
these registries (``pytest suites/kernel --producer NAME --consumer NAME``; the default is accval's
own Triton kernels). A name is a registered entry or any importable ``"module:attr"``.

The contract (DOMAIN.md section 1) a plugged implementation must meet:

**Producer** ``fn(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
quant_group_size, is_neox[, block_tokens_m=None]) -> (fp8, scale)``, positional in that order;
``o [M, G*hpg, D]`` bf16, ``positions [M]`` int, ``cos_sin_cache`` fp32 ``[max_pos, rope_dim]``.
Returns ``fp8 [G, M, hpg*D]`` float8_e4m3fn contiguous and ``scale [G, hpg*D/128, pad4(M)]`` fp32
contiguous with zero rows past M, equal to the legacy two-step reference. ``block_tokens_m`` is
optional; when accepted, the suite forces every block size through it.

**Consumer** ``fn(a, a_scale, b, b_scale) -> out [G, M, N]`` bf16 (an ``out=`` keyword is used when
accepted), ``a_scale`` in the producer's layout, ``b``/``b_scale`` from ``kernels.quantize_weight_fp8``.

Optional attributes on ``fn`` the adapter reads:
  * ``accval_expected_impl``: the ``kernels.provenance`` impl name a call must record (proves no
    silent fallback); the built-ins set it.
  * ``accval_devices``: device types it can run on (default ``("cpu", "cuda")``); asked for any
    other, it must raise RuntimeError, not fall back.
  * ``accval_op``: the torch custom op behind it, for ``torch.library.opcheck`` and fake checks.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch

import kernels

from .registry import Registry


class PluginError(ValueError):
    """A plugged implementation cannot be called as the contract requires."""


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_bindable(kind: str, name: str, fn: object, n_positional: int) -> None:
    if not callable(fn):
        raise PluginError(f"{kind} {name!r}: expected a callable, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins / torch ops: cannot introspect, the first call will tell
    try:
        sig.bind(*range(n_positional))
    except TypeError as e:
        raise PluginError(
            f"{kind} {name!r} cannot be called with the contract's {n_positional} positional arguments "
            f"(signature {sig}): {e}. See accval.implementations for the contract."
        ) from None


@dataclasses.dataclass(frozen=True)
class Producer:
    name: str
    fn: Callable
    expected_impl: str | None
    devices: tuple[str, ...]
    accepts_block_tokens_m: bool
    op: object | None

    def __call__(self, o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, is_neox=True,
                 block_tokens_m=None):
        kwargs = {"block_tokens_m": block_tokens_m} if (block_tokens_m is not None and self.accepts_block_tokens_m) else {}
        out = self.fn(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, 128, is_neox, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise PluginError(f"producer {self.name!r}: expected to return (fp8, scale) tensors, got {type(out).__name__}")
        return out


@dataclasses.dataclass(frozen=True)
class Consumer:
    name: str
    fn: Callable
    expected_impl: str | None
    devices: tuple[str, ...]
    accepts_out: bool
    op: object | None

    def __call__(self, a, a_scale, b, b_scale, out=None):
        if out is not None and self.accepts_out:
            res = self.fn(a, a_scale, b, b_scale, out=out)
        else:
            res = self.fn(a, a_scale, b, b_scale)
            if out is not None:
                out.copy_(res)
                res = out
        if not isinstance(res, torch.Tensor):
            raise PluginError(f"consumer {self.name!r}: expected to return a tensor, got {type(res).__name__}")
        return res


def _wrap_producer(name: str, fn: object) -> Producer:
    _check_bindable("producer", name, fn, 9)
    return Producer(name, fn, getattr(fn, "accval_expected_impl", None), tuple(getattr(fn, "accval_devices", ("cpu", "cuda"))),
                    _accepts(fn, "block_tokens_m"), getattr(fn, "accval_op", None))


def _wrap_consumer(name: str, fn: object) -> Consumer:
    _check_bindable("consumer", name, fn, 4)
    return Consumer(name, fn, getattr(fn, "accval_expected_impl", None), tuple(getattr(fn, "accval_devices", ("cpu", "cuda"))),
                    _accepts(fn, "out"), getattr(fn, "accval_op", None))


PRODUCERS: Registry[Producer] = Registry("producer", _wrap_producer)
CONSUMERS: Registry[Consumer] = Registry("consumer", _wrap_consumer)


# --- built-ins ----------------------------------------------------------------------------------------


def accval_producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                    quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    """accval's fused Triton producer (``kernels.inv_rope_fp8_quant``)."""
    return kernels.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                      quant_group_size, is_neox, block_tokens_m=block_tokens_m)


accval_producer.accval_expected_impl = "triton"
accval_producer.accval_op = torch.ops.accval.inv_rope_fp8_quant


def reference_producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                       quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    """The legacy two-step path in torch (``kernels.inv_rope_fp8_quant_ref``)."""
    return kernels.inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                          quant_group_size, is_neox, block_tokens_m=block_tokens_m)


reference_producer.accval_expected_impl = "torch-reference"


def triton_consumer(a, a_scale, b, b_scale, out=None):
    """accval's grouped Triton FP8 block-scaled bmm."""
    return kernels.fp8_block_bmm(a, a_scale, b, b_scale, out, backend="triton")


triton_consumer.accval_expected_impl = "triton"
triton_consumer.accval_op = torch.ops.accval.fp8_block_bmm


def torch_consumer(a, a_scale, b, b_scale, out=None):
    """``torch._scaled_mm`` blockwise, one call per group (CUDA only)."""
    return kernels.fp8_block_bmm(a, a_scale, b, b_scale, out, backend="torch")


torch_consumer.accval_expected_impl = "torch"
torch_consumer.accval_devices = ("cuda",)

def emulated_consumer(a, a_scale, b, b_scale, out=None):
    """The Triton consumer's arithmetic in torch, any device (arm B of the A/B on a CPU)."""
    return kernels.fp8_block_bmm(a, a_scale, b, b_scale, out, backend="emulated")


emulated_consumer.accval_expected_impl = "emulated"

PRODUCERS.register("accval", accval_producer)
PRODUCERS.register("reference", reference_producer)
CONSUMERS.register("accval", triton_consumer)
CONSUMERS.register("torch", torch_consumer)
CONSUMERS.register("emulated", emulated_consumer)


def _register_mutants() -> None:
    from . import mutants

    for m in mutants.CATALOG.values():
        (PRODUCERS if m.role == "producer" else CONSUMERS).register(f"mutant:{m.id}", f"accval.mutants:{m.attr}")


_register_mutants()
