"""The rows of ``accval bench``: each op's implementations and baselines at the DeepSeek-V4-Pro shapes,
timed with :mod:`accval.bench.timing`, and :func:`run`, the command."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

import accval.kernels as kernels
from accval.kernels import provenance
from accval.kernels.baselines import upstream_style_producer
from accval.kernels.fp8_block_bmm import consumer_launches
from accval.kernels.host import bare_launch
from accval.kernels.inv_rope_fp8_quant import config_for, launch_producer, launched_config, producer_launch
from accval.kernels.reference import dequantize_weight, inverse_rope_, quantize_1x128_permute102

from .render import write
from .targets import CONSUMER_SMALL_M, COPY_SAME_BYTES, READ_ONCE_INPUTS, UPSTREAM_STYLE
from .timing import (
    DSV4_PRO,
    LAYOUTS,
    READ_ONCE_LAUNCHES,
    SHAPES,
    as_called_us,
    consumer_inputs,
    copy_bandwidths,
    copy_us,
    environment,
    per_s,
    producer_inputs,
    read_once_us,
    tensor_bytes,
    time_cuda,
    warm_up_clocks,
)

#: The upstream-style producer's warps (``accval.kernels.baselines``): the fastest of 1, 2, 4 and 8 at every M
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
    #: accval rows: the same, for its kernels launched bare into buffers made beforehand (compiled
    #: kernels, arguments bound: ``accval.kernels.host.bare_launch``), what launching alone costs on this host
    bare_as_called_us: float | None = None
    #: the same after allocating the tensors the public call returns: the floor of any Python function
    #: that launches these kernels and returns new tensors
    bare_outputs_as_called_us: float | None = None
    #: rows a target compares (the producer's accval and upstream-style rows): the median of a second
    #: timing, in a second round after every row of the shape, layout and M was timed once; the two
    #: timings' difference is what timing the same thing twice gives (``targets.noise``)
    again_us: float | None = None
    #: rows a host-path target reads (accval's producer and consumer): ``as_called_us`` timed a second time,
    #: after every other row of the shape, layout and M; the two timings' difference is what timing the
    #: host path twice gives on this host (``targets.noise``)
    as_called_again_us: float | None = None


def _two_step(o, pos, cache, rope, g, is_neox):
    """The unfused legacy path: inverse RoPE in place, then 1x128 quantize with permute(1,0,2)."""
    x = inverse_rope_(o.clone(), pos, cache, rope, is_neox)
    return quantize_1x128_permute102(x.reshape(o.shape[0], g, -1))


_two_step_compiled = torch.compile(_two_step, dynamic=True)


def producer_rows(m, g, ceiling, shape, layout="neox", with_compiled=False, reps_ms=None):
    """The producer's rows: accval as dispatched, the upstream-style kernel, the unfused legacy path
    eager (and compiled), and a copy of the same bytes (a reference, not a baseline)."""
    rope, hpg, d = DSV4_PRO["rope_dim"], DSV4_PRO["heads_per_group"], DSV4_PRO["head_dim"]
    is_neox = LAYOUTS[layout]
    o, pos, cache, p, fp8, scale, nbytes = producer_inputs(m, g, is_neox)
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
        med, p20, p80, how = time_cuda(fn, reps_ms)
        timings[impl] = (med, p20, p80, how, None if called is None else as_called_us(called, med))
    # Not a baseline: the producer's traffic as a plain device copy (half of the bytes read, half
    # written), timed the same way. What the memory gives at this size, with the launch and tail
    # latency a small kernel pays, which a ceiling measured on large copies does not show.
    timings[COPY_SAME_BYTES] = (*copy_us(nbytes // 2, reps_ms), None)
    again = {impl: time_cuda(variants[impl][0], reps_ms).median_us for impl in ("accval", UPSTREAM_STYLE)}
    called_again = as_called_us(variants["accval"][1], timings["accval"][0])
    configs = {"accval": launched_config(cfg, g * hpg, m), UPSTREAM_STYLE: f"one program per (token, head), {UPSTREAM_STYLE_WARPS} warps",
               COPY_SAME_BYTES: "fastest of 1/4/8-byte element copies"}
    launch = producer_launch(p, o, pos, cache, fp8, scale, cfg)
    bare = as_called_us(bare_launch([launch]), timings["accval"][0])
    bare_outputs = as_called_us(bare_launch([launch], [(p.fp8_shape(), fp8.dtype), (p.scale_shape(), scale.dtype)]),
                                timings["accval"][0])
    rows = []
    for impl, (med, p20, p80, how, called) in timings.items():
        tbs = per_s(nbytes, med)
        rows.append(Row("producer", impl, shape, m, g, med, p20, p80, nbytes, 0, tbs, 0.0, 100 * tbs / ceiling, how,
                        configs.get(impl, ""), layout, called, *((bare, bare_outputs) if impl == "accval" else (None, None)),
                        again_us=again.get(impl), as_called_again_us=called_again if impl == "accval" else None))
    return rows


def _what_ran(ran: list) -> str:
    """The provenance record of a call (its last launch), as a row's ``config``: implementation and details."""
    if not ran:
        return "no provenance recorded"
    last = ran[-1]
    return f"{last.impl}: " + ", ".join(f"{k}={v}" for k, v in last.details)


