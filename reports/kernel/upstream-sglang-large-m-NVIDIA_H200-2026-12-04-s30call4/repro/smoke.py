"""Smoke test: each variant against accval's mirror references on small cases (CPU interpreter)."""
import sys, os
sys.path.insert(0, "/tmp/plug_sglang")
import accval.kernels  # noqa: F401  (TRITON_INTERPRET + interpreter casts, as the pytest plugin does)
import torch
import sglang_plug as P
from accval.kernels.reference import inv_rope_fp8_quant_ref
from accval.kernels.recipes import get_recipe

torch.manual_seed(0)
for m, g, hpg, d, rope, neox, cache3d in [(5, 2, 1, 128, 64, True, False), (7, 3, 2, 256, 64, False, True), (1, 1, 1, 512, 2, False, False)]:
    o = (torch.randn(m, g * hpg, d) * 4).bfloat16()
    pos = torch.randint(0, 100, (m,))
    ang = torch.rand(100, rope // 2) * 6
    cache = torch.stack([ang.cos(), ang.sin()], 1) if cache3d else torch.cat([ang.cos(), ang.sin()], -1)
    args = (o, pos, cache, g, hpg, d - rope, rope, 128, neox)
    for name in ("triton_fp32", "triton_ue8m0", "triton_ue8m0_rowmajor", "dsv4_ceil_after_quant"):
        fn = getattr(P, name)
        r = get_recipe(fn.accval_recipe)
        if getattr(fn, "accval_amax_floor", None) is not None:
            r = r.with_eps(fn.accval_amax_floor)
        q, s = fn(*args)
        rq, rs = inv_rope_fp8_quant_ref(*args[:8], is_neox=neox, recipe=r)
        dq = (q.view(torch.uint8) != rq.view(torch.uint8)).sum().item()
        ds = (s != rs).sum().item()
        print(f"m={m} g={g} hpg={hpg} d={d} neox={neox} {name:24s} shape {tuple(q.shape)} {tuple(s.shape)} "
              f"contig {q.is_contiguous()}/{s.is_contiguous()} codes differ {dq}/{q.numel()} scales differ {ds}/{s.numel()}")
