"""The host path every public kernel function shares: when to skip the custom op, the per-layout plan
cache, and launching a Triton kernel with less host work than ``kernel[grid](...)``.

A call of :func:`accval.kernels.inv_rope_fp8_quant` or :func:`accval.kernels.fp8_block_bmm` on plain tensors looks
its *plan* up in a :class:`PlanCache`: the validated layout and everything its launch needs but the
tensors themselves. The key holds everything the layout checks read (every tensor's type, shape,
strides, dtype and device, every other argument with its type) and no data, so a plan stands for a
call that passed every layout check; what depends on the call's memory (an ``out`` apart from the
inputs, buffers large enough for the raw consumer, positions inside the cos/sin cache) is checked
on every call. A miss runs the full validation first, so a bad call raises exactly as before.

``kernel[grid](*args, **meta)`` binds and specializes every argument, builds the compiled kernel's
cache key and looks it up, in Python, on every call; then it launches. With the launch itself a
no-op (Triton 3.9 on a 2-core EPYC, ``scripts/host_path.py --host-breakdown``) the producer's
``kernel[grid]`` takes 18 us and a :class:`Launcher`'s direct launch 4 us, its key included; on an
H200's host (Triton 3.6) ``launch_producer`` through ``kernel[grid]`` took 29-46 us
(``reports/bench/producer-probe-NVIDIA_H200-2026-12-02-call1.json``).

A :class:`Launcher` is one kernel with its constexprs and launch options fixed. Its first launch of
a specialization goes through ``kernel[grid]`` (compiling if needed) and keeps the compiled kernel
Triton returns; later launches of that specialization call the compiled kernel as ``JITFunction.run``
does after its cache hit (current device and stream, launch hooks, launch metadata), except that
with no launch hook installed (Triton's hook chains empty, as they are unless a profiler adds one)
they pass no metadata and no hooks, and each tensor by its address: Triton builds the metadata for
its hooks on every launch, and its launcher calls a tensor's ``data_ptr`` and asks the driver about
the address, per tensor, where an integer is taken as it is. The
specialization is what Triton's NVIDIA backend derives from runtime arguments: each integer's value
(1, divisibility by 16, 32 or 64 bits), each tensor's dtype and 16-byte alignment. The key holds the
integers themselves, each tensor's dtype and alignment (a TMA descriptor's: its base's dtype and
alignment, its block shape and padding), the current device and ``TRITON_DEBUG``, so no launch reuses
a kernel compiled for another specialization. What the key cannot see goes through
``kernel[grid]`` every time: the CPU interpreter, backends other than CUDA, kernels with pre-run
hooks. ``JITFunction.run`` re-checks two things on every call that a direct launch takes as they
were at the specialization's first launch: the values of the globals the kernel read when compiled,
and Triton's other compile-time knobs (instrumentation), both process settings.
"""

from __future__ import annotations

import copy
import threading
from typing import Callable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _platform

try:  # what a direct launch calls; without it every launch goes through kernel[grid]
    from triton import knobs as _knobs
    from triton.runtime.driver import driver as _driver
    from triton.runtime.jit import JITFunction as _JITFunction
except ImportError:  # pragma: no cover - a Triton older than accval supports
    _knobs = _driver = _JITFunction = None
try:
    from triton.knobs import HookChain as _HookChain
except ImportError:  # pragma: no cover - a Triton whose launch hooks are plain callables or None
    _HookChain = None
try:
    from triton.tools.tensor_descriptor import TensorDescriptor as _TensorDescriptor
except ImportError:  # pragma: no cover - a Triton without host TMA descriptors
    _TensorDescriptor = None
try:
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as _GluonDescriptor
except ImportError:  # pragma: no cover - a Triton without Gluon
    _GluonDescriptor = None
#: the host TMA descriptor types a launch may take (Triton's and Gluon's, which adds a shared-memory layout)
_DESCRIPTORS = tuple(c for c in (_TensorDescriptor, _GluonDescriptor) if c is not None)

