"""Issue 21's targets over an ``accval bench`` result: each target's worst case over the shapes,
layouts and M it covers, where that worst case is, and whether it is met. Pure functions of the
result dict (the results page reads committed runs with them, on any machine)."""

from __future__ import annotations

#: The producer row that times a plain copy of the producer's bytes (a reference, not a baseline).
COPY_SAME_BYTES = "copy-same-bytes"
#: The consumer's small-M target (2x ``torch._scaled_mm``) covers M up to this; the consumer gets a
#: same-bytes copy row there, where reading the weights is most of its time.
CONSUMER_SMALL_M = 256
#: The upstream-style producer's row (``accval.kernels.baselines``).
UPSTREAM_STYLE = "upstream-style"
#: The consumer row at M <= CONSUMER_SMALL_M that times a kernel reading the consumer's input bytes once,
#: with no math and no output (``accval.bench.timing.read_once_us``): a floor for any consumer, not a baseline.
READ_ONCE_INPUTS = "read-once-inputs"

#: The host-path target: at this M, "as called" minus the CUDA-graph kernel time at most this many us.
HOST_PATH_M = 64
HOST_PATH_BUDGET_US = 15.0


def row_layout(r: dict) -> str:
    """A row's RoPE layout; a producer or chain row that records none (an older report) is NEOX."""
    return r.get("layout") or ("neox" if r["op"] != "consumer" else "")


def find_row(rows: list[dict], op: str, impl: str, shape: str, m: int, layout: str | None = None) -> dict | None:
    hit = [r for r in rows if (r["op"], r["impl"], r["shape"], r["M"]) == (op, impl, shape, m)
           and (layout is None or row_layout(r) == layout)]
    return hit[0] if hit else None


def median_us(rows: list[dict], op: str, impl: str, shape: str, m: int, layout: str | None = None) -> float | None:
    r = find_row(rows, op, impl, shape, m, layout)
    return r["median_us"] if r else None


def verdict(t: dict) -> str:
    """A target's verdict as the reports write it: yes, **no**, or within noise (:func:`noise`)."""
    return "yes" if t["met"] else "within noise" if t.get("within_noise") else "**no**"


def excess_us(ours: dict | None, other: dict | None, factor: float) -> tuple[float, float] | None:
    """For a target "``ours`` takes at most ``factor`` x ``other``" between two rows of one run, each timed twice
    (``again_us``): ``(us over what it allows, spread)``, the spread being the larger of the two rows'
    differences between their two timings; None unless both were timed twice."""
    if ours is None or other is None or ours.get("again_us") is None or other.get("again_us") is None:
        return None
    spread = max(abs(ours["median_us"] - ours["again_us"]), abs(other["median_us"] - other["again_us"]))
    return ours["median_us"] - factor * other["median_us"], spread


def over_by(pairs: list[tuple[str, dict | None, dict | None]], factor: float) -> dict:
    """``{where: excess_us(ours, other, factor)}`` over ``(where, ours, other)``, where both were timed twice."""
    return {where: over for where, ours, other in pairs for over in [excess_us(ours, other, factor)] if over}


def noise(missed: list[str], over_us: dict | None) -> dict:
    """A missed target is "within noise" when, wherever it is missed, the rows were timed twice and it is
    over by less than the spread of timing the same row twice (a difference below that spread is not a
    measured one): ``{"within_noise": bool, "noise": text}``; ``{}`` for a met target or one whose rows
    were never timed twice (an older report)."""
    if not missed or not over_us:
        return {}
    said = [f"{w}: {over_us[w][0]:.2f} us over, timing a row twice differed by {over_us[w][1]:.2f}" if w in over_us
            else f"{w}: not timed twice" for w in missed]
    within = all(w in over_us and over_us[w][0] < over_us[w][1] for w in missed)
    return {"within_noise": within, "noise": "; ".join(said)}


