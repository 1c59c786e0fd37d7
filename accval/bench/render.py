"""An ``accval bench`` result as Markdown (the targets first), and its JSON, Markdown and PNG files."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from .targets import COPY_SAME_BYTES, READ_ONCE_INPUTS, evaluate, row_layout, same_size_copy, verdict


def _ceiling_how(result: dict) -> str:
    by = result.get("copy_tb_per_s_by_mib")
    if not by:  # an older report: the ceiling of one 1 GiB copy
        return "read + write of 1 GiB"
    return "best read + write over copies of " + ", ".join(f"{k} MiB ({v:.2f})" for k, v in by.items())


def _fmt_us(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def to_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [f"# accval bench: {result['device']}", ""]
    if result.get("complete") is False:
        lines += [f"**Incomplete:** the run stopped after {len(rows)} rows; the targets below cover only those.", ""]
    met = evaluate(result)
    if met:
        lines += ["## Targets (issue 21; worst case over the shapes, layouts and M each covers)", "",
                  "| target | wanted | measured (worst) | worst at | met | same shape, for reference |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {t['target']} | {t['want']} | {t['measured']} | {t['where']} | {verdict(t)} | "
                  f"{'; '.join(x for x in (t['reference'], t.get('noise', '')) if x) or '-'} |" for t in met]
        lines += ["", "\"Launched bare\": the same kernels called as compiled, arguments and outputs made beforehand "
                  "(no validation, dispatch, allocation or provenance), timed like \"as called\", minus the same "
                  "CUDA-graph time: what launching alone adds on this host. Near zero or below it when the kernels "
                  "outlast the launches (back to back, the launches hide behind them, and inputs stay in L2 where "
                  "the graph timing flushes it). \"Bare after allocating its outputs\": the same launches after "
                  "allocating the tensors the public call returns: the floor of any Python function that launches "
                  "these kernels and returns new tensors. \"Within noise\": missed only by less than the "
                  "difference between two timings of one of the rows it reads (each is timed twice; a host path's "
                  "\"as called\" too).", ""]
    lines += [f"{result['date']} · torch {result['torch']} · triton {result['triton']} · CUDA {result['cuda']} · clocks "
              f"(sm, mem, max sm, power) {result['clocks']} · host CPU {result.get('host_cpu', 'not recorded')}", "",
              f"Device copy ceiling ({_ceiling_how(result)}, fastest of 1/4/8-byte element copies, same process): "
              f"**{result['copy_ceiling_tb_per_s']:.2f} TB/s**. Times: do_bench median and p20-p80 of CUDA-graph "
              "replays (no host launch overhead), L2 flushed before each repetition; a row timed otherwise says so. "
              "\"as called\": median us per call of the public function (host path included: validation, dispatch, "
              "allocation, provenance) called back to back without a graph. "
              f"`{COPY_SAME_BYTES}` rows (the producer's, and the consumer's at small M): a device copy moving that op's "
              "bytes, a reference for what the memory gives at that size, not a baseline. "
              f"`{READ_ONCE_INPUTS}` rows (the consumer's at small M): a kernel reading the consumer's input bytes "
              "once with no math and no output, the fastest of a few launches: what any consumer of that size takes "
              "at least.", ""]
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
            lines.append(f"| {r['shape']} G={r['G']} | {row_layout(r) or '-'} | {r['M']} | {impl} | {r['median_us']:.1f} | "
                         f"{r['p20_us']:.1f}-{r['p80_us']:.1f} | {_fmt_us(r.get('as_called_us'))} | "
                         f"{r['tb_per_s']:.2f} | {r['pct_copy_ceiling']:.0f} | {r['tflops']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def write(result: dict, out_dir: Path, stem: str | None = None) -> Path:
    """``<device>-<date>-<time>.json``, ``.md`` and ``.png`` (median us against M per op) under
    ``out_dir`` (``stem`` names them instead: a run's JSON rendered again); returns the JSON's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{result['device'].replace(' ', '_')}-{result['date']}-{_dt.datetime.now():%H%M%S}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(to_markdown(result))
    ops = list(dict.fromkeys(r["op"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(ops), figsize=(6 * len(ops), 4.5), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for (impl, shape, lay) in dict.fromkeys((r["impl"], r["shape"], row_layout(r)) for r in result["rows"] if r["op"] == op):
            pts = [(r["M"], r["median_us"]) for r in result["rows"]
                   if r["op"] == op and r["impl"] == impl and r["shape"] == shape and row_layout(r) == lay]
            ax.plot(*zip(*pts), marker="o", label=f"{impl} ({shape}{' ' + lay if lay else ''})")
        ax.set(xscale="log", yscale="log", xlabel="M (tokens)", ylabel="median us", title=f"{op} on {result['device']}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    return out_dir / f"{stem}.json"
