"""What a call of accval's producer and consumer costs on the host, beyond its kernels (issue 21).

On a CUDA GPU (under 2 minutes on an H200), for the producer (``accval.kernels.inv_rope_fp8_quant``, NEOX) and
the consumer (``accval.kernels.fp8_block_bmm``) at the DeepSeek-V4-Pro shapes (DEP8: 8 groups per rank, TEP8:
1; 16 heads of 512 per group, rope 64, o_lora_rank 1024) and M in 1, 64, 256, one row per way of
calling the op:

  accval          the public function as a caller calls it (validation, dispatch, allocation,
                  launch, provenance)
  triton launch   each of its kernels launched with ``kernel[grid](...)``, arguments and buffers built
                  beforehand: Triton's own launch path (binding, specialization, cache lookup)
  bare launch     each of its compiled kernels called with pre-built arguments (``compiled[grid](*args)``)
  bare + outputs  the same, after allocating the tensors the public call returns (``torch.empty``):
                  the floor of any Python function that launches these kernels and returns new tensors
  upstream-style  the producer as the field ships it (``accval.kernels.baselines``), as a caller calls it

and four columns, us:

  kernel          median of the call replayed from a CUDA graph (``triton.testing.do_bench_cudagraph``,
                  inputs made and synchronized first: it runs on a side stream): its kernels alone
  as called       per call of N calls in a loop, wall clock, one synchronize after the N
  host            per call to issue N calls without synchronizing: the caller's thread
  over            as called - kernel (the target: <= 15 us for accval at M = 64)
  direct          (accval) whether its later launches called the compiled kernels directly
                  (``accval.kernels.host.Launcher``) rather than through ``kernel[grid]``

    python scripts/host_path.py [--ms 1,64,256] [--calls 100] [--rounds 5] [--out FILE.json]
    python scripts/host_path.py --dry-run         # any machine: tiny sizes through the same code
    python scripts/host_path.py --host-breakdown  # the pieces of one call (a CPU: its launches no-ops)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import accval.kernels as kernels  # noqa: E402  (sets TRITON_INTERPRET on a machine without a GPU, before triton loads)
from accval.bench.rows import UPSTREAM_STYLE_WARPS  # noqa: E402
from accval.bench.timing import DSV4_PRO, SHAPES  # noqa: E402
from accval.kernels import provenance  # noqa: E402
from accval.kernels.baselines import upstream_style_producer  # noqa: E402
from accval.kernels.fp8_block_bmm import consumer_launches  # noqa: E402
from accval.kernels.host import bare_launch  # noqa: E402
from accval.kernels.inv_rope_fp8_quant import config_for, producer_launch, validate_producer_args  # noqa: E402

#: the issue's target: accval "as called" minus kernel time at this M, at most this many us
TARGET_M, TARGET_US = 64, 15.0
#: do_bench_cudagraph's timing window per row, ms
REP_MS = 10
#: the dry run's sizes: 2 or 1 groups of one 128-wide head (rope 64), o_lora_rank 128
DRY = dict(heads_per_group=1, head_dim=128, rope_dim=64, o_lora_rank=128)
MAX_POS = 8192


def producer_inputs(m: int, g: int, sizes: dict, device):
    """``o [M, G*hpg, D]`` bf16, positions, and a ``[MAX_POS, rope]`` cos/sin cache (cos half, sin half)."""
    hpg, d, rope = sizes["heads_per_group"], sizes["head_dim"], sizes["rope_dim"]
    o = torch.randn(m, g * hpg, d, device=device, dtype=torch.bfloat16) * 4
    pos = torch.randint(0, MAX_POS, (m,), device=device)
    half = rope // 2
    ang = torch.arange(MAX_POS, device=device, dtype=torch.float64)[:, None] / 10000 ** (
        torch.arange(half, device=device, dtype=torch.float64) / half)
    return o, pos, torch.cat([ang.cos(), ang.sin()], -1).float()


def consumer_inputs(m: int, g: int, sizes: dict, device):
    """FP8 activations with their scales in the producer's layout and a 128x128-quantized weight."""
    k, n = sizes["heads_per_group"] * sizes["head_dim"], sizes["o_lora_rank"]
    a = (torch.randn(g, m, k, device=device) * 50).to(kernels.FP8_DTYPE)
    a_scale = torch.rand(g, k // 128, kernels.pad4(m), device=device)
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(g, n, k, device=device) * 0.05)
    return a, a_scale, w_fp8, w_scale