def consumer_rows(m, g, ceiling, shape, reps_ms=None):
    a, a_scale, w_fp8, w_scale, n, k = consumer_inputs(m, g)
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
        med, p20, p80, how = time_cuda(fn, reps_ms)
        nbytes = tensor_bytes(a, a_scale, w_fp8, w_scale) + g * m * n * 2 if impl != "bf16-bmm" else tensor_bytes(a_bf16, w_bf16) + g * m * n * 2
        ours = impl == "accval-triton"
        if ours:
            with provenance.capture() as ran:  # the row names what ran, not what the table asks for
                fn()
            config = _what_ran(ran)
            out = torch.empty(g, m, n, device="cuda", dtype=torch.bfloat16)
            launches = consumer_launches(a, a_scale, w_fp8, w_scale, out)
            bare = as_called_us(bare_launch(launches), med)
            bare_outputs = as_called_us(bare_launch(launches, [(tuple(out.shape), out.dtype)]), med)
        rows.append(Row("consumer", impl, shape, m, g, med, p20, p80, nbytes, flops, per_s(nbytes, med),
                        per_s(flops, med), 100 * per_s(nbytes, med) / ceiling, how,
                        config if ours else "",
                        "", as_called_us(fn, med) if ours else None, *((bare, bare_outputs) if ours else ())))
    ours = rows[0]  # the host path timed again, after the other rows of this shape and M
    ours.as_called_again_us = as_called_us(variants[ours.impl], ours.median_us)
    if m <= CONSUMER_SMALL_M:  # a reference, as for the producer: the consumer's bytes as a plain device copy
        nbytes = tensor_bytes(a, a_scale, w_fp8, w_scale) + g * m * n * 2
        med, p20, p80, how = copy_us(nbytes // 2, reps_ms)
        rows.append(Row("consumer", COPY_SAME_BYTES, shape, m, g, med, p20, p80, nbytes, 0, per_s(nbytes, med), 0.0,
                        100 * per_s(nbytes, med) / ceiling, how, "fastest of 1/4/8-byte element copies"))
        inputs = tensor_bytes(a, a_scale, w_fp8, w_scale)  # what any consumer must read
        (med, p20, p80, how), (per_sm, block, stages, warps) = read_once_us(inputs, reps_ms)
        rows.append(Row("consumer", READ_ONCE_INPUTS, shape, m, g, med, p20, p80, inputs, 0, per_s(inputs, med), 0.0,
                        100 * per_s(inputs, med) / ceiling, how,
                        f"fastest of {len(READ_ONCE_LAUNCHES)} launches: {per_sm} programs per SM, {warps} warps, "
                        f"{block} words per step, {stages} stage(s)"))
    return rows


def chain_rows(m, g, ceiling, shape, layout="neox", reps_ms=None):
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
        med, p20, p80, how = time_cuda(fn, reps_ms)
        rows.append(Row("chain", impl, shape, m, g, med, p20, p80, 0, flops, 0.0, per_s(flops, med), 0.0, how,
                        "", layout, as_called_us(fn, med) if impl == "fp8-chain" else None))
    return rows


def run(ops=("producer", "consumer", "chain"), ms=(64, 256, 1024, 1500, 2048, 4096, 8192), shapes=("dep8", "tep8"),
        out_dir: Path | None = None, progress=True, layouts=("neox", "gptj"), reps_ms=200, with_compiled=False) -> dict:
    """Time every row (see :mod:`accval.bench`); ``reps_ms`` is do_bench's window per row (the copy
    ceiling's copies included), ``with_compiled`` adds the torch.compile'd two-step path (a compile
    per layout). With ``out_dir``, writes the JSON, Markdown and PNG there."""
    if not torch.cuda.is_available():
        raise RuntimeError("accval bench needs a CUDA GPU; this machine has none (nothing is timed in the interpreter)")
    builders = {"producer": producer_rows, "consumer": consumer_rows, "chain": chain_rows}
    unknown = set(ops) - set(builders)
    if unknown:
        raise ValueError(f"--ops: expected a subset of {sorted(builders)}, got {sorted(unknown)}")
    if not layouts or set(layouts) - set(LAYOUTS):
        raise ValueError(f"--layouts: expected a non-empty subset of {sorted(LAYOUTS)}, got {list(layouts)}")
    warm_up_clocks()
    env = environment()
    by_size = copy_bandwidths(reps_ms)
    ceiling = max(by_size.values())
    rows: list[Row] = []
    work = [(op, shape, m, layout) for op in ops for shape in shapes for m in ms
            for layout in (layouts if op != "consumer" else (None,))]

    def result_of(complete: bool) -> dict:
        return {"schema": 1, **env, "complete": complete, "reps_ms": reps_ms, "copy_ceiling_tb_per_s": ceiling,
                "copy_tb_per_s_by_mib": {str(k): v for k, v in by_size.items()},
                "provenance": {f"{k[0]}:{k[1]}": v for k, v in provenance.COUNTS.items()},
                "rows": [dataclasses.asdict(r) for r in rows]}

    done, total = 0, len(work)
    try:
        if progress:
            from rich.progress import track

            work = track(work, description="bench")
        for op, shape, m, layout in work:
            extra = {"with_compiled": with_compiled} if op == "producer" else {}
            extra["reps_ms"] = reps_ms
            rows += builders[op](m, SHAPES[shape], ceiling, shape, *((layout,) if layout else ()), **extra)
            torch.cuda.empty_cache()
            done += 1
    except BaseException:  # an interrupt or a failure: the rows measured are kept, marked incomplete
        if out_dir is not None and rows:
            path = write(result_of(complete=False), Path(out_dir))
            print(f"accval bench: stopped after {done} of {total} (op, shape, M, layout) groups; the {len(rows)} "
                  f"rows measured are saved in {path} (marked incomplete)", file=sys.stderr, flush=True)
        raise
    result = result_of(complete=True)
    if out_dir is not None:
        write(result, Path(out_dir))
    return result
