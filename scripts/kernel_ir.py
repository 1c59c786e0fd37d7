"""Compile the consumer's Triton kernels for a Hopper GPU on any machine (no GPU needed) and say what the
compiler made of their k loop; with ``--against REV``, whether another revision's kernels compile to
the same instructions; with ``--producer``, what the producer's straight kernel costs in registers,
shared memory and layout conversions at each layout and the heads and warps per program the
Hopper tables give; with ``--wgmma``, the consumer's Gluon kernel (``accval/kernels/fp8_block_bmm_wgmma.py``,
sm90) as the table launches it, without deferring each chunk's last product, without pinning the scaling
between waits, and at 2 and 1 blocks per chunk: its wgmma waits, the multiply-adds between two waits,
registers, spills, and what ptxas says of its wgmma pipeline (C7512/C7514: "wgmma.mma_async instructions
are serialized", and why; C7517: a wait it injected).

    python scripts/kernel_ir.py [--against REV] [--arch 90] [--out DIR]
    python scripts/kernel_ir.py --producer [--arch 90] [--json]
    python scripts/kernel_ir.py --wgmma [--json]

For each launch variant (pointer or TMA loads, K split or not, scales prefetched or not) it prints:
the tile copies the pipeliner made asynchronous (``cp.async``: ``async_copy``; TMA: ``tma_copy``), the
plain loads left inside the k loop and how many of them the same iteration uses (each a round trip
the loop waits for; a prefetched load is used by the next iteration), the ``pendings`` of the
dot's wait (0: every dot finishes before the next is issued) and the shared memory. ``--against``
compiles REV's ``accval/kernels/fp8_block_bmm.py`` (with today's helper modules) the same way and compares each
variant's PTX with register numbers and debug labels taken out: "same" means the same instructions in
some order, so it cannot show a reordering. The integer arguments are specialized as at the
DeepSeek-V4 shapes (multiples of 16), not on every value a real launch sees (a stride of 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # before kernels is imported: compile, never interpret

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from scripts.kernel_variants import load_variant, loaded_variants  # noqa: E402

#: integer arguments that are multiples of 16 at the DeepSeek-V4-Pro shapes (Triton specializes on it)
DIVISIBLE = {"N", "K", "stride_b_g", "stride_b_n", "stride_bs_g", "stride_bs_n", "stride_out_s", "stride_out_g",
             "stride_out_m"}
POINTERS = {"a_ptr": "*fp8e4nv", "b_ptr": "*fp8e4nv", "as_ptr": "*fp32", "bs_ptr": "*fp32"}

#: name -> (TMA kernel?, BLOCK_N, SPLIT_K, prefetch): the dispatch's launches at large and small M
VARIANTS = {
    "pointer": (False, 128, 1, False),
    "pointer prefetch": (False, 128, 1, True),
    "pointer split 16": (False, 64, 16, False),
    "pointer split 16 prefetch": (False, 64, 16, True),
    "tma": (True, 128, 1, False),
    "tma prefetch": (True, 128, 1, True),
}


def compile_variant(mod, tma: bool, block_n: int, split: int, prefetch: bool, arch: int, num_stages: int = 3):
    fn = mod._fp8_block_bmm_tma_kernel if tma else mod._fp8_block_bmm_kernel
    const = dict(BLOCK_M=64, BLOCK_N=block_n, SPLIT_K=split, SCALE_M_ALIGN=4, SOFTWARE=False, DEFER_SCALE=False,
                 PREFETCH_SCALES=prefetch, PDL=False)  # the kernel alone (no dependent launch)
    params = [p.name for p in fn.params]
    const = {k: v for k, v in const.items() if k in params}
    sig, divisible = {}, []
    for i, name in enumerate(params):
        if name in const:
            sig[name] = "constexpr"
        elif name == "a_desc":
            sig[name] = "tensordesc<fp8e4nv[64, 128]>"
        elif name == "b_desc":
            sig[name] = f"tensordesc<fp8e4nv[{block_n}, 128]>"
        elif name == "out_ptr":
            sig[name] = "*bf16" if split == 1 else "*fp32"
        else:
            sig[name] = POINTERS.get(name, "i32")
        if name in POINTERS or name == "out_ptr" or name in DIVISIBLE:
            divisible.append(i)
    src = ASTSource(fn, sig, const, attrs={(i,): [["tt.divisibility", 16]] for i in divisible})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=4, num_stages=num_stages, enable_fp_fusion=False))  # as launched


def loop_facts(compiled) -> dict:
    """The k loop's facts; the loop is the TTGIR from the first ``scf.for`` to the first ``scf.yield``
    (the consumer's loop body has no nested region). Raises ValueError for a kernel without a loop."""
    ttgir = compiled.asm["ttgir"]
    if "scf.for" not in ttgir:
        raise ValueError("no scf.for in the TTGIR (a loop without iterations, or one Triton unrolled)")
    loop = ttgir[ttgir.index("scf.for"):]
    loop = loop[:loop.index("scf.yield")]
    names = re.findall(r"(%[\w#]+) = tt\.load ", loop)
    after = {n: loop[loop.index(f"{n} = tt.load"):].split("\n", 1)[1] for n in names}
    return {"async_copy": ttgir.count("ttg.async_copy_global_to_local"),
            "tma_copy": ttgir.count("async_tma_copy_global_to_local"),
            "loads_in_loop": len(names),
            "used_same_iteration": sum(bool(re.search(re.escape(n) + r"\b", after[n])) for n in names),
            "dot_wait_pendings": sorted(set(re.findall(r"pendings = (\d+)", ttgir))),
            "shared_bytes": compiled.metadata.shared}


def instructions(ptx: str) -> Counter:
    """The kernel's PTX instructions, register numbers and labels taken out, comments and debug lines dropped."""
    body = ptx[ptx.index(".visible .entry"):]
    body = body[:body.index("\n}\n")]
    out = Counter()
    for line in body.splitlines():
        line = line.split("//")[0].strip()
        if not line or line.startswith((".loc", "$L")):
            continue
        out[re.sub(r"%(r|rd|f|p|rs|fd|b|h|hh)\d+", r"%\1", re.sub(r"\$L__\w+", "L", line))] += 1
    return out


def load_revision(rev: str):
    text = subprocess.run(["git", "show", f"{rev}:accval/kernels/fp8_block_bmm.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    return load_variant("fp8_block_bmm.py", "fp8_block_bmm", "ir_" + re.sub(r"\W", "_", rev), [], source=text)


#: the producer's integer arguments at the DeepSeek-V4-Pro shapes: 1 (Triton makes those constants, as a
#: launch does) or multiples of 16 (the cos/sin cache is [max_pos, 64]: cos half, sin half)
PRODUCER_ONES = {"stride_pos": 1, "stride_cs_i": 1}
PRODUCER_DIVISIBLE = {"M", "rows_end", "stride_o_m", "stride_o_h", "stride_cs_pos", "stride_cs_sin", "stride_fp8_g",
                      "stride_fp8_m", "stride_scale_g", "stride_scale_b"}
PRODUCER_POINTERS = {"o_ptr": "*bf16", "pos_ptr": "*i64", "cs_ptr": "*fp32", "fp8_ptr": "*fp8e4nv", "scale_ptr": "*fp32"}


def compile_producer(mod, is_neox: bool, heads: int, arch: int, num_warps: int = 1, apart: bool | None = None):
    """The straight kernel (one token, ``heads`` heads per program) at the DeepSeek-V4-Pro head (D 512,
    rope 64, 16 heads per group), bf16 input, as the launcher sets it up for ``num_warps`` in a launch of
    many programs (NEOX programs of few rows rotate the rope slice apart: ``rope_apart``), or with the
    rope slice ``apart`` as asked."""
    fn = mod._inv_rope_fp8_quant_straight
    if apart is None:  # the dispatch's rule, asked of a DEP8 launch (128 heads) over 8192 tokens
        apart = mod.rope_apart(mod.LaunchConfig(1, num_warps, 1, heads_per_program=heads), 128, 8192, is_neox)
    const = dict(PRODUCER_ONES, HPG=16, D=512, ROPE=64, IS_NEOX=is_neox, NBH_P2=4, IN_DTYPE=tl.bfloat16,
                 INDEX_DTYPE=tl.int64, FP8_MAX=448.0, SOFTWARE=False, PAIR_WORD=None if is_neox else tl.int32,
                 ROPE_APART=apart, HEADS=heads)
    sig = {p.name: "constexpr" if p.name in const else PRODUCER_POINTERS.get(p.name, "i32") for p in fn.params}
    divisible = [i for i, p in enumerate(fn.params) if p.name in PRODUCER_POINTERS or p.name in PRODUCER_DIVISIBLE]
    src = ASTSource(fn, sig, {k: v for k, v in const.items() if k in sig},
                    attrs={(i,): [["tt.divisibility", 16]] for i in divisible})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=num_warps, num_stages=1, enable_fp_fusion=False))


def cuobjdump(compiled, flag: str) -> str | None:
    """``cuobjdump flag`` of the compiled kernel's cubin, with the cuobjdump Triton ships; None without it."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([str(tool), flag, f.name], capture_output=True, text=True).stdout


def resources(compiled) -> dict:
    """Registers and spill stack per thread of the compiled kernel (``cuobjdump -res-usage`` of its cubin,
    the tool Triton ships; None without it), its shared memory, and the layout conversions in its TTGIR."""
    regs = stack = None
    usage = cuobjdump(compiled, "-res-usage")
    found = usage and re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if found:
        regs, stack = int(found.group(1)), int(found.group(2))
    ttgir = compiled.asm["ttgir"]
    sass = cuobjdump(compiled, "-sass")
    return {"registers": regs, "spill_stack_bytes": stack, "shared_bytes": compiled.metadata.shared,
            "sass_instructions": None if sass is None else len(re.findall(r"^\s+/\*[0-9a-f]{4}\*/", sass, re.M)),
            "layout_conversions": ttgir.count("ttg.convert_layout"), "ptx_instructions": ptx_instructions(compiled)}


def ptx_instructions(compiled) -> int:
    """The instructions in the kernel's PTX (a program's serial work where one program's latency is the time)."""
    count = 0
    for line in compiled.asm["ptx"].splitlines():
        line = line.strip()
        if line and not line.startswith(("//", ".", "{", "}", ")", "(")) and not line.endswith((":", ",")):
            count += 1
    return count


def compile_upstream_style(is_neox: bool, arch: int, num_warps: int = 1):
    """``accval.kernels.baselines``' upstream-style kernel (one program per token and head) at the same head."""
    from accval.kernels.baselines import _upstream_style_kernel as fn

    const = dict(HPG=16, D=512, ROPE=64, IS_NEOX=is_neox, FP8_MAX=448.0, AMAX_FLOOR=1e-10)
    sig = {p.name: "constexpr" if p.name in const else PRODUCER_POINTERS.get(p.name, "i32") for p in fn.params}
    divisible = [i for i, p in enumerate(fn.params) if p.name in PRODUCER_POINTERS or p.name in PRODUCER_DIVISIBLE]
    src = ASTSource(fn, sig, const, attrs={(i,): [["tt.divisibility", 16]] for i in divisible})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps, num_stages=1))


