"""Implementations under test, the capabilities they declare, and the adapter to the contract.

The kernel suite runs its properties against *a* producer and *a* consumer, chosen by name from
these registries (``pytest suites/kernel --producer NAME --consumer NAME``; the default is accval's
own Triton kernels). A name is a registered entry or any importable ``"module:attr"``.

The contract (``docs/contract.md``) a plugged implementation must meet:

**Producer** ``fn(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
quant_group_size, is_neox[, block_tokens_m=None]) -> (fp8, scale)``, positional in that order;
``o [M, G*hpg, D]`` bf16, ``positions [M]`` int, ``cos_sin_cache`` fp32 ``[max_pos, rope_dim]``.
It returns ``fp8 [G, M, hpg*D]`` float8_e4m3fn contiguous and the scales ``[G, hpg*D/128, pad4(M)]``
contiguous with zero rows past M, in its recipe's storage (:mod:`accval.kernels.recipes`).
``block_tokens_m`` is optional; when the signature names it, the suite forces every block size through it
(a bare ``**kwargs`` does not count). The kernel suite gives the producer copies of its inputs (same
layout), so writing into them fails the layout contract alone.

**Consumer** ``fn(a, a_scale, b, b_scale) -> out [G, M, N]`` bf16 (an ``out=`` keyword is used when
named in its signature), ``a_scale`` in the producer's layout, ``b``/``b_scale`` from ``accval.kernels.quantize_weight_fp8``.

Attributes on ``fn`` that declare what it is (all optional):
  * ``accval_recipe``: the quantization recipe (``"fp32-div"`` default, ``"fp32-rcp"``, ``"ue8m0"``,
    ``"ue8m0-packed"``). A consumer names the recipe whose scales it reads, or a tuple of them.
  * ``accval_exact``: the producer claims bit-equality with its recipe's mirror reference (default
    False; accval's built-ins set True). Otherwise it is held to the graded bounds (every code within
    one FP8 ULP of the mirror's quantization at its own scale, every scale within the recipe's
    tolerance, the dequantized values within one ULP of the exact inverse RoPE).
  * ``accval_rope_layouts``: subset of ``("neox", "gptj")`` (default both).
  * ``accval_dtypes``: the dtypes of ``o`` it takes, a subset of ``("bfloat16", "float16", "float32")``
    (names or torch dtypes; default all three). The model's ``o`` is bf16.
  * ``accval_head_dims``, ``accval_rope_dims``: tuples (default: everything the suite draws).
  * ``accval_output``: ``"gmk"`` (the contract's buffers, default) or ``"mgk-view"`` (``fp8`` as an
    ``[M, G, K]`` view and the scales as an ``[M, G, K/128]`` view over storage that must still be
    the contract's physical layout, which is what a consumer reads).
  * ``accval_amax_floor``: the producer's amax floor when it differs from its recipe's default.
  * ``accval_positions``: ``"any"`` (default: any 1-d view, read through its stride) or ``"contiguous"``
    (the kernel reads ``positions`` as if dense; it is then handed ``positions.contiguous()``, by the
    suite and the A/B alike, and the strided-positions properties skip, saying so).
  * ``accval_positions_dtypes``: the dtypes of ``positions`` it takes, a subset of ``("int32", "int64")``
    (default both). Positions of the other one are handed to it converted (same strides), by the suite
    and the A/B alike.
  * ``accval_expected_impl``: the impl name each call must record with
    ``accval.kernels.provenance.record("producer" or "consumer", impl, detail)`` (proves no silent
    fallback); the built-ins set it. Without it the suite records ``plugged <name>`` for each call itself.
  * ``accval_devices``: device types it can run on (default ``("cpu", "cuda")``); asked for any
    other, it must raise (RuntimeError, ValueError or TypeError), not fall back. The kernel suite runs
    its properties on the device it has (a CUDA GPU, else the CPU) and skips them where the
    implementation does not declare that device; one property checks it raises there.
  * ``accval_op``: the torch custom op behind it, for ``torch.library.opcheck`` and fake checks; a
    producer's op is checked with the arguments the producer passes to it (any schema); a consumer's op of
    the shape ``op(a, a_scale, b, b_scale) -> Tensor`` with those four, any other with what the consumer passes it.
Any other ``accval_*`` attribute is refused (a misspelt declaration would otherwise be ignored).
Cases outside a declaration are skipped with the reason, and the run ends with one summary line
per implementation (``accval.pytest_plugin``).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch

import accval.kernels as kernels
from accval.kernels.constants import FP8_DTYPE, QUANT_BLOCK, SUPPORTED_HEAD_DIMS, pad4
from accval.kernels.recipes import RECIPE_NAMES, Recipe, get_recipe
from accval.kernels.validation import strides_match

from .registry import Registry


class PluginError(ValueError):
    """A plugged implementation cannot be called as the contract requires, or declares nonsense."""


class ContractViolation(AssertionError, ValueError):
    """A producer's outputs are not the contract's buffers (or views over them): a failed property in the
    kernel suite (an AssertionError), a one-line error of the A/B (a ValueError, exit 2)."""


LAYOUTS = ("neox", "gptj")
OUTPUTS = ("gmk", "mgk-view")
#: the dtypes of ``o`` a producer may declare (``accval_dtypes``)
DTYPES = ("bfloat16", "float16", "float32")
#: the dtypes of ``positions`` a producer may declare (``accval_positions_dtypes``)
POSITIONS_DTYPES = ("int32", "int64")
#: the declarations each role reads; any other ``accval_*`` attribute is a PluginError
PRODUCER_ATTRS = ("accval_recipe", "accval_exact", "accval_rope_layouts", "accval_dtypes", "accval_head_dims",
                  "accval_rope_dims", "accval_output", "accval_amax_floor", "accval_positions", "accval_positions_dtypes",
                  "accval_expected_impl",
                  "accval_devices", "accval_op")
CONSUMER_ATTRS = ("accval_recipe", "accval_expected_impl", "accval_devices", "accval_op")
#: how a producer reads ``positions`` (``accval_positions``)
POSITIONS = ("any", "contiguous")
#: What the suite draws when a producer declares nothing (head dims are the producer's own rule).
SUITE_HEAD_DIMS = SUPPORTED_HEAD_DIMS
SUITE_ROPE_DIMS = (2, 16, 32, 64, 96, 128)


def _accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn``'s signature names the keyword ``name``. A bare ``**kwargs`` does not count: a wrapper
    ``def f(*args, **kwargs)`` says nothing of what the function it forwards to takes."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params and params[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def private_copy(t):
    """A copy of tensor ``t`` with its shape, strides, storage offset and the contents of its storage up to
    its last element (gaps between rows included), so a kernel sees the same layout, alignment and
    padding; anything but a plain tensor (a fake tensor, a bad argument) is returned as it is."""
    if type(t) is not torch.Tensor or t.numel() == 0:
        return t
    return _same_layout(t, t.dtype)


def _same_layout(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A new tensor in ``dtype`` holding ``t``'s storage up to its last element, viewed as ``t`` is."""
    extent = t.storage_offset() + 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    whole = t.as_strided((extent,), (1,), 0).to(dtype, copy=True)
    return whole.as_strided(t.shape, t.stride(), t.storage_offset())


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
            f"(signature {sig}): {e}. The contract: docs/contract.md (and accval.implementations)."
        ) from None


