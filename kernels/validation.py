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
    """What a producer's output breaks of the buffer contract (DOMAIN.md section 1); empty when none.

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