_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


#: the tensor types a plan is made for (a subclass may intercept operations)
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def plain_tensor(t: object) -> bool:
    """A tensor the public functions may plan and launch for directly: ``torch.Tensor`` itself or an
    ``nn.Parameter`` (weights), never a subclass that intercepts operations (FakeTensor, DTensor, ...)."""
    return type(t) in _PLAIN_TYPES


def layout_key(*tensors) -> tuple | None:
    """What a layout check reads of each tensor (shape, strides, dtype, device; never data), or None
    when one of them is not a plain tensor (the caller then validates in full)."""
    key = []
    for t in tensors:  # plain_tensor's rule, without a call per tensor: this runs on every call
        if type(t) not in _PLAIN_TYPES:
            return None
        key.append((t.shape, t.stride(), t.dtype, t.device))
    return tuple(key)


def eager_call() -> bool:
    """True when a public function may run its implementation directly instead of through its torch
    custom op: no torch.compile tracing, no dispatch mode (fake tensors, opcheck, FlopCounter, ...),
    no functorch transform (vmap, grad). Both paths run the same code after the same validation; the
    op's dispatch costs tens of us of host time per call that an eager caller need not pay."""
    return not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None and not _functorch_active()


class PlanCache:
    """Plans by key, at most ``max_entries`` (then it starts over: a plan costs one validation to rebuild)."""

    def __init__(self, max_entries: int = 4096):
        self.max_entries = max_entries
        self._plans: dict = {}

    def get(self, key):
        return self._plans.get(key)

    def put(self, key, plan):
        if len(self._plans) >= self.max_entries:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