def _declared(kind: str, name: str, fn: object, attr: str, default, allowed=None, typ=None):
    """Read ``fn.<attr>``: a value, or a tuple of values from ``allowed``; PluginError on nonsense."""
    value = getattr(fn, attr, default)
    if typ is bool:
        if not isinstance(value, bool):
            raise PluginError(f"{kind} {name!r}: {attr} expected a bool, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise PluginError(f"{kind} {name!r}: {attr} expected a finite float >= 0, got {value!r}")
        return float(value)
    if typ is tuple:
        if isinstance(value, (str, int)):
            value = (value,)
        try:
            value = tuple(value)
        except TypeError:
            raise PluginError(f"{kind} {name!r}: {attr} expected a tuple, got {value!r}") from None
        bad = [v for v in value if allowed is not None and v not in allowed]
        if bad or not value or len(set(value)) != len(value):
            raise PluginError(f"{kind} {name!r}: {attr} expected a non-empty tuple of distinct values from "
                              f"{list(allowed)}, got {value!r}")
        return value
    if value not in allowed:
        raise PluginError(f"{kind} {name!r}: {attr} expected one of {list(allowed)}, got {value!r}")
    return value


def _check_attrs(kind: str, name: str, fn: object, known: tuple[str, ...]) -> None:
    """Refuse an ``accval_*`` attribute this role does not read: a misspelt declaration (``accval_rope_layout``)
    would otherwise be ignored and the kernel met cases it never claimed."""
    unknown = sorted(a for a in dir(fn) if a.startswith("accval_") and a not in known)
    if unknown:
        raise PluginError(f"{kind} {name!r}: unknown declaration(s) {unknown}; a {kind} declares {list(known)} "
                          "(docs/contract.md)")


def _dtype_names(kind: str, name: str, fn: object, attr: str = "accval_dtypes", allowed: tuple[str, ...] = DTYPES
                 ) -> tuple[str, ...]:
    value = getattr(fn, attr, allowed)
    items = (value,) if isinstance(value, (str, torch.dtype)) else value
    try:
        names = tuple(str(v).removeprefix("torch.") if isinstance(v, torch.dtype) else v for v in items)
    except TypeError:
        names = None
    if not names or any(n not in allowed for n in names) or len(set(names)) != len(names):
        raise PluginError(f"{kind} {name!r}: {attr} expected a non-empty tuple of distinct {list(allowed)} (or the "
                          f"torch dtypes), got {value!r}")
    return names


def converted(t, dtype: torch.dtype):
    """``t`` in ``dtype`` with its shape, strides and storage offset (the storage up to its last element
    converted), so a kernel reading it through its strides reads the same elements."""
    if type(t) is not torch.Tensor or t.numel() == 0:
        return t.to(dtype)
    return _same_layout(t, dtype)


def _devices(kind: str, name: str, fn: object) -> tuple[str, ...]:
    value = getattr(fn, "accval_devices", ("cpu", "cuda"))
    items = (value,) if isinstance(value, str) else value
    try:
        devices = tuple(items)
        ok = bool(devices) and all(isinstance(d, str) and torch.device(d).type == d for d in devices)
    except (TypeError, RuntimeError):
        ok = False
    if not ok:
        raise PluginError(f"{kind} {name!r}: accval_devices expected a non-empty tuple of device types such as "
                          f"('cpu', 'cuda'), got {value!r}")
    return devices


def _expected_impl(kind: str, name: str, fn: object) -> str | None:
    value = getattr(fn, "accval_expected_impl", None)
    if value is not None and (not isinstance(value, str) or not value):
        raise PluginError(f"{kind} {name!r}: accval_expected_impl expected the impl name its calls record "
                          f"(a non-empty str), got {value!r}")
    return value


def _op(kind: str, name: str, fn: object):
    """``accval_op``: a torch custom op (what ``torch.library.opcheck`` takes), or None."""
    value = getattr(fn, "accval_op", None)
    if value is None:
        return None
    from torch._library.custom_ops import CustomOpDef

    if not isinstance(value, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, CustomOpDef)):
        raise PluginError(f"{kind} {name!r}: accval_op expected a torch custom op (torch.ops.<ns>.<name>, or what "
                          f"torch.library.custom_op returns), got {type(value).__name__} {value!r:.60}")
    # what custom_op returns is judged as the op it registered (its calls dispatch as that OpOverload)
    return value._opoverload if isinstance(value, CustomOpDef) else value


