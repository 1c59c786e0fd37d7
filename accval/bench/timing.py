"""The timing API of ``accval bench`` and of the probes in ``scripts/``: CUDA-graph medians, the
"as called" time of a public function, the device copy ceiling, and the kernels' inputs at the
DeepSeek-V4-Pro shapes."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from typing import NamedTuple

import torch
import triton
import triton.language as tl

import accval.kernels as kernels
from accval.kernels.inv_rope_fp8_quant import validate_producer_args

DSV4_PRO = dict(heads_per_group=16, head_dim=512, rope_dim=64, o_lora_rank=1024)
SHAPES = {"dep8": 8, "tep8": 1}  # n_groups per rank
#: RoPE layouts: name -> is_neox
LAYOUTS = {"neox": True, "gptj": False}

#: do_bench's timing window per row, ms (``accval bench --reps-ms``)
REPS_MS = 200


class Timing(NamedTuple):
    """One timed call: do_bench's median and p20/p80 in us, and how it was timed (``"cuda-graph"``,
    or ``"eager (no graph: why)"``)."""

    median_us: float
    p20_us: float
    p80_us: float
    how: str


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


def time_cuda(fn, reps_ms: int | None = None) -> Timing:
    """``fn`` replayed from a CUDA graph (no host launch overhead, as engines run decode), L2 flushed
    before every repetition by do_bench, for ``reps_ms`` (default :data:`REPS_MS`); a call that
    cannot be captured is timed eagerly and says so."""
    import triton.testing

    fn()
    graph, why = _graph(fn)
    run, how = (graph.replay, "cuda-graph") if graph is not None else (fn, f"eager (no graph: {why})")
    med, p20, p80 = triton.testing.do_bench(run, warmup=25, rep=reps_ms or REPS_MS, quantiles=[0.5, 0.2, 0.8])
    del graph
    return Timing(med * 1e3, p20 * 1e3, p80 * 1e3, how)


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


def per_s(amount: float, us: float) -> float:
    """``amount`` (bytes or FLOPs) per second in tera-units, done in ``us`` microseconds."""
    return amount / (us * 1e-6) / 1e12


def tensor_bytes(*ts: torch.Tensor) -> int:
    """The bytes the tensors ``ts`` hold."""
    return sum(t.numel() * t.element_size() for t in ts)


def copy_us(nbytes: int, reps_ms: int | None = None) -> Timing:
    """The fastest of 1/4/8-byte element copies of ``nbytes`` (rounded up to 128 bytes) into another
    buffer, timed as every row is: a byte-wise copy alone, or an odd element count, underestimates
    what the memory can do."""
    src = torch.empty(-(-nbytes // 128) * 128, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    best = min(time_cuda(lambda s=src.view(dt), d=dst.view(dt): d.copy_(s), reps_ms)
               for dt in (torch.uint8, torch.float32, torch.int64))
    del src, dst
    return best


@triton.jit
def _read_once_kernel(x_ptr, out_ptr, per_program, BLOCK: tl.constexpr, STAGES: tl.constexpr):
    """Reads words ``[pid * per_program, (pid + 1) * per_program)`` of ``x`` once (16-byte loads) and stores
    their xor, one word per program: what reading a buffer costs with no math and no output."""
    start = tl.program_id(0).to(tl.int64) * per_program
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for i in tl.range(0, per_program, BLOCK, num_stages=STAGES):
        acc ^= tl.load(x_ptr + start + i + tl.arange(0, BLOCK))
    tl.store(out_ptr + tl.program_id(0), tl.xor_sum(acc, 0))


#: :func:`read_once_us`'s launches: (programs per SM, words per loop step, pipeline stages, warps); the
#: fastest at every consumer shape of M <= 256 on an H200 came from these
#: (reports/kernel/speed-probe-floors-fusedsum-NVIDIA_H200-2026-12-04-s26call1.json, 16 launches)
READ_ONCE_LAUNCHES = tuple((p, b, st, w) for p in (4, 8) for b, w in ((1024, 4), (4096, 8)) for st in (1, 3))


def read_once_us(nbytes: int, reps_ms: int | None = None) -> tuple[Timing, tuple]:
    """A kernel reading ``nbytes`` once (rounded up to whole loop steps of every program) with no math and
    no output, timed as every row is: the fastest of :data:`READ_ONCE_LAUNCHES`, each timed once, the
    fastest timed again (that timing is returned, with its launch). What any kernel that must read these
    bytes from memory takes at least, launch included."""
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    timed = []
    for per_sm, block, stages, warps in READ_ONCE_LAUNCHES:
        programs = per_sm * sms
        per_program = -(-nbytes // (4 * programs * block)) * block
        x = torch.empty(programs * per_program, dtype=torch.int32, device="cuda").random_()
        out = torch.empty(programs, dtype=torch.int32, device="cuda")
        torch.cuda.synchronize()  # the graph timer starts on a side stream

        def fn(x=x, out=out, per_program=per_program, block=block, stages=stages, warps=warps, programs=programs):
            _read_once_kernel[(programs,)](x, out, per_program, BLOCK=block, STAGES=stages, num_warps=warps)

        timed.append((time_cuda(fn, reps_ms).median_us, fn, (per_sm, block, stages, warps)))
    _, fn, launch = min(timed, key=lambda t: t[0])
    return time_cuda(fn, reps_ms), launch


def copy_bandwidths(reps_ms: int | None = None) -> dict[int, float]:
    """Read + write TB/s of a device copy at each of :data:`COPY_CEILING_MIB`."""
    return {mib: per_s(2 * (mib << 20), copy_us(mib << 20, reps_ms).median_us) for mib in COPY_CEILING_MIB}


def copy_ceiling_tb_per_s(reps_ms: int | None = None) -> float:
    return max(copy_bandwidths(reps_ms).values())


def producer_inputs(m: int, g: int, is_neox: bool = True):
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
    return o, pos, cache, p, fp8, scale, tensor_bytes(o, fp8, scale, pos) + m * rope * 4


def consumer_inputs(m: int, g: int):
    """The consumer's FP8 activations (producer layout) and 128x128-quantized weight at the DSv4-Pro
    shape: ``(a, a_scale, w_fp8, w_scale, n, k)``."""
    k = DSV4_PRO["heads_per_group"] * DSV4_PRO["head_dim"]
    n = DSV4_PRO["o_lora_rank"]
    a = (torch.randn(g, m, k, device="cuda") * 50).to(kernels.FP8_DTYPE)
    a_scale = torch.rand(g, k // 128, kernels.pad4(m), device="cuda")
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(g, n, k, device="cuda") * 0.05)
    return a, a_scale, w_fp8, w_scale, n, k


def host_cpu() -> str:
    """The host's CPU model and logical CPU count: "as called" times are the host's, and lent GPUs come with
    hosts of different speeds (the same code's host path measured 2-3x apart on two H200 hosts)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def environment() -> dict:
    """The header of a result: device, versions, date and clocks."""
    import triton

    env = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(), "date": _dt.date.today().isoformat(),
           "host_cpu": host_cpu()}
    try:
        import subprocess

        env["clocks"] = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm,power.draw",
                                        "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e:  # the header says so; timings do not depend on it
        env["clocks"] = f"unavailable: {e}"
    return env
