"""``accval bench``: the chain's kernels against their baselines, side by side, on the GPU in hand.

Every row is timed in the same process with ``triton.testing.do_bench`` (median and p20/p80 of
events, L2 flushed before each repetition) on CUDA-graph replays, and "as called": the function a
caller uses, host path included (validation, dispatch, allocation, provenance), called back to back
without a graph. The RoPE layout (NEOX half-split, GPT-J interleaved pairs) is a dimension of the
producer and chain rows. Bytes are counted from the real tensors; the device copy ceiling (the best
read + write TB/s over copies of 256 MiB to 1 GiB) is measured in the same run. Results go to JSON,
Markdown (opening with issue 21's targets, met or not, worst case and where) and a PNG under ``--out``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import kernels
from kernels import provenance
from kernels.baselines import upstream_style_producer
from kernels.inv_rope_fp8_quant import LaunchConfig, config_for, launch_producer, validate_producer_args
from kernels.reference import dequantize_weight, inverse_rope_, quantize_1x128_permute102

DSV4_PRO = dict(heads_per_group=16, head_dim=512, rope_dim=64, o_lora_rank=1024)
SHAPES = {"dep8": 8, "tep8": 1}  # n_groups per rank
#: RoPE layouts: name -> is_neox
LAYOUTS = {"neox": True, "gptj": False}
#: The upstream-style producer's warps (``kernels.baselines``): the fastest of 1, 2, 4 and 8 at every M
#: and both shapes and layouts on an H200 (scripts/producer_probe.py;
#: reports/bench/producer-probe-NVIDIA_H200-2026-12-02-call1.json), so the baseline is its best self.
UPSTREAM_STYLE_WARPS = 1


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
    timing: str = "cuda-graph"
    config: str = ""
    #: "neox" or "gptj" for producer and chain rows, "" for the consumer (no RoPE)
    layout: str = ""
    #: median us per call of the function as a caller calls it (no graph, host path included)
    as_called_us: float | None = None


def _graph(fn):
    """``fn`` captured in a CUDA graph (warmed up on a side stream first, as capture requires), or
    the reason it cannot be captured."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph, None
    except Exception as e:  # the row records it: an eager timing, and why
        torch.cuda.synchronize()
        return None, f"{type(e).__name__}: {e}"[:200]


#: do_bench's timing window per row, ms (``accval bench --reps-ms``)
REPS_MS = 200


def _time(fn, reps_ms=None) -> tuple[float, float, float, str]:
    """(median, p20, p80) in us and how it was timed: the call replayed from a CUDA graph (no host
    launch overhead, as engines run decode), L2 flushed before every repetition by do_bench."""
    import triton.testing

    fn()
    graph, why = _graph(fn)
    run, how = (graph.replay, "cuda-graph") if graph is not None else (fn, f"eager (no graph: {why})")
    med, p20, p80 = triton.testing.do_bench(run, warmup=25, rep=reps_ms or REPS_MS, quantiles=[0.5, 0.2, 0.8])
    del graph
    return med * 1e3, p20 * 1e3, p80 * 1e3, how


def as_called_us(fn, graph_us: float, budget_ms: float = 40.0) -> float:
    """Median us per call of ``fn`` called back to back without a graph, host path included: batches
    of calls between two synchronizations, wall clock. When the host is slower than the kernel this
    is the host's time per call; otherwise the kernel's (the host's work hides behind it)."""
    per_batch = max(1, min(20, int(2000 / max(graph_us, 1.0))))
    batches = max(3, min(15, int(budget_ms * 1e3 / (per_batch * max(graph_us, 1.0)))))
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(batches):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / per_batch * 1e6)
    return statistics.median(times)


def warm_up_clocks(seconds: float = 1.0) -> None:
    """Keep the GPU busy until its clocks have ramped up, so the first rows are not timed at idle clocks."""
    import time

    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            x @ x
        torch.cuda.synchronize()


#: Copy sizes (MiB) the ceiling is measured at: the best over them. One size is not enough: on an H200
#: the 256 MiB copy ran about 1.5x faster than the 512 MiB and 1 GiB ones
#: (reports/bench/NVIDIA_H200-2026-11-28-090037.json; power-of-two sizes put source and destination on
#: the same memory channels, it seems).
COPY_CEILING_MIB = (256, 512, 1024)