def evaluate(result: dict) -> list[dict]:
    """Issue 21's targets, each ``{"target", "want", "measured", "where", "met"}`` with its worst case
    over the shapes, layouts and M it covers and where that worst case is. A target whose rows were
    not run is left out."""
    rows = result["rows"]
    out = []

    def add(name, want, values, fmt, reference=None, over_us=None):
        """``reference``: {where: text} said next to the worst case (what bounds it on this card).
        ``over_us``: {where: (us, spread)} for a target whose rows were each timed twice: how many us it is
        over what the target allows there, and the larger of its rows' differences between their two
        timings (a comparison's two rows; the host path's one row, "as called"). The target is "within
        noise" when it is missed only where that excess is below the spread (:func:`noise`)."""
        values = [(v, where) for v, where in values if v is not None]
        if values:
            pick = min if want[0] == ">=" else max
            ok = (lambda v: v >= want[1]) if want[0] == ">=" else (lambda v: v <= want[1])
            worst, where = pick(values, key=lambda t: t[0])
            missed = [w for v, w in values if not ok(v)]
            out.append({"target": name, "want": f"{want[0]} {fmt.format(want[1])}", "measured": fmt.format(worst),
                        "where": where, "met": not missed, "reference": (reference or {}).get(where, ""),
                        **noise(missed, over_us)})

    keys = sorted({(r["op"], r["shape"], r["M"], row_layout(r)) for r in rows}, key=lambda k: (k[0], k[1], k[3], k[2]))
    prod = [(sh, m, lay) for op, sh, m, lay in keys if op == "producer"]
    cons = [(sh, m) for op, sh, m, _ in keys if op == "consumer"]
    chain = [(sh, m, lay) for op, sh, m, lay in keys if op == "chain"]

    def ratio(num, den):
        return None if num is None or den is None else num / den

    def where(sh, m, lay=""):
        return f"{sh} {lay} M={m}".replace("  ", " ")

    add("producer GPT-J time / NEOX time, every M", ("<=", 1.03),
        [(ratio(median_us(rows, "producer", "accval", sh, m, "gptj"), median_us(rows, "producer", "accval", sh, m, "neox")),
          where(sh, m)) for sh, m, lay in prod if lay == "gptj"], "{:.3f}",
        over_us=over_by([(where(sh, m), find_row(rows, "producer", "accval", sh, m, "gptj"),
                          find_row(rows, "producer", "accval", sh, m, "neox")) for sh, m, lay in prod if lay == "gptj"],
                        1.03))
    add("producer % of a same-bytes copy, M >= 2048, both layouts", (">=", 75.0),
        [(None if ours is None else 100 * copy / ours, where(sh, m, lay)) for sh, m, lay in prod if m >= 2048
         for ours, copy in [(median_us(rows, "producer", "accval", sh, m, lay),
                             median_us(rows, "producer", COPY_SAME_BYTES, sh, m, lay) or float("nan"))]
         if copy == copy], "{:.0f}%")
    spreads = {}  # both rows' p20-p80, so a ratio below 1 can be told from the timings' own spread
    for sh, m, lay in prod:
        ours, theirs = find_row(rows, "producer", "accval", sh, m, lay), find_row(rows, "producer", UPSTREAM_STYLE, sh, m, lay)
        if ours is not None and theirs is not None and "p20_us" in ours and "p20_us" in theirs:
            overlap = ours["p20_us"] <= theirs["p80_us"] and theirs["p20_us"] <= ours["p80_us"]
            spreads[where(sh, m, lay)] = (f"p20-p80 us: accval {ours['p20_us']:.2f}-{ours['p80_us']:.2f}, upstream-style "
                                          f"{theirs['p20_us']:.2f}-{theirs['p80_us']:.2f} ({'' if overlap else 'not '}overlapping)")
    add("producer speed-up over the upstream-style kernel, every M, both layouts", (">=", 1.0),
        [(ratio(median_us(rows, "producer", UPSTREAM_STYLE, sh, m, lay), median_us(rows, "producer", "accval", sh, m, lay)),
          where(sh, m, lay)) for sh, m, lay in prod], "{:.2f}x", spreads,
        over_us=over_by([(where(sh, m, lay), find_row(rows, "producer", "accval", sh, m, lay),
                          find_row(rows, "producer", UPSTREAM_STYLE, sh, m, lay)) for sh, m, lay in prod], 1.0))
    for op, impl, sel in (("producer", "accval", prod), ("consumer", "accval-triton", [(sh, m, "") for sh, m in cons])):
        vals, bare, twice = [], {}, {}
        for sh, m, lay in sel:
            r = find_row(rows, op, impl, sh, m, lay or None)
            if m == HOST_PATH_M and r is not None and r.get("as_called_us") is not None:
                vals.append((r["as_called_us"] - r["median_us"], where(sh, m, lay)))
                if r.get("as_called_again_us") is not None:  # timed twice: its miss can be told from noise
                    twice[where(sh, m, lay)] = (vals[-1][0] - HOST_PATH_BUDGET_US,
                                                abs(r["as_called_us"] - r["as_called_again_us"]))
                said = []
                if r.get("bare_as_called_us") is not None:
                    said.append(f"same, its kernels launched bare: {r['bare_as_called_us'] - r['median_us']:.1f}")
                if r.get("bare_outputs_as_called_us") is not None:
                    said.append(f"bare after allocating its outputs: {r['bare_outputs_as_called_us'] - r['median_us']:.1f}")
                if said:
                    bare[where(sh, m, lay)] = "; ".join(said)
        add(f"{op} host path: as called minus CUDA-graph kernel time, M = {HOST_PATH_M} (us)",
            ("<=", HOST_PATH_BUDGET_US), vals, "{:.1f}", bare, twice)
    floor = {}  # what a copy of the consumer's bytes takes, against what the target asks of the kernel
    for sh, m in cons:
        copy, mm = median_us(rows, "consumer", COPY_SAME_BYTES, sh, m), median_us(rows, "consumer", "torch-scaled-mm", sh, m)
        read = median_us(rows, "consumer", READ_ONCE_INPUTS, sh, m)
        if copy is not None and mm is not None:
            floor[where(sh, m)] = ((f"reading its input bytes once (no math, no output): {read:.1f} us; " if read else "")
                                   + f"a copy of its bytes: {copy:.1f} us; 2x torch._scaled_mm asks for <= {mm / 2:.1f} us")
    for label, sel, want in (("M >= 2048", lambda m: m >= 2048, 0.9),
                             (f"M <= {CONSUMER_SMALL_M}", lambda m: m <= CONSUMER_SMALL_M, 2.0)):
        add(f"consumer vs torch._scaled_mm blockwise, {label}", (">=", want),
            [(ratio(median_us(rows, "consumer", "torch-scaled-mm", sh, m), median_us(rows, "consumer", "accval-triton", sh, m)),
              where(sh, m)) for sh, m in cons if sel(m)], "{:.2f}x", floor if want == 2.0 else None)
    add("chain vs bf16 fallback, M = 8192, both layouts", (">=", 1.6),
        [(ratio(median_us(rows, "chain", "bf16-fallback", sh, m, lay), median_us(rows, "chain", "fp8-chain", sh, m, lay)),
          where(sh, m, lay)) for sh, m, lay in chain if m == 8192], "{:.2f}x")
    return out


def same_size_copy(result: dict) -> list[dict]:
    """Per (shape, layout, M): accval's producer time against a plain copy of the same bytes."""
    rows = result["rows"]
    out = []
    for r in rows:
        if r["op"] == "producer" and r["impl"] == COPY_SAME_BYTES:
            ours = median_us(rows, "producer", "accval", r["shape"], r["M"], row_layout(r))
            if ours is not None:
                out.append({"shape": r["shape"], "layout": row_layout(r), "M": r["M"], "mbytes": r["bytes"] / 1e6,
                            "accval_us": ours, "copy_us": r["median_us"], "pct_of_copy": 100 * r["median_us"] / ours})
    return out