class Workspaces:
    """Scratch buffers a launch writes and a later launch on the same stream reads (the consumer's split-K
    partials), reused instead of allocated per call: ``workspaces(device, numel, dtype)`` is a flat
    buffer of at least ``numel`` elements.

    One buffer per (device, stream, thread, dtype): launches on one stream run in order, so a call's
    second kernel has read the buffer before the next call's first kernel writes it; another stream,
    or another thread on the same stream (whose launches may interleave with this thread's), gets its
    own. A larger request replaces the buffer (the caching allocator keeps the old memory from other
    streams until this stream's work on it is done). While the current stream is being captured into
    a CUDA graph every request is a fresh allocation: the graph keeps its own memory, and a replay
    must not share a buffer with eager calls on another stream. At most ``max_entries`` buffers (then
    it starts over: memory a dropped buffer held returns to the caching allocator, which reuses it on
    its stream only after the work queued there).
    """

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._buffers: dict = {}

    def __call__(self, device: torch.device, numel: int, dtype: torch.dtype) -> torch.Tensor:
        if device.type == "cuda":
            if torch.cuda.is_current_stream_capturing():
                return torch.empty(numel, dtype=dtype, device=device)
            if device.index is None:  # "cuda": the current device, as torch.empty reads it
                device = torch.device("cuda", torch.cuda.current_device())
            stream = torch._C._cuda_getCurrentRawStream(device.index)
        else:  # the CPU interpreter runs each launch to completion
            stream = 0
        key = (device, stream, threading.get_ident(), dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            if buf is None and len(self._buffers) >= self.max_entries:  # threads come and go: start over
                self._buffers.clear()
            buf = self._buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        return buf

    def clear(self) -> None:
        self._buffers.clear()

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


#: compiled kernels a launcher keeps (one per specialization seen); beyond it the dict starts over
MAX_SPECIALIZATIONS = 256


def _direct_capable(kernel) -> bool:
    """A compiled (not interpreted) Triton kernel whose runtime parameters all come before its constexprs."""
    if _JITFunction is None or not isinstance(kernel, _JITFunction) or _platform.interpreting():
        return False
    kinds = [p.is_constexpr for p in kernel.params]
    return kinds == sorted(kinds)


def rebased(template, base):
    """TMA descriptor ``template`` (Triton's or Gluon's) over ``base``: same shape, strides, block,
    padding and layout, without building a new one. Building a descriptor checks its fields again
    (ranks, power-of-two blocks, 16-byte strides; Gluon's, its layout too): a few us of host time per
    call, for what a plan checked once. ``base`` must fit the template as the tensor it was built over
    did, and be 16-byte aligned: the caller checks (``accval.kernels.fp8_block_bmm._tma_aligned``)."""
    state = getattr(template, "__dict__", None)
    if state is None:  # a descriptor class with slots
        desc = copy.copy(template)
    else:  # copy.copy's result, without its reduce protocol (a third of the time)
        desc = object.__new__(type(template))
        desc.__dict__.update(state)
    object.__setattr__(desc, "base", base)  # a frozen descriptor class too
    return desc


def _is_cuda_kernel(compiled) -> bool:
    """A kernel Triton compiled for its NVIDIA backend, with what a direct launch calls."""
    target = getattr(getattr(compiled, "metadata", None), "target", None)
    return (getattr(target, "backend", None) == "cuda"
            and all(hasattr(compiled, name) for name in ("run", "function", "packed_metadata", "launch_metadata")))


def _arg_layout(arg) -> object:
    """What Triton specializes a tensor argument on besides its alignment: its dtype; for a TMA
    descriptor also its block shape (and its padding mode)."""
    if type(arg) in _DESCRIPTORS:
        layout = getattr(arg, "layout", None)  # Gluon's (a dataclass holding lists: keyed by its repr)
        return (arg.base.dtype, tuple(arg.block_shape), arg.padding, None if layout is None else repr(layout))
    return arg.dtype


def _idle(hook) -> bool:
    """A launch hook that calls nothing: None, or an empty chain (Triton >= 3.5 keeps its hooks in one)."""
    return hook is None or (_HookChain is not None and type(hook) is _HookChain and not hook.calls)


class Launcher:
    """``kernel`` with its constexprs and launch options ``meta`` fixed: ``launcher(grid, tensors, ints)``
    launches ``kernel[grid](*tensors, *ints, **meta)``, directly after a specialization's first launch.

    ``tensors`` are the kernel's leading pointer arguments (tensors, or TMA descriptors over tensors)
    and ``ints`` the integer arguments after them, in the kernel's order; every constexpr and launch
    option is in ``meta``.
    """

    __slots__ = ("kernel", "meta", "direct", "descriptors", "_constexprs", "_runtime_params", "_compiled")

    def __init__(self, kernel, meta: dict, descriptors: bool = False):
        self.kernel = kernel
        self.meta = meta
        self.direct = _direct_capable(kernel)
        #: some of its tensor arguments are TMA descriptors (keyed by their base and block shape)
        self.descriptors = descriptors
        #: the constexprs in the kernel's order: the compiled kernel takes every bound argument
        params = getattr(kernel, "params", ())  # the interpreter's kernels have none
        self._constexprs = tuple(meta[p.name] if p.name in meta else p.default for p in params if p.is_constexpr)
        self._runtime_params = sum(not p.is_constexpr for p in params)
        self._compiled: dict = {}

    def __call__(self, grid: tuple, tensors: tuple, ints: tuple, layout: object = None) -> None:
        """Launch on ``grid``. ``layout``, when given, is a hashable object that stands for ``ints`` and the
        tensors' dtypes (a cached plan passes itself: it never changes either), so the key need not hash them."""
        key = None
        if self.direct and not self.kernel.pre_run_hooks:
            device = _driver.active.get_current_device()
            # a tensor is passed by its address (the launcher takes an integer as it is; a tensor costs it
            # a data_ptr call and a driver query of the address), a TMA descriptor as itself
            if self.descriptors:
                if layout is None:
                    layout = (ints, *[_arg_layout(t) for t in tensors])
                ptrs = [t if type(t) in _DESCRIPTORS else t.data_ptr() for t in tensors]
                key = (device, _knobs.runtime.debug, layout,
                       *[(p.base.data_ptr() if type(p) in _DESCRIPTORS else p) % 16 == 0 for p in ptrs])
            else:
                if layout is None:
                    layout = (ints, *[t.dtype for t in tensors])
                ptrs = [t.data_ptr() for t in tensors]
                key = (device, _knobs.runtime.debug, layout, *[p % 16 == 0 for p in ptrs])
            compiled = self._compiled.get(key)
            if compiled is not None:
                stream = _driver.active.get_current_stream(device)
                gx, gy, gz = grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1
                runtime = _knobs.runtime
                enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
                if _idle(enter) and _idle(leave):  # no hook to call: no launch metadata to build for one
                    compiled.run(gx, gy, gz, stream, compiled.function, compiled.packed_metadata, None, None, None,
                                 *ptrs, *ints, *self._constexprs)
                    return
                args = (*tensors, *ints, *self._constexprs)  # a hook sees the tensors, as Triton's launch gives them
                compiled.run(gx, gy, gz, stream, compiled.function, compiled.packed_metadata,
                             None if enter is None else compiled.launch_metadata(grid, stream, *args),
                             enter, leave, *args)
                return
        compiled = self.kernel[grid](*tensors, *ints, **self.meta)
        # kept when a direct launch passes what this one bound: every runtime argument given, none defaulted
        if key is not None and _is_cuda_kernel(compiled) and len(tensors) + len(ints) == self._runtime_params:
            if len(self._compiled) >= MAX_SPECIALIZATIONS:
                self._compiled.clear()
            self._compiled[key] = compiled

    def args(self, tensors: tuple, ints: tuple) -> tuple:
        """Every argument of the kernel in its order, constexprs included: what its compiled kernel takes
        (``compiled[grid](*launcher.args(tensors, ints))``, a bare launch)."""
        return (*tensors, *ints, *self._constexprs)

    def specializations(self) -> int:
        """How many specializations launch directly (tests and ``scripts/host_path.py`` read it)."""
        return len(self._compiled)


def bare_launch(launches, outputs=()) -> Callable[[], None]:
    """A function that launches ``launches`` (``(launcher, grid, tensors, ints)`` tuples, as
    ``producer_launch`` and ``consumer_launches`` give them) by calling each compiled kernel with its
    arguments bound beforehand: no validation, dispatch, allocation, key or provenance, only Triton's
    compiled launcher. What launching these kernels costs a Python caller with nothing else (the
    benchmarks' floor for a host path). Building it launches each kernel once through
    ``kernel[grid]`` (compiling it if needed), writing into the given outputs. CUDA only (the
    interpreter has no compiled kernels).

    ``outputs``: ``(shape, dtype)`` of each tensor a public call returns; the function allocates them
    (``torch.empty`` on the launches' device) before launching, as a function returning new tensors
    must, and drops them: the floor of such a function. The kernels still write the given buffers."""
    runners = []
    for launch in launches:
        if launch is None:
            raise ValueError("bare_launch: expected (launcher, grid, tensors, ints) launches, got None "
                             "(producer_launch gives None for M == 0: nothing to launch)")
        launcher, grid, tensors, ints = launch
        compiled = launcher.kernel[grid](*tensors, *ints, **launcher.meta)
        if not _is_cuda_kernel(compiled):
            raise ValueError(f"bare_launch: expected kernels compiled for a CUDA GPU, got {type(compiled).__name__}")
        runners.append((compiled[tuple(grid) + (1,) * (3 - len(grid))], launcher.args(tensors, ints)))
    device = launches[0][2][-1].device if launches else None

    def launch() -> None:
        for shape, dtype in outputs:
            torch.empty(shape, dtype=dtype, device=device)
        for runner, args in runners:
            runner(*args)

    return launch