def _per_s(amount: float, us: float) -> float:
    """``amount`` (bytes or FLOPs) per second in tera-units, done in ``us`` microseconds."""
    return amount / (us * 1e-6) / 1e12


def _copy_us(nbytes: int) -> tuple[float, float, float, str]:
    """(median, p20, p80, how) of the fastest of 1/4/8-byte element copies of ``nbytes`` (rounded up
    to 128 bytes) into another buffer, timed as every row is: a byte-wise copy alone, or an odd
    element count, underestimates what the memory can do."""
    src = torch.empty(-(-nbytes // 128) * 128, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    best = min(_time(lambda s=src.view(dt), d=dst.view(dt): d.copy_(s)) for dt in (torch.uint8, torch.float32, torch.int64))
    del src, dst
    return best


def copy_bandwidths() -> dict[int, float]:
    """Read + write TB/s of a device copy at each of :data:`COPY_CEILING_MIB`."""
    return {mib: _per_s(2 * (mib << 20), _copy_us(mib << 20)[0]) for mib in COPY_CEILING_MIB}


def copy_ceiling_tb_per_s() -> float:
    return max(copy_bandwidths().values())


#: The producer row that times a plain copy of the producer's bytes (a reference, not a baseline).
COPY_SAME_BYTES = "copy-same-bytes"


def _nbytes(*ts):
    return sum(t.numel() * t.element_size() for t in ts)


def _two_step(o, pos, cache, rope, g, is_neox):
    """The unfused legacy path: inverse RoPE in place, then 1x128 quantize with permute(1,0,2)."""
    x = inverse_rope_(o.clone(), pos, cache, rope, is_neox)
    return quantize_1x128_permute102(x.reshape(o.shape[0], g, -1))


_two_step_compiled = torch.compile(_two_step, dynamic=True)


def _producer_inputs(m, g, is_neox=True):
    """The producer's inputs at the DSv4-Pro shape, its validated problem, output buffers, and the
    bytes it moves: ``(o, pos, cache, p, fp8, scale, nbytes)``."""
    hpg, d, rope = DSV4_PRO["heads_per_group"], DSV4_PRO["head_dim"], DSV4_PRO["rope_dim"]
    o = torch.randn(m, g * hpg, d, device="cuda", dtype=torch.bfloat16) * 4
    pos = torch.randint(0, 8192, (m,), device="cuda")
    half = rope // 2
    ang = torch.arange(8192, device="cuda", dtype=torch.float64)[:, None] / (10000 ** (torch.arange(half, device="cuda") / half))
    cache = torch.cat([ang.cos(), ang.sin()], -1).float()
    p = validate_producer_args(o, pos, cache, g, hpg, d - rope, rope, is_neox=is_neox)
    torch.cuda.synchronize()  # do_bench_cudagraph-style timers start on a side stream
    fp8 = torch.empty(p.fp8_shape(), dtype=kernels.FP8_DTYPE, device="cuda")
    scale = torch.empty(p.scale_shape(), dtype=torch.float32, device="cuda")
    return o, pos, cache, p, fp8, scale, _nbytes(o, fp8, scale, pos) + m * rope * 4


def _consumer_inputs(m, g):
    """The consumer's FP8 activations (producer layout) and 128x128-quantized weight at the DSv4-Pro
    shape: ``(a, a_scale, w_fp8, w_scale, n, k)``."""
    k = DSV4_PRO["heads_per_group"] * DSV4_PRO["head_dim"]
    n = DSV4_PRO["o_lora_rank"]
    a = (torch.randn(g, m, k, device="cuda") * 50).to(kernels.FP8_DTYPE)
    a_scale = torch.rand(g, k // 128, kernels.pad4(m), device="cuda")
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(g, n, k, device="cuda") * 0.05)
    return a, a_scale, w_fp8, w_scale, n, k


#: The producer's rows: accval as dispatched, the upstream-style kernel, the unfused legacy path
#: eager and compiled, and a copy of the same bytes (a reference, not a baseline).
UPSTREAM_STYLE = "upstream-style"


def producer_rows(m, g, ceiling, shape, layout="neox", with_compiled=False):
    rope, hpg, d = DSV4_PRO["rope_dim"], DSV4_PRO["heads_per_group"], DSV4_PRO["head_dim"]
    is_neox = LAYOUTS[layout]
    o, pos, cache, p, fp8, scale, nbytes = _producer_inputs(m, g, is_neox)
    args = (o, pos, cache, g, hpg, d - rope, rope)
    cfg = config_for(m, o.device, is_neox=is_neox)
    variants = {  # impl -> (graphed fn, as-called fn)
        "accval": (lambda: launch_producer(p, o, pos, cache, fp8, scale, cfg),
                   lambda: kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)),
        UPSTREAM_STYLE: (lambda: upstream_style_producer(*args, is_neox, fp8, scale, num_warps=UPSTREAM_STYLE_WARPS),
                         lambda: upstream_style_producer(*args, is_neox, num_warps=UPSTREAM_STYLE_WARPS)),
        "eager-two-step": (lambda: _two_step(o, pos, cache, rope, g, is_neox), None),
    }
    if with_compiled:
        variants["compiled-two-step"] = (lambda: _two_step_compiled(o, pos, cache, rope, g, is_neox), None)
    timings = {}
    for impl, (fn, called) in variants.items():
        med, p20, p80, how = _time(fn)
        timings[impl] = (med, p20, p80, how, None if called is None else as_called_us(called, med))
    # Not a baseline: the producer's traffic as a plain device copy (half of the bytes read, half
    # written), timed the same way. What the memory gives at this size, with the launch and tail
    # latency a small kernel pays, which a ceiling measured on large copies does not show.
    timings[COPY_SAME_BYTES] = _copy_us(nbytes // 2) + (None,)
    configs = {"accval": str(cfg), UPSTREAM_STYLE: f"one program per (token, head), {UPSTREAM_STYLE_WARPS} warps",
               COPY_SAME_BYTES: "fastest of 1/4/8-byte element copies"}
    rows = []
    for impl, (med, p20, p80, how, called) in timings.items():
        tbs = _per_s(nbytes, med)
        rows.append(Row("producer", impl, shape, m, g, med, p20, p80, nbytes, 0, tbs, 0.0, 100 * tbs / ceiling, how,
                        configs.get(impl, ""), layout, called))
    return rows


def consumer_rows(m, g, ceiling, shape):
    a, a_scale, w_fp8, w_scale, n, k = _consumer_inputs(m, g)
    a_bf16 = torch.randn(g, m, k, device="cuda", dtype=torch.bfloat16)
    w_bf16 = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
    flops = 2 * g * m * n * k
    torch.cuda.synchronize()
    variants = {
        "accval-triton": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, backend="triton"),
        "torch-scaled-mm": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, backend="torch"),
        "bf16-bmm": lambda: torch.bmm(a_bf16, w_bf16.transpose(1, 2)),
    }
    rows = []
    for impl, fn in variants.items():
        med, p20, p80, how = _time(fn)
        nbytes = _nbytes(a, a_scale, w_fp8, w_scale) + g * m * n * 2 if impl != "bf16-bmm" else _nbytes(a_bf16, w_bf16) + g * m * n * 2
        rows.append(Row("consumer", impl, shape, m, g, med, p20, p80, nbytes, flops, _per_s(nbytes, med),
                        _per_s(flops, med), 100 * _per_s(nbytes, med) / ceiling, how,
                        str(kernels.consumer_config(m, n, k, g, a.device)) if impl == "accval-triton" else "",
                        "", as_called_us(fn, med) if impl == "accval-triton" else None))
    return rows


