"""The CPU fp32-matmul mode (:data:`MATMUL` ``fp32``): the model's bf16 matmuls as fp32 matmuls of the
same bf16 values, rounded to bf16, so a CPU without bf16 units runs the A/B at fp32 speed."""

from __future__ import annotations

import functools
import types

import torch
import torch.nn.functional as F

#: How the bf16 matmuls are computed (arm B's FP8 chain is the same under both):
#:   "model": as the model computes them (transformers' eager attention, bf16 ``nn.Linear``, bf16
#:   grouped matmuls of the MoE experts; arm A's bf16 bmm);
#:   "fp32": the attention's two matmuls (eager's arithmetic otherwise,
#:   :func:`accval.site.attention.fp32_matmul_eager_attention`),
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


def fp32_matmul_experts(forward):
    """An experts module's ``forward`` with its matmuls under :class:`Fp32Matmuls`."""
    cache: dict = {}

    @functools.wraps(forward)
    def run(*args, **kwargs):
        with Fp32Matmuls(cache):
            return forward(*args, **kwargs)

    run.accval_fp32_matmuls = cache
    return run


def linear(x: torch.Tensor, w: torch.Tensor, matmul: str, cache: dict) -> torch.Tensor:
    """``x @ w.T`` (``w`` a slice of a layer's weight) as the model's linear layers compute it under
    :data:`MATMUL` ``matmul`` (``cache``: :func:`fp32_weight`'s)."""
    if matmul == "fp32" and x.dtype == torch.bfloat16:
        return F.linear(x.float(), fp32_weight(cache, w)).to(x.dtype)
    return F.linear(x, w)


def install(model: torch.nn.Module, experts_type: type) -> None:
    """Every bf16 ``nn.Linear`` of ``model`` and every ``experts_type`` module (the MoE experts) computes
    its matmuls in fp32 from here on."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.forward = types.MethodType(fp32_matmul_linear, mod)
        elif isinstance(mod, experts_type):
            mod.forward = fp32_matmul_experts(mod.forward)