class Timer:
    """The three timings of one way of calling, on ``device`` (CUDA: as described above; a CPU dry
    run: the same loops, and "kernel" one call's wall clock, for lack of CUDA graphs)."""

    def __init__(self, device, calls: int, rounds: int):
        self.cuda = device.type == "cuda"
        self.calls, self.rounds = calls, rounds

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def kernel_us(self, fn) -> float:
        self.sync()
        if self.cuda:
            import triton.testing

            return triton.testing.do_bench_cudagraph(fn, rep=REP_MS, return_mode="median") * 1e3
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e6

    def _rounds(self, fn, sync_inside: bool) -> float:
        per_call = []
        gc.disable()
        try:
            for _ in range(self.rounds):
                self.sync()
                t0 = time.perf_counter()
                for _ in range(self.calls):
                    fn()
                if sync_inside:
                    self.sync()
                per_call.append((time.perf_counter() - t0) / self.calls * 1e6)
                self.sync()
        finally:
            gc.enable()
        return statistics.median(per_call)

    def row(self, fn) -> dict:
        fn()
        self.sync()
        kernel = self.kernel_us(fn)
        as_called = self._rounds(fn, sync_inside=True)
        host = self._rounds(fn, sync_inside=False)
        return dict(kernel_us=kernel, as_called_us=as_called, host_us=host, over_us=as_called - kernel)


def _launch_rows(launches, cuda: bool) -> dict:
    """{"triton launch": fn, "bare launch": fn} for pre-built ``(launcher, grid, tensors, ints)`` launches
    (the bare one only where Triton compiled them: on a GPU)."""
    def triton_launch():
        for launcher, grid, tensors, ints in launches:
            launcher.kernel[grid](*tensors, *ints, **launcher.meta)

    rows = {"triton launch": triton_launch}
    if cuda:
        rows["bare launch"] = bare_launch(launches)
    return rows


def _producer_call(m: int, g: int, sizes: dict, device):
    """A producer call's arguments at DeepSeek ``sizes``, its validated layout and its launch."""
    o, pos, cache = producer_inputs(m, g, sizes, device)
    rope = sizes["rope_dim"]
    args = (o, pos, cache, g, sizes["heads_per_group"], sizes["head_dim"] - rope, rope)
    p = validate_producer_args(*args)
    fp8 = torch.empty(p.fp8_shape(), dtype=kernels.FP8_DTYPE, device=device)
    scale = torch.empty(p.scale_shape(), dtype=torch.float32, device=device)
    return args, p, producer_launch(p, o, pos, cache, fp8, scale, config_for(m, device))