def chain_rows(m, g, ceiling, shape, layout="neox"):
    hpg, d, rope, r = (DSV4_PRO[k] for k in ("heads_per_group", "head_dim", "rope_dim", "o_lora_rank"))
    o = torch.randn(m, g * hpg, d, device="cuda", dtype=torch.bfloat16) * 4
    pos = torch.randint(0, 8192, (m,), device="cuda")
    cache = torch.randn(8192, rope, device="cuda")
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(g, r, hpg * d, device="cuda") * 0.05)
    w_bf16 = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
    out = torch.empty(m, g, r, device="cuda", dtype=torch.bfloat16)
    is_neox = LAYOUTS[layout]
    torch.cuda.synchronize()

    def fallback():  # arm A as an engine runs it: weight already dequantized at load time
        x = inverse_rope_(o.clone(), pos, cache, rope, is_neox)
        torch.bmm(x.reshape(m, g, -1).transpose(0, 1), w_bf16.transpose(1, 2), out=out.transpose(0, 1))

    variants = {
        "fp8-chain": lambda: kernels.o_a_proj_fp8_chain(o, pos, cache, w_fp8, w_scale, g, hpg, d - rope, rope,
                                                        is_neox=is_neox),
        "bf16-fallback": fallback,
    }
    flops = 2 * g * m * r * hpg * d
    rows = []
    for impl, fn in variants.items():
        med, p20, p80, how = _time(fn)
        rows.append(Row("chain", impl, shape, m, g, med, p20, p80, 0, flops, 0.0, _per_s(flops, med), 0.0, how,
                        "", layout, as_called_us(fn, med) if impl == "fp8-chain" else None))
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
        out_dir: Path | None = None, progress=True, layouts=("neox", "gptj"), reps_ms=200, with_compiled=False) -> dict:
    """Time every row (see the module docstring); ``reps_ms`` is do_bench's window per row,
    ``with_compiled`` adds the torch.compile'd two-step path (a compile per layout)."""
    global REPS_MS
    if not torch.cuda.is_available():
        raise RuntimeError("accval bench needs a CUDA GPU; this machine has none (nothing is timed in the interpreter)")
    builders = {"producer": producer_rows, "consumer": consumer_rows, "chain": chain_rows}
    unknown = set(ops) - set(builders)
    if unknown:
        raise ValueError(f"--ops: expected a subset of {sorted(builders)}, got {sorted(unknown)}")
    if not layouts or set(layouts) - set(LAYOUTS):
        raise ValueError(f"--layouts: expected a non-empty subset of {sorted(LAYOUTS)}, got {list(layouts)}")
    REPS_MS = reps_ms
    warm_up_clocks()
    env = environment()
    by_size = copy_bandwidths()
    ceiling = max(by_size.values())
    rows: list[Row] = []
    work = [(op, shape, m, layout) for op in ops for shape in shapes for m in ms
            for layout in (layouts if op != "consumer" else (None,))]
    if progress:
        from rich.progress import track

        work = track(work, description="bench")
    for op, shape, m, layout in work:
        extra = {"with_compiled": with_compiled} if op == "producer" else {}
        rows += builders[op](m, SHAPES[shape], ceiling, shape, *((layout,) if layout else ()), **extra)
        torch.cuda.empty_cache()
    result = {"schema": 1, **env, "reps_ms": reps_ms, "copy_ceiling_tb_per_s": ceiling,
              "copy_tb_per_s_by_mib": {str(k): v for k, v in by_size.items()}, "provenance": {f"{k[0]}:{k[1]}": v for k, v in provenance.COUNTS.items()},
              "rows": [dataclasses.asdict(r) for r in rows]}
    if out_dir is not None:
        write(result, Path(out_dir))
    return result