#: (heads, warps) per program of the straight-kernel launches the Hopper tables give
PRODUCER_LAUNCHES = ((1, 1), (2, 1), (4, 1), (8, 2))


#: (BLOCK_M, warps, TMA buffers, blocks per chunk, scaling pinned between waits, each chunk's last product
#: deferred to the next chunk, persistent, loader warp) of the Gluon kernel compiled by ``--wgmma``: the table's
#: two launches, the same persistent, with a loader warp, not deferred, not pinned either, and at 2 and 1
#: blocks per chunk
WGMMA_VARIANTS = ((128, 8, 4, 4, True, True, False, False), (64, 4, 4, 4, True, True, False, False),
                  (128, 8, 4, 4, True, True, True, False), (64, 4, 4, 4, True, True, True, False),
                  (128, 8, 4, 4, True, True, False, True), (64, 4, 4, 4, True, True, False, True),
                  (128, 8, 4, 4, True, False, False, False), (128, 8, 4, 4, False, False, False, False),
                  (128, 8, 4, 2, False, False, False, False), (128, 8, 4, 1, True, False, False, False))


def compile_wgmma(block_m: int, warps: int, stages: int, unroll: int, pin: bool = True, defer: bool = True,
                  persistent: bool = False, loader: bool = False, split_k: int = 1):
    """The Gluon consumer for sm90 with its constexprs as the dispatch sets them; integer arguments plain
    ``i32`` (no divisibility specialization); ``split_k`` > 1 writes fp32 partials."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    mod = importlib.import_module("accval.kernels.fp8_block_bmm_wgmma")
    fn = mod.fp8_block_bmm_wgmma_kernel
    layout = repr(gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2))
    const = dict(BLOCK_M=block_m, BLOCK_N=128, STAGES=stages, SCALE_M_ALIGN=4, UNROLL=unroll, PIN_FMA=pin,
                 DEFER_LAST=defer, PERSISTENT=persistent, LOADER=loader, LOADER_REGS=mod.LOADER_REGS, SPLIT_K=split_k)
    sig = {}
    for p in fn.params:
        if p.name in const:
            sig[p.name] = "constexpr"
        elif p.name in ("a_desc", "b_desc"):
            sig[p.name] = f"tensordesc<fp8e4nv[{block_m if p.name == 'a_desc' else 128}, 128],{layout}>"
        else:
            sig[p.name] = {"as_ptr": "*fp32", "bs_ptr": "*fp32", "out_ptr": "*fp32" if split_k > 1 else "*bf16"}.get(p.name, "i32")
    options = dict(num_warps=warps, enable_fp_fusion=False)
    if loader:
        options["maxnreg"] = mod.loader_maxnreg(block_m, warps)
    return triton.compile(GluonASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32), options=options)


def ptxas_notes(compiled) -> list[str]:
    """What Triton's ptxas says of the kernel's PTX for sm90a: registers, and its performance notes."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as d:
        ptx = Path(d) / "k.ptx"
        ptx.write_text(compiled.asm["ptx"])
        res = subprocess.run([get_ptxas(90).path, "-arch=sm_90a", "-v", str(ptx), "-o", str(Path(d) / "k.cubin")],
                             capture_output=True, text=True)
    return [re.sub(r"\s+", " ", re.split(r"info\s*:\s*", line, maxsplit=1)[-1]).strip() for line in (res.stdout + res.stderr).splitlines()
            if "Potential Performance Loss" in line or "registers" in line]