def measure(ms, shapes, sizes: dict, device, timer: Timer, progress=print) -> list[dict]:
    rows = []
    for shape, g in shapes.items():
        for m in ms:
            args, p, launch = _producer_call(m, g, sizes, device)
            ways = {"accval": lambda args=args: kernels.inv_rope_fp8_quant(*args)}
            ways.update(_launch_rows([launch], timer.cuda))
            outputs = ((p.fp8_shape(), kernels.FP8_DTYPE), (p.scale_shape(), torch.float32))
            if timer.cuda:
                ways["bare + outputs"] = bare_launch([launch], outputs)
                ways["upstream-style"] = lambda args=args: upstream_style_producer(*args, True, num_warps=UPSTREAM_STYLE_WARPS)
            a, a_scale, w_fp8, w_scale = consumer_inputs(m, g, sizes, device)
            out = torch.empty(g, m, sizes["o_lora_rank"], dtype=torch.bfloat16, device=device)
            consumer_ways = {"accval": lambda a=a, a_scale=a_scale, w=w_fp8, ws=w_scale: kernels.fp8_block_bmm(a, a_scale, w, ws)}
            c_launches = consumer_launches(a, a_scale, w_fp8, w_scale, out)
            consumer_ways.update(_launch_rows(c_launches, timer.cuda))
            if timer.cuda:
                consumer_ways["bare + outputs"] = bare_launch(c_launches, [(tuple(out.shape), out.dtype)])
            timer.sync()  # the inputs exist before any timer's side stream reads them
            launchers = {"producer": [launch[0]], "consumer": [lc for lc, *_ in c_launches]}
            for op, table in (("producer", ways), ("consumer", consumer_ways)):
                for impl, fn in table.items():
                    with provenance.capture() as ran:
                        fn()
                    row = dict(op=op, shape=shape, G=g, M=m, impl=impl, **timer.row(fn))
                    if impl == "accval":  # what ran, as every call records it, and whether its launches went direct
                        row["ran"] = f"{ran[-1].impl} {ran[-1].mode} {dict(ran[-1].details)}"
                        row["direct"] = all(launcher.specializations() > 0 for launcher in launchers[op])
                    rows.append(row)
                    progress(format_row(row))
    return rows


HEADER = f"{'op':9} {'shape':5} {'M':>4}  {'impl':15} {'kernel':>8} {'as called':>10} {'host':>8} {'over':>8}  direct"


def format_row(r: dict) -> str:
    direct = {True: "yes", False: "no"}.get(r.get("direct"), "")
    return (f"{r['op']:9} {r['shape']:5} {r['M']:>4}  {r['impl']:15} {r['kernel_us']:8.1f} {r['as_called_us']:10.1f} "
            f"{r['host_us']:8.1f} {r['over_us']:8.1f}  {direct}")


def target_lines(rows: list[dict]) -> list[str]:
    lines = []
    for op in ("producer", "consumer"):
        at = [r for r in rows if r["op"] == op and r["impl"] == "accval" and r["M"] == TARGET_M]
        if at:
            worst = max(at, key=lambda r: r["over_us"])
            met = "met" if worst["over_us"] <= TARGET_US else "NOT met"
            lines.append(f"{op}: as called - kernel at M={TARGET_M}, worst {worst['over_us']:.1f} us ({worst['shape']}), "
                         f"target <= {TARGET_US:.0f}: {met}")
    return lines


def environment(device) -> dict:
    import triton

    env = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
           "device": torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'} (interpreter)"}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


# ---------------------------------------------------------------------------------------------------
# --host-breakdown: the pieces of one call on a CPU, every Triton launch a no-op compiled kernel.


def _stand_in_for_triton() -> None:
    """Measurement scaffolding, this process only: Triton's own launch path (``JITFunction.run``:
    binding, specialization, cache key) runs on a CPU against a CUDA driver stand-in and ends in a
    compiled kernel whose launch does nothing; accval's launchers take their direct path as on a GPU.
    Positions are not read (CUDA's default), and the consumer's launch is planned for 132 SMs (an H200)."""
    import types

    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    class Driver:
        def get_current_device(self):
            return 0

        def get_current_stream(self, device):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    class NoOpKernel:
        metadata = types.SimpleNamespace(target=types.SimpleNamespace(backend="cuda"))
        function, packed_metadata = 0, b""

        def launch_metadata(self, grid, stream, *args):
            return None

        def run(self, *args):
            pass

    def jit(kernel):
        jitted = JITFunction(kernel.fn)

        def compile_(key, signature, device, constexprs, options, attrs, warmup):
            jitted.device_caches[device][0][key] = NoOpKernel()
            return jitted.device_caches[device][0][key]

        jitted._do_compile = compile_
        return jitted

    driver.set_active(Driver())
    producer_mod, consumer_mod = sys.modules["accval.kernels.inv_rope_fp8_quant"], sys.modules["accval.kernels.fp8_block_bmm"]
    for mod, names in ((producer_mod, ("_inv_rope_fp8_quant_straight", "_inv_rope_fp8_quant_loop")),
                       (consumer_mod, ("_fp8_block_bmm_kernel", "_sum_splits_kernel"))):
        for name in names:
            setattr(mod, name, jit(getattr(mod, name)))
    consumer_mod._sm_count = lambda device: 132
    producer_mod.check_positions_in_range = lambda positions, max_pos: None
    kernels.host._direct_capable = lambda kernel: isinstance(kernel, JITFunction)


