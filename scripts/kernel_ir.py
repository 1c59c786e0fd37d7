"""Compile the consumer's Triton kernels for a Hopper GPU on any machine (no GPU needed) and say what the
compiler made of their k loop; with ``--against REV``, whether another revision's kernels compile to
the same instructions.

    python scripts/kernel_ir.py [--against REV] [--arch 90] [--out DIR]

For each launch variant (pointer or TMA loads, K split or not, scales prefetched or not) it prints:
the tile copies the pipeliner made asynchronous (``cp.async``: ``async_copy``; TMA: ``tma_copy``), the
plain loads left inside the k loop and how many of them the same iteration uses (each a round trip
the loop waits for; a prefetched load is used by the next iteration), the ``pendings`` of the
dot's wait (0: every dot finishes before the next is issued) and the shared memory. ``--against``
compiles REV's ``kernels/fp8_block_bmm.py`` (with today's helper modules) the same way and compares each
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
from collections import Counter
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # before kernels is imported: compile, never interpret

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from scripts.kernel_variants import load_variant  # noqa: E402

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
                 PREFETCH_SCALES=prefetch)
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
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=4, num_stages=num_stages))


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
    text = subprocess.run(["git", "show", f"{rev}:kernels/fp8_block_bmm.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    return load_variant("fp8_block_bmm.py", "fp8_block_bmm", "ir_" + re.sub(r"\W", "_", rev), [], source=text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", metavar="REV", help="compare each variant's PTX with this git revision's")
    ap.add_argument("--arch", type=int, default=90, help="compute capability to compile for (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="write each variant's TTGIR and PTX here")
    ap.add_argument("--json", action="store_true", help="print {variant: facts} as JSON instead of the table")
    args = ap.parse_args()
    current = importlib.import_module("kernels.fp8_block_bmm")  # the package's fp8_block_bmm is the function

    try:
        other = load_revision(args.against) if args.against else None
    except (subprocess.CalledProcessError, ImportError, SyntaxError, RuntimeError) as e:
        print(f"--against {args.against}: expected a revision whose kernels/fp8_block_bmm.py imports here, got "
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