def _fact_row(rows: dict, name: str, facts, as_json: bool) -> None:
    """``rows[name] = facts()``, or the error of a Triton without this backend (a row, not a stop); printed
    unless ``as_json``."""
    try:
        rows[name] = facts()
    except Exception as e:  # noqa: BLE001 - a Triton without Gluon or this backend: a row
        rows[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    if not as_json:
        print(f"{name:14s} " + " ".join(f"{k}={v}" for k, v in rows[name].items()), flush=True)


def _wgmma_facts(compiled) -> dict:
    ptx = compiled.asm["ptx"]
    waits = sorted(set(re.findall(r"wgmma.wait_group.sync.aligned (\d+)", ptx)))
    # the multiply-adds between two consecutive wgmma waits, most of any such stretch: one block's
    # scaling (BLOCK_M x 128 / threads) when each is pinned between waits, a whole chunk's when sunk
    stretches = [len(re.findall(r"\bfma\.rn\.f32\b", part)) for part in re.split(r"wgmma\.wait_group", ptx)[1:]]
    # a warp-specialized launch's register caps per partition (the launch's own is "registers")
    maxnreg = sorted({int(n) for n in re.findall(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+(\d+)", ptx)})
    return {"wait_group": waits, "max_fma_between_waits": max(stretches, default=0), **resources(compiled),
            "setmaxnreg": maxnreg, **k_loop_barriers(compiled), "ptxas": ptxas_notes(compiled)}


def k_loop_barriers(compiled) -> dict:
    """In the SASS (Triton's cuobjdump; nothing without it): the loop with the most wgmma instructions (the
    k loop), its wgmma count and the thread-block barriers (``BAR.SYNC``) each of its iterations waits at."""
    sass = cuobjdump(compiled, "-sass")
    if sass is None:
        return {}
    code = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    loops = []
    for addr, ins in code:
        # a loop's back edge is a conditional branch backwards (an unconditional one returns from a
        # slow path, such as a barrier wait's retry, into the code it left)
        jump = re.match(r"@!?U?P\d\s+BRA\s+0x([0-9a-f]+)", ins.strip())
        if jump and int(jump.group(1), 16) < addr:
            body = [i for a, i in code if int(jump.group(1), 16) <= a <= addr]
            loops.append((sum("GMMA" in i for i in body), -len(body), sum("BAR.SYNC" in i for i in body)))
    wgmma, _, bars = max(loops, default=(0, 0, 0))
    return {"k_loop_wgmma": wgmma, "k_loop_bar_sync": bars}


def wgmma_main(as_json: bool) -> int:
    rows = {}
    if not as_json:
        print(f"triton {triton.__version__}, sm90, consumer Gluon wgmma kernel")
    for block_m, warps, stages, unroll, pin, defer, persistent, loader in WGMMA_VARIANTS:
        name = (f"BLOCK_M {block_m} {warps} warps {stages} buffers {unroll} per chunk" + ("" if pin else " not pinned")
                + ("" if defer or not pin else " not deferred") + (" persistent" if persistent else "")
                + (" loader warp" if loader else ""))
        _fact_row(rows, name, lambda: _wgmma_facts(compile_wgmma(block_m, warps, stages, unroll, pin, defer, persistent,
                                                                 loader)), as_json)
    if as_json:
        print(json.dumps(rows))
    return 0


def producer_main(arch: int, as_json: bool) -> int:
    mod = importlib.import_module("accval.kernels.inv_rope_fp8_quant")
    rows = {}
    if not as_json:
        print(f"triton {triton.__version__}, sm{arch}, producer straight kernel, DeepSeek-V4-Pro head")
    for layout in ("neox", "gptj"):
        for heads, warps in PRODUCER_LAUNCHES:
            name = f"{layout} {heads} head{'s' if heads > 1 else ''} {warps} warp{'s' if warps > 1 else ''}"
            _fact_row(rows, name, lambda: resources(compile_producer(mod, layout == "neox", heads, arch, warps)), as_json)
        _fact_row(rows, f"{layout} upstream-style 1 warp", lambda: resources(compile_upstream_style(layout == "neox", arch)),
                  as_json)
    # tep8 M=64's NEOX launch (1024 one-warp programs: the rope slice in the row's tile), and the same with what
    # the upstream-style kernel leaves out (not bit-exact: what each piece of the exact arithmetic costs)
    _fact_row(rows, "neox 1 head 1 warp, rope in the row's tile", lambda: resources(compile_producer(mod, True, 1, arch, 1, False)),
              as_json)
    speed_probe = importlib.import_module("scripts.speed_probe")
    left_out = {"no rounding": speed_probe.M64_VARIANTS["no-round"], "inexact divisions": speed_probe.WAVE_VARIANTS["inexact-both"]}
    left_out["neither"] = left_out["no rounding"] + left_out["inexact divisions"]
    with loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "irp", left_out) as mods:
        for name, variant in mods.items():
            _fact_row(rows, f"neox 1 head 1 warp, rope in the row's tile, {name}",
                      lambda: resources(compile_producer(variant, True, 1, arch, 1, False)), as_json)
    if as_json:
        print(json.dumps(rows))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", metavar="REV", help="compare each variant's PTX with this git revision's")
    ap.add_argument("--arch", type=int, default=90, help="compute capability to compile for (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="write each variant's TTGIR and PTX here")
    ap.add_argument("--json", action="store_true", help="print {variant: facts} as JSON instead of the table")
    ap.add_argument("--producer", action="store_true", help="the producer's straight kernel instead: registers, "
                                                            "spills, shared memory, layout conversions")
    ap.add_argument("--wgmma", action="store_true", help="the consumer's Gluon wgmma kernel (sm90) instead: its "
                                                         "waits, registers, spills and ptxas' wgmma notes")
    args = ap.parse_args()
    if args.wgmma:
        if args.against or args.out or args.producer or args.arch != 90:
            print("--wgmma: expected no --against, --out, --producer or --arch (it compiles one kernel for sm90)",
                  file=sys.stderr)
            return 2
        return wgmma_main(args.json)
    if args.producer:
        if args.against or args.out:
            print("--producer: expected neither --against nor --out (they compare and write the consumer's kernels)",
                  file=sys.stderr)
            return 2
        return producer_main(args.arch, args.json)
    current = importlib.import_module("accval.kernels.fp8_block_bmm")  # the package's fp8_block_bmm is the function

    try:
        other = load_revision(args.against) if args.against else None
    except (subprocess.CalledProcessError, ImportError, SyntaxError, RuntimeError) as e:
        print(f"--against {args.against}: expected a revision whose accval/kernels/fp8_block_bmm.py imports here, got "
              f"{type(e).__name__}: {getattr(e, 'stderr', None) or e}", file=sys.stderr)
        return 2
    try:
        rows = {}
        if not args.json:
            print(f"triton {triton.__version__}, sm{args.arch}, BLOCK_M 64, 4 warps, 3 stages")
        for name, (tma, block_n, split, prefetch) in VARIANTS.items():
            try:
                compiled = compile_variant(current, tma, block_n, split, prefetch, args.arch)
                facts = rows[name] = loop_facts(compiled)
            except Exception as e:  # noqa: BLE001 - a Triton without this backend or feature: a row
                rows[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                if not args.json:
                    print(f"{name:28s} does not compile here: {rows[name]['error'][:140]}")
                continue
            line = f"{name:28s} " + " ".join(f"{k}={v}" for k, v in facts.items())
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                stem = name.replace(" ", "_")
                (args.out / f"{stem}.ttgir").write_text(compiled.asm["ttgir"])
                (args.out / f"{stem}.ptx").write_text(compiled.asm["ptx"])
            theirs_fn = None if other is None else getattr(other[0], "_fp8_block_bmm_tma_kernel" if tma else "_fp8_block_bmm_kernel", None)
            if other is not None and (theirs_fn is None or (prefetch and "PREFETCH_SCALES" not in [p.name for p in theirs_fn.params])):
                line += f" | vs {args.against}: no such launch there"
            elif other is not None:
                try:
                    theirs = instructions(compile_variant(other[0], tma, block_n, split, prefetch, args.arch).asm["ptx"])
                    ours = instructions(compiled.asm["ptx"])
                    differ = sum(((ours - theirs) + (theirs - ours)).values())
                    line += f" | vs {args.against}: " + ("same" if not differ else f"{differ} instructions differ")
                except Exception as e:  # noqa: BLE001
                    line += f" | vs {args.against}: does not compile ({type(e).__name__})"
            if not args.json:
                print(line, flush=True)
        if args.json:
            print(json.dumps(rows))
    finally:
        if other is not None:
            other[1].unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