def _all_or(values: tuple, everything: tuple) -> str:
    return "all" if set(everything) <= set(values) else ",".join(str(v) for v in values)


@dataclasses.dataclass(frozen=True)
class Producer:
    name: str
    fn: Callable
    expected_impl: str | None
    devices: tuple[str, ...]
    accepts_block_tokens_m: bool
    op: object | None
    recipe: Recipe = dataclasses.field(default_factory=lambda: get_recipe("fp32-div"))
    exact: bool = False
    rope_layouts: tuple[str, ...] = LAYOUTS
    dtypes: tuple[str, ...] = DTYPES
    head_dims: tuple[int, ...] = SUITE_HEAD_DIMS
    rope_dims: tuple[int, ...] = SUITE_ROPE_DIMS
    output: str = "gmk"
    #: "any": ``fn`` reads positions through their stride; "contiguous": it is handed dense positions
    positions: str = "any"
    #: the positions dtypes ``fn`` takes; the other one is handed to it converted
    positions_dtypes: tuple[str, ...] = POSITIONS_DTYPES
    #: give ``fn`` copies of its inputs (the kernel suite's producer; the A/B hands it the model's own tensors)
    copies_inputs: bool = False

    def __repr__(self) -> str:  # what a failing Hypothesis example prints for the fixture: the name, not every field
        return f"Producer({self.name!r})"

    def under_test(self) -> "Producer":
        """This producer as the kernel suite calls it: ``fn`` gets private copies of ``o``, ``positions`` and
        ``cos_sin_cache`` (:func:`private_copy`: same layout), so a producer that writes into its inputs
        cannot change what a test's reference then reads. That write fails the one property that looks for
        it (the layout contract, which passes ``own_inputs=True`` to hand over the caller's tensors), not
        every property that reads ``o``."""
        return dataclasses.replace(self, copies_inputs=True)

    def raw(self, o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, is_neox=True,
            block_tokens_m=None, own_inputs=False):
        """What ``fn`` returns, as it returns it (views included); ``fn`` gets copies of the inputs when
        :attr:`copies_inputs` and not ``own_inputs`` (:meth:`under_test`)."""
        if self.copies_inputs and not own_inputs:
            o, positions, cos_sin_cache = (private_copy(t) for t in (o, positions, cos_sin_cache))
        if self.positions == "contiguous":
            positions = positions.contiguous()
        if isinstance(positions, torch.Tensor):
            held = str(positions.dtype).removeprefix("torch.")
            if held in POSITIONS_DTYPES and held not in self.positions_dtypes:
                positions = converted(positions, getattr(torch, self.positions_dtypes[0]))
        kwargs = {"block_tokens_m": block_tokens_m} if (block_tokens_m is not None and self.accepts_block_tokens_m) else {}
        out = self.fn(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, QUANT_BLOCK, is_neox,
                      **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise PluginError(f"producer {self.name!r}: expected to return (fp8, scale) tensors, got {type(out).__name__}")
        if self.expected_impl is None:  # a foreign implementation records nothing itself: say which one ran
            kernels.provenance.record("producer", f"plugged {self.name}", f"{o.device.type}", recipe=self.recipe.name)
        return out

    def __call__(self, o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, is_neox=True,
                 block_tokens_m=None, own_inputs=False):
        """The outputs as the contract's physical buffers ``fp8 [G, M, K]``, scales ``[G, *, pad4(M)]``.

        An ``mgk-view`` producer's views are mapped back onto their storage; views that are not over
        the contract's physical layout raise :class:`ContractViolation` (the layout property)."""
        fp8, scale = self.raw(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, is_neox,
                              block_tokens_m, own_inputs)
        m, k = o.shape[0], heads_per_group * o.shape[2]
        if self.output == "gmk":
            problems = output_problems(fp8, scale, n_groups, m, k, self.recipe)
            if problems:  # every property would otherwise fail on it in its own words, or crash comparing it
                raise ContractViolation(f"layout contract violated: producer {self.name!r} outputs: " + "; ".join(problems))
            return fp8, scale
        return physical_buffers(fp8, scale, n_groups, m, k, self.recipe)

    def uncovered(self, *, head_dim: int, rope_dim: int, is_neox: bool, dtype: torch.dtype | None = None) -> str | None:
        """Why a case is outside this producer's declaration, or None when it is inside."""
        layout = "neox" if is_neox else "gptj"
        if layout not in self.rope_layouts:
            return f"producer {self.name!r} declares accval_rope_layouts={self.rope_layouts}, not {layout}"
        if dtype is not None and str(dtype).removeprefix("torch.") not in self.dtypes:
            return f"producer {self.name!r} declares accval_dtypes={self.dtypes}, not {dtype}"
        if head_dim not in self.head_dims:
            return f"producer {self.name!r} declares accval_head_dims={self.head_dims}, not {head_dim}"
        if rope_dim not in self.rope_dims:
            return f"producer {self.name!r} declares accval_rope_dims={self.rope_dims}, not {rope_dim}"
        return None

    def describe(self) -> str:
        floor = "" if self.recipe.eps == get_recipe(self.recipe.name).eps else f" amax_floor={self.recipe.eps:g}"
        return (f"recipe={self.recipe.name}{floor} exact={'yes' if self.exact else 'no'} "
                f"layouts={_all_or(self.rope_layouts, LAYOUTS)} dtypes={_all_or(self.dtypes, DTYPES)} "
                f"head_dims={_all_or(self.head_dims, SUITE_HEAD_DIMS)} "
                f"rope_dims={_all_or(self.rope_dims, SUITE_ROPE_DIMS)} output={self.output}"
                + ("" if self.positions == "any" else f" positions={self.positions}")
                + ("" if self.positions_dtypes == POSITIONS_DTYPES else f" positions_dtypes={','.join(self.positions_dtypes)}"))


def output_problems(fp8: torch.Tensor, scale: torch.Tensor, n_groups: int, m: int, k: int, recipe: "str | Recipe") -> list[str]:
    """What is wrong with the dtypes and shapes of a producer's ``[G, M, K]`` codes and ``[G, *, pad4(M)]``
    scales (``docs/contract.md``); the layout contract adds their strides."""
    r = get_recipe(recipe)
    problems = []
    if fp8.dtype != FP8_DTYPE:
        problems.append(f"fp8 dtype {fp8.dtype} != float8_e4m3fn")
    if tuple(fp8.shape) != (n_groups, m, k):
        problems.append(f"fp8 shape {tuple(fp8.shape)} != {(n_groups, m, k)}")
    if scale.dtype != r.scale_dtype:
        problems.append(f"scale dtype {scale.dtype} != {r.scale_dtype} (recipe {r.name})")
    want = r.scale_shape(n_groups, k, pad4(m))
    if tuple(scale.shape) != want:
        problems.append(f"scale shape {tuple(scale.shape)} != {want} ([G, {'ceil(K/512)' if r.packed else 'K/128'}, pad4(M)])")
    return problems


def physical_buffers(fp8: torch.Tensor, scale: torch.Tensor, n_groups: int, m: int, k: int, recipe: Recipe):
    """``mgk-view`` outputs -> the ``[G, M, K]`` and ``[G, *, pad4(M)]`` buffers they view.

    ``fp8 [M, G, K]`` must be a permuted view of a contiguous ``[G, M, K]`` buffer and ``scale
    [M, G, KB]`` one of a contiguous ``[G, KB, pad4(M)]`` buffer (what the consumer reads: the rows
    ``M..pad4(M)-1`` live in that storage beyond the view). Anything else raises ContractViolation."""
    kb = recipe.scale_shape(n_groups, k, 0)[1]
    p = pad4(m)
    problems = []
    if tuple(fp8.shape) != (m, n_groups, k) or fp8.dtype != FP8_DTYPE:
        problems.append(f"fp8: expected an [M, G, K] = {(m, n_groups, k)} float8_e4m3fn view, got {tuple(fp8.shape)} {fp8.dtype}")
    elif fp8.numel() and not strides_match(fp8.permute(1, 0, 2), (m * k, k, 1)):
        problems.append(f"fp8: the [M, G, K] view has strides {fp8.stride()}; over contiguous [G, M, K] storage they are "
                        f"{(k, m * k, 1)}")
    if tuple(scale.shape) != (m, n_groups, kb) or scale.dtype != recipe.scale_dtype:
        problems.append(f"scale: expected an [M, G, {kb}] {recipe.scale_dtype} view, got {tuple(scale.shape)} {scale.dtype}")
    elif scale.numel() and not strides_match(scale.permute(1, 2, 0), (kb * p, p, 1)):
        problems.append(f"scale: the [M, G, KB] view has strides {scale.stride()}; over contiguous [G, KB, pad4(M)] "
                        f"storage they are {(1, kb * p, p)}")
    elif (scale.storage_offset() + n_groups * kb * p) * scale.element_size() > scale.untyped_storage().nbytes():
        problems.append(f"scale: its storage holds {scale.untyped_storage().nbytes() // scale.element_size()} elements "
                        f"from offset {scale.storage_offset()}, fewer than [G, KB, pad4(M)] = {n_groups * kb * p}")
    if problems:
        raise ContractViolation("layout contract violated (mgk-view): " + "; ".join(problems))
    phys_fp8 = fp8.permute(1, 0, 2)
    phys_scale = scale.as_strided((n_groups, kb, p), (kb * p, p, 1), scale.storage_offset())
    return phys_fp8, phys_scale


@dataclasses.dataclass(frozen=True)
class Consumer:
    name: str
    fn: Callable
    expected_impl: str | None
    devices: tuple[str, ...]
    accepts_out: bool
    op: object | None
    recipes: tuple[str, ...] = ("fp32-div",)

    def __repr__(self) -> str:
        return f"Consumer({self.name!r})"

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
        if self.expected_impl is None:
            kernels.provenance.record("consumer", f"plugged {self.name}", f"{a.device.type}")
        return res

    def reads(self, recipe: "str | Recipe") -> bool:
        return get_recipe(recipe).name in self.recipes

    def scale_formats(self) -> tuple[str, ...]:
        """The scale storages it reads: ``"fp32"`` (fp32-div, fp32-rcp: any fp32 scale), else ``"fp32-pow2"``
        (ue8m0 alone: fp32 powers of two, all such a producer writes; a consumer may read their exponent
        bits), and/or ``"ue8m0-packed"``."""
        recipes = [get_recipe(r) for r in self.recipes]
        fp32 = [r for r in recipes if not r.packed]
        formats = []
        if fp32:
            formats.append("fp32-pow2" if all(r.power_of_two for r in fp32) else "fp32")
        if any(r.packed for r in recipes):
            formats.append("ue8m0-packed")
        return tuple(formats)

    def describe(self) -> str:
        return f"recipes={','.join(self.recipes)}" + ("" if self.devices == ("cpu", "cuda") else f" devices={','.join(self.devices)}")


def _wrap_producer(name: str, fn: object) -> Producer:
    _check_bindable("producer", name, fn, 9)
    _check_attrs("producer", name, fn, PRODUCER_ATTRS)
    recipe = get_recipe(_declared("producer", name, fn, "accval_recipe", "fp32-div", RECIPE_NAMES))
    floor = getattr(fn, "accval_amax_floor", None)
    if floor is not None:
        recipe = recipe.with_eps(_declared("producer", name, fn, "accval_amax_floor", None, typ=float))
    return Producer(
        name, fn, _expected_impl("producer", name, fn), _devices("producer", name, fn),
        _accepts(fn, "block_tokens_m"), _op("producer", name, fn), recipe=recipe,
        exact=_declared("producer", name, fn, "accval_exact", False, typ=bool),
        rope_layouts=_declared("producer", name, fn, "accval_rope_layouts", LAYOUTS, LAYOUTS, tuple),
        dtypes=_dtype_names("producer", name, fn),
        head_dims=_declared("producer", name, fn, "accval_head_dims", SUITE_HEAD_DIMS, SUITE_HEAD_DIMS, tuple),
        rope_dims=_declared("producer", name, fn, "accval_rope_dims", SUITE_ROPE_DIMS, SUITE_ROPE_DIMS, tuple),
        output=_declared("producer", name, fn, "accval_output", "gmk", OUTPUTS),
        positions=_declared("producer", name, fn, "accval_positions", "any", POSITIONS),
        positions_dtypes=_dtype_names("producer", name, fn, "accval_positions_dtypes", POSITIONS_DTYPES),
    )


def _wrap_consumer(name: str, fn: object) -> Consumer:
    _check_bindable("consumer", name, fn, 4)
    _check_attrs("consumer", name, fn, CONSUMER_ATTRS)
    return Consumer(name, fn, _expected_impl("consumer", name, fn), _devices("consumer", name, fn),
                    _accepts(fn, "out"), _op("consumer", name, fn),
                    recipes=_declared("consumer", name, fn, "accval_recipe", "fp32-div", RECIPE_NAMES, tuple))


PRODUCERS: Registry[Producer] = Registry("producer", _wrap_producer)
CONSUMERS: Registry[Consumer] = Registry("consumer", _wrap_consumer)


# --- built-ins ----------------------------------------------------------------------------------------
#: The recipes whose scales accval's consumers (Triton, emulated, torch._scaled_mm) read: fp32 values.
FP32_SCALE_RECIPES = tuple(r for r in RECIPE_NAMES if not get_recipe(r).packed)


def accval_producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                    quant_group_size=128, is_neox=True, *, block_tokens_m=None):
    """accval's fused Triton producer (``accval.kernels.inv_rope_fp8_quant``)."""
    return kernels.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                      quant_group_size, is_neox, block_tokens_m=block_tokens_m)


