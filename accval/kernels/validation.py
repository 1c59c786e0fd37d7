"""Input checks shared by every public function: clear ValueError/TypeError, never an assert."""

from __future__ import annotations

from typing import Iterable

import torch


def check_tensor(name: str, t: object, *, dtypes: Iterable[torch.dtype] | None = None, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    return t


def check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(t.shape)}")


def check_contiguous(name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor, got shape {tuple(t.shape)} with strides {t.stride()}")


def strides_match(t: torch.Tensor, strides: tuple[int, ...]) -> bool:
    """``t`` lies in memory as a tensor of its shape with ``strides`` would: the strides of size-1
    dimensions, which address nothing, are not compared (as ``Tensor.is_contiguous`` does)."""
    return all(got == want for size, got, want in zip(t.shape, t.stride(), strides) if size > 1)


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        raise ValueError(f"expected all tensors on one device, got {', '.join(f'{k}={v}' for k, v in devices.items())}")
    return first


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def is_fake(t: torch.Tensor) -> bool:
    """True for FakeTensors (torch.compile tracing, opcheck): their data cannot be read."""
    from torch._subclasses.fake_tensor import is_fake as _is_fake

    return _is_fake(t)


def contract_problems(fp8: torch.Tensor, scale: torch.Tensor, n_groups: int, m: int, k: int) -> list[str]:
    """What a producer's output breaks of the buffer contract (docs/contract.md, "Producer"); empty when none.

    ``fp8 [G, M, K]`` contiguous (group stride ``M*K``), scales ``[G, K/128, pad4(M)]`` fp32 (or
    ``[G, ceil(K/512), pad4(M)]`` int32 words of packed UE8M0 exponents) contiguous with rows
    ``M..pad4(M)-1`` zero. Non-raising, for callers that count violations (the A/B site).
    """
    from .constants import pad4
    from .recipes import get_recipe

    problems = []
    if tuple(fp8.shape) != (n_groups, m, k) or not fp8.is_contiguous():
        problems.append(f"fp8: expected contiguous {(n_groups, m, k)}, got {tuple(fp8.shape)} strides {fp8.stride()}")
    want = get_recipe("ue8m0-packed" if scale.dtype == torch.int32 else "fp32-div").scale_shape(n_groups, k, pad4(m))
    if tuple(scale.shape) != want or not scale.is_contiguous():
        problems.append(f"scale: expected contiguous {want}, got {tuple(scale.shape)} strides {scale.stride()}")
    elif m < pad4(m) and not bool((scale[:, :, m:] == 0).all()):
        problems.append(f"scale: rows {m}..{pad4(m) - 1} are not zero")
    return problems


def check_bool(name: str, value: object) -> bool:
    """``value`` must be a real bool: ``"yes"``, ``1`` or a tensor would be truthy and pass silently."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return value


def check_optional_bool(name: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool or None, got {type(value).__name__} {value!r}")
    return value


def overlap_problem(t: torch.Tensor) -> str | None:
    """Why two elements of ``t`` may share memory, or None when they cannot.

    A dim of size > 1 with stride 0 (an ``expand``) is one reason. Otherwise the dims of size > 1,
    sorted by stride, must each step over everything the smaller ones span (stride >= their extent):
    what every dense, sliced, transposed or permuted view satisfies. A few exotic views that
    interleave without overlapping fail it too; they are refused rather than guessed at.
    """
    if t.numel() == 0:
        return None
    dims = sorted((stride, size) for stride, size in zip(t.stride(), t.shape) if size > 1)
    extent = 1  # elements spanned by the dims seen so far: highest offset + 1
    for stride, size in dims:
        if stride == 0:
            return f"a dim of size {size} has stride 0 (an expanded view)"
        if stride < extent:
            return f"stride {stride} is less than the {extent} elements the smaller dims span (an overlapping view)"
        extent += stride * (size - 1)
    return None


def check_no_overlap(name: str, t: torch.Tensor) -> None:
    """A tensor a kernel writes: each element its own memory, or the writes race and results go silently wrong."""
    why = overlap_problem(t)
    if why is not None:
        raise ValueError(f"{name}: expected a tensor whose elements do not share memory, got shape {tuple(t.shape)} "
                         f"with strides {t.stride()}: {why}")


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) byte of ``t``'s elements inside its storage."""
    if t.numel() == 0:
        return (0, 0)
    first = t.storage_offset() * t.element_size()
    return first, first + byte_extent(t)


def byte_extent(t: torch.Tensor) -> int:
    """Bytes from ``t``'s first element to one past its last (0 when empty): what a kernel may touch."""
    if t.numel() == 0:
        return 0
    return (sum(stride * (size - 1) for stride, size in zip(t.stride(), t.shape)) + 1) * t.element_size()


def check_apart(name: str, t: torch.Tensor, **inputs: torch.Tensor) -> None:
    """``t`` (an output) shares no byte with any of ``inputs``: a kernel reading what it overwrites is a race."""
    if t.numel() == 0 or t.device.type == "meta" or is_fake(t):
        return
    check_apart_at(name, t, byte_extent(t), [(other, x, byte_extent(x)) for other, x in inputs.items()])


def check_apart_at(name: str, t: torch.Tensor, extent: int, inputs: list[tuple[str, torch.Tensor, int]]) -> None:
    """:func:`check_apart` with each tensor's :func:`byte_extent` given (callers that cache it per layout).

    Compares addresses: memory two tensors share is one address range whichever storage each came
    from (two storages never overlap unless they are one memory, e.g. ``torch.from_blob`` twice)."""
    lo = t.data_ptr()
    hi = lo + extent
    for other, x, x_extent in inputs:
        if x_extent:
            xlo = x.data_ptr()
            if lo < xlo + x_extent and xlo < hi:
                (blo, bhi), (xblo, xbhi) = _byte_span(t), _byte_span(x)
                raise ValueError(f"{name}: expected memory apart from the inputs, got bytes [{blo}, {bhi}) of the storage "
                                 f"that {other} reads at [{xblo}, {xbhi})")


def check_storage_holds(name: str, t: torch.Tensor, elements: int, layout: str) -> None:
    """A raw kernel reads ``elements`` consecutive elements from ``t``'s first one, whatever its strides:
    they must lie inside ``t``'s storage, or the kernel reads (or faults on) memory it does not own."""
    if elements == 0 or t.device.type == "meta" or is_fake(t):
        return
    available = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
    if available < elements:
        raise ValueError(f"{name}: expected storage for {elements} elements from its first ({layout}), got {available} "
                         f"(shape {tuple(t.shape)}, strides {t.stride()})")


def check_positions_in_range(positions: torch.Tensor, max_pos: int) -> None:
    """Every position indexes a row of the cos/sin cache: ``0 <= p < max_pos``. Reads the values (a host
    sync on CUDA, which CUDA graph capture forbids: there it raises instead); skipped for meta and fake
    tensors, which hold none."""
    if positions.numel() == 0 or positions.device.type == "meta" or is_fake(positions):
        return
    if positions.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise ValueError("check_positions: expected no CUDA graph capture (checking positions reads them on the host), "
                         "got a capture in progress; validate positions before capturing and pass check_positions=False")
    lo, hi = int(positions.min()), int(positions.max())
    if lo < 0 or hi >= max_pos:
        raise ValueError(f"positions: expected values in [0, {max_pos}) (the cos/sin cache's max_pos), got min {lo} max {hi}")