def _cpu_us(fn, number: int = 300, repeat: int = 15) -> float:
    """Min over ``repeat`` runs of ``number`` calls of this thread's CPU time per call (a shared, busy
    machine inflates wall clock; the minimum is the least disturbed run). On CUDA each run starts with
    the device idle (synchronized outside the timing): launches are queued, not waited for."""
    import timeit

    fn()
    setup = torch.cuda.synchronize if torch.cuda.is_available() else "pass"
    return min(timeit.repeat(fn, setup=setup, number=number, repeat=repeat, timer=time.thread_time)) / number * 1e6


def host_breakdown(ms=(TARGET_M,)) -> list[tuple[str, str, int, str, float]]:
    """Each piece of a call at DeepSeek-V4-Pro sizes. On a CPU Triton's driver is stood in for and
    launches are no-ops; on a CUDA GPU everything is real (kernels launch, the caching allocator serves)."""
    from accval.kernels.validation import check_positions_in_range

    positions_check = check_positions_in_range  # the real one, before the stand-in replaces it
    cuda = torch.cuda.is_available()
    if not cuda:
        _stand_in_for_triton()
    from accval.kernels import host
    from accval.kernels.fp8_block_bmm import _PARTIALS, validate_consumer_args
    from accval.kernels.fp8_block_bmm import _plan as consumer_plan
    from accval.kernels.inv_rope_fp8_quant import _plan as producer_plan
    device = torch.device("cuda" if cuda else "cpu")
    allocator = "CUDA caching allocator" if cuda else "CPU allocator"
    rows = []
    for shape, g in SHAPES.items():
        for m in ms:
            args, p, (launcher, grid, tensors, ints) = _producer_call(m, g, DSV4_PRO, device)
            o, pos, cache = args[:3]
            kernels.inv_rope_fp8_quant(*args)
            with provenance.capture() as ran:
                kernels.inv_rope_fp8_quant(*args)
            steps = {
                "public call (layout seen before)": lambda: kernels.inv_rope_fp8_quant(*args),
                "custom op: torch.ops.accval.inv_rope_fp8_quant": lambda: torch.ops.accval.inv_rope_fp8_quant(
                    *args, 128, True, 0),
                "validate_producer_args (a new layout)": lambda: validate_producer_args(*args),
                "positions check (CPU always; CUDA if asked)": lambda: positions_check(pos, cache.shape[0]),
                "eager_call (custom op skipped?)": host.eager_call,
                "plan lookup (layout key, dict, per-call checks)": lambda: producer_plan(*args, 128, True, None, None),
                f"allocation: two torch.empty ({allocator})": lambda: (
                    torch.empty(p.fp8_shape(), dtype=kernels.FP8_DTYPE, device=device),
                    torch.empty(p.scale_shape(), dtype=torch.float32, device=device)),
                "launch: kernel[grid] (Triton's path)": lambda: launcher.kernel[grid](*tensors, *ints, **launcher.meta),
                "launch: kernels.host.Launcher (direct)": lambda: launcher(grid, tensors, ints),
                "provenance.emit": lambda: provenance.emit(ran[-1]),
            }
            if cuda:
                steps["launch: bare (compiled kernel, arguments bound)"] = bare_launch([(launcher, grid, tensors, ints)])
            rows += [("producer", shape, m, name, _cpu_us(fn)) for name, fn in steps.items()]
            a, a_scale, w_fp8, w_scale = consumer_inputs(m, g, DSV4_PRO, device)
            out = torch.empty(g, m, DSV4_PRO["o_lora_rank"], dtype=torch.bfloat16, device=device)
            launches = consumer_launches(a, a_scale, w_fp8, w_scale, out)
            partials = [launches[0][2][4]] if len(launches) > 1 else []  # the bmm's fp32 output when K is split
            kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale)
            steps = {
                "public call (layout seen before)": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale),
                "public call, out= a transposed view": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, out=out),
                "custom op: torch.ops.accval.fp8_block_bmm": lambda: torch.ops.accval.fp8_block_bmm(
                    a, a_scale, w_fp8, w_scale, "triton", True),
                "validate_consumer_args (a new layout)": lambda: validate_consumer_args(a, a_scale, w_fp8, w_scale, None, True),
                "plan lookup (layout key, dict, per-call checks)": lambda: consumer_plan(a, a_scale, w_fp8, w_scale, None,
                                                                                         "triton", True),
                f"allocation: out ({allocator})": lambda: torch.empty(
                    g, m, DSV4_PRO["o_lora_rank"], dtype=torch.bfloat16, device=device),
                **({"split partials: the reused workspace": lambda: _PARTIALS(
                    device, partials[0].numel(), partials[0].dtype)} if partials else {}),
                f"launch x{len(launches)}: kernel[grid] (Triton's path)": lambda: [
                    lc.kernel[gr](*t, *i, **lc.meta) for lc, gr, t, i in launches],
                f"launch x{len(launches)}: kernels.host.Launcher (direct)": lambda: [lc(gr, t, i) for lc, gr, t, i in launches],
            }
            if cuda:
                steps[f"launch x{len(launches)}: bare (compiled kernels, arguments bound)"] = bare_launch(launches)
            rows += [("consumer", shape, m, name, _cpu_us(fn)) for name, fn in steps.items()]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ms", default="1,64,256", help="token counts M, comma-separated (default 1,64,256)")
    ap.add_argument("--calls", type=int, default=100, help="calls per timed round (default 100)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per row, median taken (default 5)")
    ap.add_argument("--out", type=Path, help="also write the rows and the environment as JSON")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device is here (a CPU: the "
                                                           "interpreter), a few calls: checks the script runs")
    ap.add_argument("--host-breakdown", action="store_true", help="each piece of a call (on a CPU its launches "
                                                                  "are no-ops)")
    args = ap.parse_args()
    ms = [int(x) for x in args.ms.split(",")]
    if args.host_breakdown:
        cuda = torch.cuda.is_available()
        rows = host_breakdown()
        what = "launches real" if cuda else "launches no-ops"
        print(f"host path, us per call (thread CPU time, min of runs), {what}; "
              f"{environment(torch.device('cuda' if cuda else 'cpu'))}")
        for op, shape, m, step, us in rows:
            print(f"{op:9} {shape:5} M={m:<4} {step:52} {us:7.2f}")
        return 0
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("host_path needs a CUDA GPU (or --dry-run / --host-breakdown on a CPU)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    if args.dry_run:
        sizes, shapes, ms, timer = DRY, {"dep8": 2, "tep8": 1}, [1, 5], Timer(device, calls=2, rounds=1)
    else:
        from accval.bench.timing import warm_up_clocks

        sizes, shapes, timer = DSV4_PRO, SHAPES, Timer(device, calls=args.calls, rounds=args.rounds)
        warm_up_clocks(1.0)
    env = environment(device)
    print(f"{env}; sizes {sizes}; us; over = as called - kernel")
    print(HEADER)
    t0 = time.perf_counter()
    rows = measure(ms, shapes, sizes, device, timer)
    for line in target_lines(rows):
        print(line)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps({"environment": env, "sizes": sizes, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