accval_producer.accval_expected_impl = "triton"
accval_producer.accval_op = torch.ops.accval.inv_rope_fp8_quant
accval_producer.accval_exact = True
accval_producer.accval_recipe = "fp32-div"


def reference_producer_for(recipe: str) -> Callable:
    """The mirror reference of ``recipe`` (``accval.kernels.inv_rope_fp8_quant_ref``) as a producer."""
    r = get_recipe(recipe)

    def reference_producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size=128, is_neox=True, *, block_tokens_m=None):
        return kernels.inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim,
                                              rope_dim, quant_group_size, is_neox, block_tokens_m=block_tokens_m,
                                              recipe=r.name)

    reference_producer.__doc__ = f"The {r.name} mirror reference in torch (the legacy two-step path for fp32-div)."
    reference_producer.accval_expected_impl = "torch-reference"
    reference_producer.accval_exact = True
    reference_producer.accval_recipe = r.name
    return reference_producer


def triton_consumer(a, a_scale, b, b_scale, out=None):
    """accval's grouped Triton FP8 block-scaled bmm."""
    return kernels.fp8_block_bmm(a, a_scale, b, b_scale, out, backend="triton")


triton_consumer.accval_expected_impl = "triton"
triton_consumer.accval_op = torch.ops.accval.fp8_block_bmm
triton_consumer.accval_recipe = FP32_SCALE_RECIPES