def _layout(r: dict) -> str:
    """A row's RoPE layout; a producer or chain row that records none (an older report) is NEOX."""
    return r.get("layout") or ("neox" if r["op"] != "consumer" else "")


def _row(rows, op, impl, shape, m, layout=None):
    hit = [r for r in rows if (r["op"], r["impl"], r["shape"], r["M"]) == (op, impl, shape, m)
           and (layout is None or _layout(r) == layout)]
    return hit[0] if hit else None


def _median(rows, op, impl, shape, m, layout=None):
    r = _row(rows, op, impl, shape, m, layout)
    return r["median_us"] if r else None


#: The host-path target: at this M, "as called" minus the CUDA-graph kernel time at most this many us.
HOST_PATH_M = 64
HOST_PATH_BUDGET_US = 15.0


def targets(result: dict) -> list[dict]:
    """Issue 21's targets, each with its worst case over the shapes, layouts and M it covers, where
    that worst case is, and whether it is met. A target whose rows were not run is left out."""
    rows = result["rows"]
    out = []

    def add(name, want, values, fmt):
        values = [(v, where) for v, where in values if v is not None]
        if values:
            pick = min if want[0] == ">=" else max
            worst, where = pick(values, key=lambda t: t[0])
            met = worst >= want[1] if want[0] == ">=" else worst <= want[1]
            out.append({"target": name, "want": f"{want[0]} {fmt.format(want[1])}", "measured": fmt.format(worst),
                        "where": where, "met": met})

    keys = sorted({(r["op"], r["shape"], r["M"], _layout(r)) for r in rows}, key=lambda k: (k[0], k[1], k[3], k[2]))
    prod = [(sh, m, lay) for op, sh, m, lay in keys if op == "producer"]
    cons = [(sh, m) for op, sh, m, _ in keys if op == "consumer"]
    chain = [(sh, m, lay) for op, sh, m, lay in keys if op == "chain"]

    def ratio(num, den):
        return None if num is None or den is None else num / den

    def where(sh, m, lay=""):
        return f"{sh} {lay} M={m}".replace("  ", " ")

    add("producer GPT-J time / NEOX time, every M", ("<=", 1.03),
        [(ratio(_median(rows, "producer", "accval", sh, m, "gptj"), _median(rows, "producer", "accval", sh, m, "neox")),
          where(sh, m)) for sh, m, lay in prod if lay == "gptj"], "{:.3f}")
    add("producer % of a same-bytes copy, M >= 2048, both layouts", (">=", 75.0),
        [(None if ours is None else 100 * copy / ours, where(sh, m, lay)) for sh, m, lay in prod if m >= 2048
         for ours, copy in [(_median(rows, "producer", "accval", sh, m, lay),
                             _median(rows, "producer", COPY_SAME_BYTES, sh, m, lay) or float("nan"))]
         if copy == copy], "{:.0f}%")
    add("producer speed-up over the upstream-style kernel, every M, both layouts", (">=", 1.0),
        [(ratio(_median(rows, "producer", UPSTREAM_STYLE, sh, m, lay), _median(rows, "producer", "accval", sh, m, lay)),
          where(sh, m, lay)) for sh, m, lay in prod], "{:.2f}x")
    for op, impl, sel in (("producer", "accval", prod), ("consumer", "accval-triton", [(sh, m, "") for sh, m in cons])):
        vals = []
        for sh, m, lay in sel:
            r = _row(rows, op, impl, sh, m, lay or None)
            if m == HOST_PATH_M and r is not None and r.get("as_called_us") is not None:
                vals.append((r["as_called_us"] - r["median_us"], where(sh, m, lay)))
        add(f"{op} host path: as called minus CUDA-graph kernel time, M = {HOST_PATH_M} (us)",
            ("<=", HOST_PATH_BUDGET_US), vals, "{:.1f}")
    for label, sel, want in (("M >= 2048", lambda m: m >= 2048, 0.9), ("M <= 256", lambda m: m <= 256, 2.0)):
        add(f"consumer vs torch._scaled_mm blockwise, {label}", (">=", want),
            [(ratio(_median(rows, "consumer", "torch-scaled-mm", sh, m), _median(rows, "consumer", "accval-triton", sh, m)),
              where(sh, m)) for sh, m in cons if sel(m)], "{:.2f}x")
    add("chain vs bf16 fallback, M = 8192, both layouts", (">=", 1.6),
        [(ratio(_median(rows, "chain", "bf16-fallback", sh, m, lay), _median(rows, "chain", "fp8-chain", sh, m, lay)),
          where(sh, m, lay)) for sh, m, lay in chain if m == 8192], "{:.2f}x")
    return out


