"""Prototype: the NEOX producer with one program per (token, head, NB blocks): timed against the shipped launch
and the upstream-style kernel at small M; bits compared with the public function."""
import sys, json, torch, triton, triton.language as tl
from accval.bench import timing
from accval.bench.rows import UPSTREAM_STYLE_WARPS
import accval.kernels as kernels
from accval.kernels.baselines import upstream_style_producer
from accval.kernels.fp8_rounding import div_rn_by, round_through, to_fp8_e4m3
from accval.kernels.inv_rope_fp8_quant import _nanmax, config_for, launch_producer, _runtime_ints
from accval.kernels.constants import pad4

@triton.jit
def _block_kernel(o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr, M, rows_end, stride_pos,
                  stride_o_m, stride_o_h, stride_cs_pos, stride_cs_sin, stride_cs_i,
                  stride_fp8_g, stride_fp8_m, stride_scale_g, stride_scale_b,
                  HPG: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr, IN_DTYPE: tl.constexpr,
                  FP8_MAX: tl.constexpr, NB: tl.constexpr, SOFTWARE: tl.constexpr):
    NBH: tl.constexpr = D // 128
    HALF: tl.constexpr = ROPE // 2
    m = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    head = pid // (NBH // NB)
    j0 = (pid % (NBH // NB)) * NB
    g = head // HPG
    h = head % HPG
    jv = j0 + tl.arange(0, NB)
    scale_ptrs = scale_ptr + g * stride_scale_g + (h * NBH + jv) * stride_scale_b + m
    if m >= M:  # a padding row of the scale buffer (the grid covers rows_end = pad4(M) rows)
        tl.store(scale_ptrs, tl.zeros([NB], dtype=tl.float32))
        return
    d = jv[:, None] * 128 + tl.arange(0, 128)[None, :]
    row = o_ptr + m * stride_o_m + head.to(tl.int64) * stride_o_h
    x = tl.load(row + d).to(tl.float32)
    if j0 + NB == NBH:  # the program holding the head's last block: the rope slice
        r = d - (D - ROPE)
        is_rope = r >= 0
        first = r < HALF
        partner = tl.where(first, r + HALF, r - HALF)
        freq = tl.where(first, r, r - HALF)
        xp = tl.load(row + tl.where(is_rope, D - ROPE + partner, d), mask=is_rope, other=0.0).to(tl.float32)
        pos = tl.load(pos_ptr + m * stride_pos).to(tl.int64)
        cs_row = cs_ptr + pos * stride_cs_pos + freq * stride_cs_i
        cos = tl.load(cs_row, mask=is_rope, other=1.0)
        sin = tl.load(cs_row + stride_cs_sin, mask=is_rope, other=0.0)
        y = tl.where(is_rope, round_through(x * cos + xp * tl.where(first, sin, -sin), IN_DTYPE, SOFTWARE), x)
    else:
        y = x
    amax = _nanmax(tl.abs(y), 1, SOFTWARE)  # [NB]
    scale = tl.math.div_rn(amax, FP8_MAX)
    safe = tl.where(scale > 0, scale, 1.0)
    q = tl.where(scale[:, None] > 0, div_rn_by(y, safe[:, None], SOFTWARE), 0.0)
    tl.store(fp8_ptr + g * stride_fp8_g + m * stride_fp8_m + h * D + d, to_fp8_e4m3(q, FP8_MAX, SOFTWARE))
    tl.store(scale_ptrs, scale)


def launch_block(p, o, pos, cache, fp8, scale, nb, warps):
    rows_end = pad4(p.m)
    ints = _runtime_ints(p, rows_end, o, pos, cache, fp8.stride(), scale.stride())
    heads = p.n_groups * p.heads_per_group
    _block_kernel[(rows_end, heads * (p.head_dim // 128) // nb)](o, pos, cache, fp8, scale, *ints,
        HPG=p.heads_per_group, D=p.head_dim, ROPE=p.rope_dim, IN_DTYPE=tl.bfloat16, FP8_MAX=448.0, NB=nb, SOFTWARE=o.device.type == 'cpu',
        num_warps=warps, num_stages=1, **({} if o.device.type == 'cpu' else dict(enable_fp_fusion=False)))

REPS = 120
if __name__ != '__main__':
    raise ImportError
rows = []
timing.warm_up_clocks()
hpg, d, rope = 16, 512, 64
for shape, g in (("tep8", 1), ("dep8", 8)):
    for m in (64, 256, 1024):
        o, pos, cache, p, fp8, scale, nbytes = timing.producer_inputs(m, g, True)
        args = (o, pos, cache, g, hpg, d - rope, rope)
        want8, wants = kernels.inv_rope_fp8_quant(*args, is_neox=True)
        cfg = config_for(m, o.device, is_neox=True)
        fns = {"shipped": lambda: launch_producer(p, o, pos, cache, fp8, scale, cfg),
               "upstream": lambda: upstream_style_producer(*args, True, fp8, scale, num_warps=UPSTREAM_STYLE_WARPS)}
        for nb in (1, 2):
            for w in (1, 2):
                fns[f"block nb{nb} w{w}"] = lambda nb=nb, w=w: launch_block(p, o, pos, cache, fp8, scale, nb, w)
        same = {}
        for name, fn in fns.items():
            if name == "upstream":
                continue
            fp8.zero_(); scale.fill_(float("nan"))
            fn(); torch.cuda.synchronize()
            same[name] = bool(torch.equal(fp8.view(torch.uint8), want8.view(torch.uint8)) and torch.equal(scale, wants))
        torch.cuda.synchronize()
        times = {name: [] for name in fns}
        for _ in range(3):
            for name, fn in fns.items():
                times[name].append(timing.time_cuda(fn, REPS).median_us)
        rows.append({"shape": shape, "M": m, "times": times, "same": same})
        print(f"{shape} M={m}: " + " | ".join(f"{n} {'/'.join(f'{t:.2f}' for t in ts)}{'' if same.get(n, True) else ' BITS DIFFER'}" for n, ts in times.items()), flush=True)
json.dump({"env": timing.environment(), "rows": rows}, open(sys.argv[1], "w"), indent=1)