def torch_consumer(a, a_scale, b, b_scale, out=None):
    """``torch._scaled_mm`` blockwise, one call per group (CUDA only)."""
    return kernels.fp8_block_bmm(a, a_scale, b, b_scale, out, backend="torch")


torch_consumer.accval_expected_impl = "torch"
torch_consumer.accval_devices = ("cuda",)
torch_consumer.accval_recipe = FP32_SCALE_RECIPES


def emulated_consumer(a, a_scale, b, b_scale, out=None):
    """The Triton consumer's arithmetic in torch, any device (arm B of the A/B on a CPU)."""
    return kernels.fp8_block_bmm(a, a_scale, b, b_scale, out, backend="emulated")


emulated_consumer.accval_expected_impl = "emulated"
emulated_consumer.accval_recipe = FP32_SCALE_RECIPES


def reference_consumer(a, a_scale, b, b_scale, out=None):
    """The math reference as a consumer: scales of any recipe (fp32 values or packed UE8M0 words)
    decoded, both sides dequantized, a float64 bmm rounded once to bf16. Any device.

    Like engines' consumers it takes the scale buffer as the contract lays it out: ``[G, K/128,
    pad4(M)]`` fp32 or ``[G, ceil(K/512), pad4(M)]`` int32, contiguous; anything else is a ValueError."""
    from accval.kernels.validation import check_tensor

    check_tensor("a", a, dtypes=(FP8_DTYPE,), ndim=3)
    check_tensor("a_scale", a_scale, dtypes=(torch.float32, torch.int32), ndim=3)
    g, m, k = a.shape
    recipe = get_recipe("ue8m0-packed" if a_scale.dtype == torch.int32 else "fp32-div")
    want = recipe.scale_shape(g, k, pad4(m))
    if tuple(a_scale.shape) != want or not a_scale.is_contiguous():
        raise ValueError(f"a_scale: expected a contiguous {a_scale.dtype} buffer of shape {want}, got "
                         f"{tuple(a_scale.shape)} with strides {a_scale.stride()}")
    if not a.is_contiguous():
        raise ValueError(f"a: expected contiguous [G, M, K], got strides {a.stride()}")
    res = kernels.fp8_block_bmm_math_ref(a, a_scale, b, b_scale).to(torch.bfloat16)
    kernels.provenance.record("consumer", "math-reference", f"torch-{a.device.type}")
    if out is None:
        return res
    out.copy_(res)
    return out


