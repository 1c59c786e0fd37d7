"""``accval bench``: the chain's kernels against their baselines, side by side, on the GPU in hand.

Every row is timed in the same process with ``triton.testing.do_bench`` (median and p20/p80 of
events, L2 flushed before each repetition). Bytes are counted from the real tensors; the device copy
ceiling (read + write of a 2 GiB buffer) is measured in the same run. Results go to JSON, Markdown
and a PNG under ``--out``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
from pathlib import Path

import torch

import kernels
from kernels import provenance
from kernels.inv_rope_fp8_quant import LaunchConfig, config_for, launch_producer, validate_producer_args
from kernels.reference import dequantize_weight, inverse_rope_, quantize_1x128_permute102

DSV4_PRO = dict(heads_per_group=16, head_dim=512, rope_dim=64, o_lora_rank=1024)
SHAPES = {"dep8": 8, "tep8": 1}  # n_groups per rank
PR_TABLE = ((4096, LaunchConfig(32, 2, 3)), (2048, LaunchConfig(16, 2, 2)), (1024, LaunchConfig(8, 2, 2)), (0, LaunchConfig(1, 1, 1)))


@dataclasses.dataclass
class Row:
    op: str
    impl: str
    shape: str
    M: int
    G: int
    median_us: float
    p20_us: float
    p80_us: float
    bytes: int
    flops: int
    tb_per_s: float
    tflops: float
    pct_copy_ceiling: float


def _time(fn, reps_ms=200):
    import triton.testing

    med, p20, p80 = triton.testing.do_bench(fn, warmup=50, rep=reps_ms, quantiles=[0.5, 0.2, 0.8])
    return med * 1e3, p20 * 1e3, p80 * 1e3


def copy_ceiling_tb_per_s() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    med, _, _ = _time(lambda: dst.copy_(src))
    return 2 * src.numel() / (med * 1e-6) / 1e12


def _nbytes(*ts):
    return sum(t.numel() * t.element_size() for t in ts)


def _two_step(o, pos, cache, rope, g):
    """The unfused legacy path: inverse RoPE in place, then 1x128 quantize with permute(1,0,2)."""
    x = inverse_rope_(o.clone(), pos, cache, rope, True)
    return quantize_1x128_permute102(x.reshape(o.shape[0], g, -1))


_two_step_compiled = torch.compile(_two_step, dynamic=True)


def producer_rows(m, g, ceiling, shape):
    hpg, d, rope = DSV4_PRO["heads_per_group"], DSV4_PRO["head_dim"], DSV4_PRO["rope_dim"]
    o = torch.randn(m, g * hpg, d, device="cuda", dtype=torch.bfloat16) * 4
    pos = torch.randint(0, 8192, (m,), device="cuda")
    half = rope // 2
    ang = torch.arange(8192, device="cuda", dtype=torch.float64)[:, None] / (10000 ** (torch.arange(half, device="cuda") / half))
    cache = torch.cat([ang.cos(), ang.sin()], -1).float()
    args = (o, pos, cache, g, hpg, d - rope, rope)
    p = validate_producer_args(*args)
    fp8 = torch.empty(p.fp8_shape(), dtype=kernels.FP8_DTYPE, device="cuda")
    scale = torch.empty(p.scale_shape(), dtype=torch.float32, device="cuda")
    nbytes = _nbytes(o, fp8, scale, pos) + m * rope * 4

    def two_step():
        return _two_step(o, pos, cache, rope, g)

    variants = {
        "accval": lambda: launch_producer(p, o, pos, cache, fp8, scale, config_for(m, o.device)),
        "pr-btm1-only": lambda: launch_producer(p, o, pos, cache, fp8, scale, LaunchConfig(1, 1, 1)),
        "pr-btm-table": lambda: launch_producer(p, o, pos, cache, fp8, scale, next(c for mm, c in PR_TABLE if m >= mm)),
        "eager-two-step": two_step,
        "compiled-two-step": lambda: _two_step_compiled(o, pos, cache, rope, g),
    }
    rows = []
    for impl, fn in variants.items():
        fn()
        med, p20, p80 = _time(fn)
        tbs = nbytes / (med * 1e-6) / 1e12
        rows.append(Row("producer", impl, shape, m, g, med, p20, p80, nbytes, 0, tbs, 0.0, 100 * tbs / ceiling))
    return rows


def consumer_rows(m, g, ceiling, shape):
    k = DSV4_PRO["heads_per_group"] * DSV4_PRO["head_dim"]
    n = DSV4_PRO["o_lora_rank"]
    a = (torch.randn(g, m, k, device="cuda") * 50).to(kernels.FP8_DTYPE)
    a_scale = torch.rand(g, k // 128, kernels.pad4(m), device="cuda")
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(g, n, k, device="cuda") * 0.05)
    a_bf16 = torch.randn(g, m, k, device="cuda", dtype=torch.bfloat16)
    w_bf16 = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
    flops = 2 * g * m * n * k
    variants = {
        "accval-triton": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, backend="triton"),
        "torch-scaled-mm": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, backend="torch"),
        "bf16-bmm": lambda: torch.bmm(a_bf16, w_bf16.transpose(1, 2)),
    }
    rows = []
    for impl, fn in variants.items():
        fn()
        med, p20, p80 = _time(fn)
        nbytes = _nbytes(a, a_scale, w_fp8, w_scale) + g * m * n * 2 if impl != "bf16-bmm" else _nbytes(a_bf16, w_bf16) + g * m * n * 2
        rows.append(Row("consumer", impl, shape, m, g, med, p20, p80, nbytes, flops, nbytes / (med * 1e-6) / 1e12,
                        flops / (med * 1e-6) / 1e12, 0.0))
    return rows


def chain_rows(m, g, ceiling, shape):
    hpg, d, rope, r = (DSV4_PRO[k] for k in ("heads_per_group", "head_dim", "rope_dim", "o_lora_rank"))
    o = torch.randn(m, g * hpg, d, device="cuda", dtype=torch.bfloat16) * 4
    pos = torch.randint(0, 8192, (m,), device="cuda")
    cache = torch.randn(8192, rope, device="cuda")
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(g, r, hpg * d, device="cuda") * 0.05)
    w_bf16 = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
    out = torch.empty(m, g, r, device="cuda", dtype=torch.bfloat16)

    def fallback():  # arm A as an engine runs it: weight already dequantized at load time
        x = inverse_rope_(o.clone(), pos, cache, rope, True)
        torch.bmm(x.reshape(m, g, -1).transpose(0, 1), w_bf16.transpose(1, 2), out=out.transpose(0, 1))

    variants = {
        "fp8-chain": lambda: kernels.o_a_proj_fp8_chain(o, pos, cache, w_fp8, w_scale, g, hpg, d - rope, rope),
        "bf16-fallback": fallback,
    }
    flops = 2 * g * m * r * hpg * d
    rows = []
    for impl, fn in variants.items():
        fn()
        med, p20, p80 = _time(fn)
        rows.append(Row("chain", impl, shape, m, g, med, p20, p80, 0, flops, 0.0, flops / (med * 1e-6) / 1e12, 0.0))
    return rows


def environment() -> dict:
    import triton

    env = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(), "date": _dt.date.today().isoformat()}
    try:
        import subprocess

        env["clocks"] = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm,power.draw",
                                        "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e:  # the header says so; timings do not depend on it
        env["clocks"] = f"unavailable: {e}"
    return env


def run(ops=("producer", "consumer", "chain"), ms=(64, 256, 1024, 1500, 2048, 4096, 8192), shapes=("dep8", "tep8"),
        out_dir: Path | None = None, progress=True) -> dict:
    if not torch.cuda.is_available():
        raise RuntimeError("accval bench needs a CUDA GPU; this machine has none (nothing is timed in the interpreter)")
    builders = {"producer": producer_rows, "consumer": consumer_rows, "chain": chain_rows}
    unknown = set(ops) - set(builders)
    if unknown:
        raise ValueError(f"--ops: expected a subset of {sorted(builders)}, got {sorted(unknown)}")
    env = environment()
    ceiling = copy_ceiling_tb_per_s()
    rows: list[Row] = []
    from rich.progress import track

    work = [(op, shape, m) for op in ops for shape in shapes for m in ms]
    for op, shape, m in (track(work, description="bench") if progress else work):
        rows += builders[op](m, SHAPES[shape], ceiling, shape)
        torch.cuda.empty_cache()
    result = {"schema": 1, **env, "copy_ceiling_tb_per_s": ceiling, "provenance": {f"{k[0]}:{k[1]}": v for k, v in provenance.COUNTS.items()},
              "rows": [dataclasses.asdict(r) for r in rows]}
    if out_dir is not None:
        write(result, Path(out_dir))
    return result


def to_markdown(result: dict) -> str:
    lines = [f"# accval bench: {result['device']}", "",
             f"{result['date']} · torch {result['torch']} · triton {result['triton']} · CUDA {result['cuda']} · clocks "
             f"(sm, mem, max sm, power) {result['clocks']}", "",
             f"Device copy ceiling (read + write, 1 GiB, same process): **{result['copy_ceiling_tb_per_s']:.2f} TB/s**. "
             "Times: do_bench median and p20-p80, L2 flushed before each repetition.", ""]
    rows = result["rows"]
    for op in dict.fromkeys(r["op"] for r in rows):
        lines += [f"## {op}", "", "| shape | M | impl | median us | p20-p80 us | TB/s | % copy ceiling | TFLOP/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["op"] == op):
            lines.append(f"| {r['shape']} G={r['G']} | {r['M']} | {r['impl']} | {r['median_us']:.1f} | {r['p20_us']:.1f}-{r['p80_us']:.1f} | "
                         f"{r['tb_per_s']:.2f} | {r['pct_copy_ceiling']:.0f} | {r['tflops']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def write(result: dict, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result['device'].replace(' ', '_')}-{result['date']}-{_dt.datetime.now():%H%M%S}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(to_markdown(result))
    ops = list(dict.fromkeys(r["op"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(ops), figsize=(6 * len(ops), 4.5), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for (impl, shape) in dict.fromkeys((r["impl"], r["shape"]) for r in result["rows"] if r["op"] == op):
            pts = [(r["M"], r["median_us"]) for r in result["rows"] if r["op"] == op and r["impl"] == impl and r["shape"] == shape]
            ax.plot(*zip(*pts), marker="o", label=f"{impl} ({shape})")
        ax.set(xscale="log", yscale="log", xlabel="M (tokens)", ylabel="median us", title=f"{op} on {result['device']}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    return out_dir / f"{stem}.json"