def _ceiling_how(result: dict) -> str:
    by = result.get("copy_tb_per_s_by_mib")
    if not by:  # an older report: the ceiling of one 1 GiB copy
        return "read + write of 1 GiB"
    return "best read + write over copies of " + ", ".join(f"{k} MiB ({v:.2f})" for k, v in by.items())


def same_size_copy(result: dict) -> list[dict]:
    """Per (shape, layout, M): accval's producer time against a plain copy of the same bytes."""
    rows = result["rows"]
    out = []
    for r in rows:
        if r["op"] == "producer" and r["impl"] == COPY_SAME_BYTES:
            ours = _median(rows, "producer", "accval", r["shape"], r["M"], _layout(r))
            if ours is not None:
                out.append({"shape": r["shape"], "layout": _layout(r), "M": r["M"], "mbytes": r["bytes"] / 1e6,
                            "accval_us": ours, "copy_us": r["median_us"], "pct_of_copy": 100 * r["median_us"] / ours})
    return out


def _fmt_us(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def to_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [f"# accval bench: {result['device']}", ""]
    met = targets(result)
    if met:
        lines += ["## Targets (issue 21; worst case over the shapes, layouts and M each covers)", "",
                  "| target | wanted | measured (worst) | worst at | met |", "|---|---|---|---|---|"]
        lines += [f"| {t['target']} | {t['want']} | {t['measured']} | {t['where']} | {'yes' if t['met'] else '**no**'} |"
                  for t in met]
        lines.append("")
    lines += [f"{result['date']} · torch {result['torch']} · triton {result['triton']} · CUDA {result['cuda']} · clocks "
              f"(sm, mem, max sm, power) {result['clocks']}", "",
              f"Device copy ceiling ({_ceiling_how(result)}, fastest of 1/4/8-byte element copies, same process): "
              f"**{result['copy_ceiling_tb_per_s']:.2f} TB/s**. Times: do_bench median and p20-p80 of CUDA-graph "
              "replays (no host launch overhead), L2 flushed before each repetition; a row timed otherwise says so. "
              "\"as called\": median us per call of the public function (host path included: validation, dispatch, "
              "allocation, provenance) called back to back without a graph.", ""]
    copies = same_size_copy(result)
    if copies:
        lines += ["## The producer against a copy of its own size", "",
                  f"`{COPY_SAME_BYTES}`: a device copy moving the producer's bytes (half read, half written), timed "
                  "the same way. A producer at 100% moves its bytes as fast as a copy of that size can.", "",
                  "| shape | layout | M | MB moved | accval us | copy us | accval % of copy |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {c['shape']} | {c['layout']} | {c['M']} | {c['mbytes']:.1f} | {c['accval_us']:.1f} | {c['copy_us']:.1f} | "
                  f"{c['pct_of_copy']:.0f}% |" for c in copies]
        lines.append("")
    for op in dict.fromkeys(r["op"] for r in rows):
        lines += [f"## {op}", "", "| shape | layout | M | impl | median us | p20-p80 us | as called us | TB/s | "
                  "% copy ceiling | TFLOP/s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["op"] == op):
            impl = r["impl"] if r.get("timing", "cuda-graph") == "cuda-graph" else f"{r['impl']} ({r['timing'][:60]})"
            lines.append(f"| {r['shape']} G={r['G']} | {_layout(r) or '-'} | {r['M']} | {impl} | {r['median_us']:.1f} | "
                         f"{r['p20_us']:.1f}-{r['p80_us']:.1f} | {_fmt_us(r.get('as_called_us'))} | "
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
        for (impl, shape, lay) in dict.fromkeys((r["impl"], r["shape"], _layout(r)) for r in result["rows"] if r["op"] == op):
            pts = [(r["M"], r["median_us"]) for r in result["rows"]
                   if r["op"] == op and r["impl"] == impl and r["shape"] == shape and _layout(r) == lay]
            ax.plot(*zip(*pts), marker="o", label=f"{impl} ({shape}{' ' + lay if lay else ''})")
        ax.set(xscale="log", yscale="log", xlabel="M (tokens)", ylabel="median us", title=f"{op} on {result['device']}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    return out_dir / f"{stem}.json"


# ---------------------------------------------------------------------------------------------------
# Tuning sweep: the measurements behind the per-architecture dispatch tables.

PRODUCER_SWEEP = [LaunchConfig(1, w, 1, heads_per_program=hb) for hb in (1, 2, 4, 8, 16) for w in (1, 2, 4, 8)
                  if w <= 2 * hb] + [LaunchConfig(8, 2, 2, tokens_per_iter=1), LaunchConfig(8, 4, 2, tokens_per_iter=8)]


def consumer_sweep_configs(m: int) -> list:
    from kernels import ConsumerConfig

    if m <= 256:
        bm = 64 if m <= 64 else 128
        return [ConsumerConfig(bm, bn, 4, st, sk) for bn in (32, 64, 128) for st in (3, 4) for sk in (1, 2, 4, 8, 16)]
    return ([ConsumerConfig(128, bn, w, st, 1, d) for bn in (64, 128) for w in (4, 8) for st in (3, 4, 5)
             for d in (False, True)]
            + [ConsumerConfig(64, 128, 4, st, 1, d) for st in (3, 4) for d in (False, True)]
            + [ConsumerConfig(64, 128, 8, st, 1, True) for st in (3, 4)])


def sweep(ms=(64, 256, 1024, 2048, 8192), shapes=("dep8", "tep8"), ops=("producer", "consumer"),
          out_dir: Path | None = None, layouts=("neox", "gptj")) -> dict:
    """Time every candidate launch configuration at the DeepSeek-V4-Pro shapes (the tables in
    ``kernels`` cite the file this writes)."""
    from kernels.fp8_block_bmm import launch_consumer

    swept = ("producer", "consumer")
    if not ops or set(ops) - set(swept):
        raise ValueError(f"--ops with --sweep: expected a non-empty subset of {swept}, got {list(ops)}")
    if not torch.cuda.is_available():
        raise RuntimeError("accval bench --sweep needs a CUDA GPU; this machine has none")
    warm_up_clocks()
    env = environment()
    ceiling = copy_ceiling_tb_per_s()
    rows = []
    for shape in shapes:
        g = SHAPES[shape]
        for m in ms:
            for layout in (layouts if "producer" in ops else ()):
                o, pos, cache, p, fp8, scale, nbytes = _producer_inputs(m, g, LAYOUTS[layout])
                for cfg in PRODUCER_SWEEP:
                    med, p20, p80, how = _time(lambda o=o, fp8=fp8, scale=scale, cfg=cfg: launch_producer(p, o, pos, cache, fp8, scale, cfg),
                                                reps_ms=100)
                    rows.append({"op": "producer", "shape": shape, "layout": layout, "M": m, "config": str(cfg),
                                 "median_us": med, "p20_us": p20, "p80_us": p80,
                                 "pct_copy_ceiling": 100 * _per_s(nbytes, med) / ceiling, "timing": how})
                o = fp8 = scale = None  # free the buffers before the next M
            if "consumer" in ops:
                a, a_scale, w_fp8, w_scale, n, k = _consumer_inputs(m, g)
                out = torch.empty(g, m, n, device="cuda", dtype=torch.bfloat16)
                for cfg in consumer_sweep_configs(m):
                    try:
                        med, p20, p80, how = _time(lambda: launch_consumer(a, a_scale, w_fp8, w_scale, out, cfg), reps_ms=100)
                    except Exception as e:  # e.g. out of shared memory: recorded, not timed
                        rows.append({"op": "consumer", "shape": shape, "M": m, "config": str(cfg), "error": f"{type(e).__name__}: {e}"[:200]})
                        continue
                    rows.append({"op": "consumer", "shape": shape, "M": m, "config": str(cfg), "median_us": med,
                                 "p20_us": p20, "p80_us": p80, "tflops": _per_s(2 * g * m * n * k, med), "timing": how})
                del a, a_scale, w_fp8, w_scale, out
            torch.cuda.empty_cache()
    result = {"schema": 1, "kind": "sweep", **env, "copy_ceiling_tb_per_s": ceiling, "rows": rows}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # the time in the name: a second sweep on the same day must not overwrite the first (tables cite them)
        stem = f"sweep-{env['device'].replace(' ', '_')}-{env['date']}-{_dt.datetime.now():%H%M%S}"
        (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    return result


def sweep_summary(result: dict) -> str:
    """The best three configurations per (op, shape, M)."""
    lines = []
    keys = dict.fromkeys((r["op"], r["shape"], r["M"], r.get("layout", "")) for r in result["rows"])
    for op, shape, m, lay in keys:
        timed = sorted((r for r in result["rows"] if (r["op"], r["shape"], r["M"], r.get("layout", "")) == (op, shape, m, lay)
                        and "median_us" in r), key=lambda r: r["median_us"])
        base = {"producer": "LaunchConfig(block_tokens_m=1, num_warps=1, num_stages=1, tokens_per_iter=1, heads_per_program=1)"}.get(op)
        ref = next((r["median_us"] for r in timed if r["config"] == base), None)
        best = "; ".join(f"{r['config']} {r['median_us']:.1f}us" for r in timed[:3])
        lines.append(f"{op} {shape}{' ' + lay if lay else ''} M={m}: {best}" + (f" (HB1 w1: {ref:.1f}us)" if ref else ""))
    return "\n".join(lines)