reference_consumer.accval_expected_impl = "math-reference"
reference_consumer.accval_recipe = RECIPE_NAMES

PRODUCERS.register("accval", accval_producer)
PRODUCERS.register("reference", reference_producer_for("fp32-div"))
for _r in RECIPE_NAMES:
    PRODUCERS.register(f"reference:{_r}", reference_producer_for(_r))
CONSUMERS.register("accval", triton_consumer)
CONSUMERS.register("torch", torch_consumer)
CONSUMERS.register("emulated", emulated_consumer)
CONSUMERS.register("reference", reference_consumer)


def chain_pairs(producer: Producer, consumer: Consumer) -> list[tuple[Producer, Consumer]]:
    """The producer -> consumer pairs the chain tests run, each of one recipe.

    The pair under test when the consumer reads the producer's recipe; otherwise each is paired
    with the reference of the other side for its own recipe (the math-reference consumer reads every
    recipe; the mirror reference producer writes any)."""
    if consumer.reads(producer.recipe):
        return [(producer, consumer)]
    return [(producer, CONSUMERS.get("reference")), (PRODUCERS.get(f"reference:{consumer.recipes[0]}"), consumer)]


def _register_mutants() -> None:
    from . import mutants

    for m in mutants.CATALOG.values():
        (PRODUCERS if m.role == "producer" else CONSUMERS).register(f"mutant:{m.id}", f"accval.mutants:{m.attr}")


_register_mutants()
