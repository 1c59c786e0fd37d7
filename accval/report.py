"""gsm8k A/B reports: write one (JSON, Markdown, PNG), print one, compare several (a nightly trend)."""

from __future__ import annotations

import gzip
import json
import shlex
import textwrap
from pathlib import Path

from . import stats

SCHEMAS = ("accval.gsm8k.ab/1",)


def load(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        if (p / "run.json").is_file() and not (p / "report.json").exists():
            raise ValueError(f"report: {path} holds a run that has no report yet (stopped before it finished, or still "
                             f"running); continue it with: accval gsm8k --ab --out {shlex.quote(str(path))} --resume")
        p = p / "report.json"
    if not p.is_file():
        raise ValueError(f"report: expected a report.json or a run directory holding one, got {path}")
    try:
        rep = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"report: {p} is not a text file (expected a report.json)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"report: {p} is not JSON ({e})") from None
    if not isinstance(rep, dict):
        raise TypeError(f"report: {p} holds a JSON {type(rep).__name__}, expected a report (a JSON object)")
    if rep.get("schema") not in SCHEMAS:
        raise ValueError(f"report: {p} has schema {rep.get('schema')!r}, expected one of {SCHEMAS}")
    problems = check(rep)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"report: {p} is not a complete {rep['schema']} report: {'; '.join(problems[:3])}{more}")
    rep.setdefault("out", str(p.parent))
    return rep


_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
_METRICS = {"accuracy": _NUM, "stderr": _NUM}
_PAIRED = {"delta": _NUM, "se": _NUM, "ci95": list, "b_only": int, "a_only": int, "mcnemar_p": _NUM,
           "mde_paired": _NUM, "mde_independent": _NUM}
#: What printing and comparing a report reads: key -> type, or a dict for a nested object.
FIELDS = {
    "created": str,
    "versions": dict,
    "settings": dict,
    "device": {"name": str},
    "task": {"num_fewshot": int, "questions": int, "limit": (int, type(None)), "config_sha256": str,
             "max_gen_toks": int, "data": {"source": str}},
    "model": {"id": str, "description": str, "weights_sha256": str},
    "mode": {"name": str, "execution": str, "sharding": str, "ranks": int},
    "arms": {"A": {"implementation": str, "site": (dict, type(None)),
                   "metrics": {"strict-match": _METRICS, "flexible-extract": _METRICS}},
             "B": {"implementation": str, "site": (dict, type(None)),
                   "metrics": {"strict-match": _METRICS, "flexible-extract": _METRICS}}},
    "paired": {"strict-match": _PAIRED, "flexible-extract": _PAIRED},
    "agreement": {"top1": _OPT_NUM, "kl": _OPT_NUM, "identical_generations": _OPT_NUM, "tokens": int},
    "thresholds": {"top1_agreement_floor": _NUM, "kl_ceiling": _NUM},
    "verdict": {"regression": bool, "reasons": list},
    "elapsed_s": _NUM,
}
_SITE = {"calls": int, "m_min": _OPT_NUM, "m_max": _OPT_NUM, "distinct_m": int, "calls_m_ge_1024": int,
         "calls_m_not_multiple_of_4": int, "contract_violations": int, "first_violation": _OPT_STR, "ran": dict}


def _check(obj, spec, where: str, out: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(obj, dict):
            out.append(f"{where or 'the report'}: expected an object, got {type(obj).__name__}")
            return
        for key, sub in spec.items():
            path = f"{where}.{key}" if where else key
            if key not in obj:
                out.append(f"{path} is missing")
            else:
                _check(obj[key], sub, path, out)
        return
    types = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(obj, bool) and bool not in types:  # JSON true is not a number here
        out.append(f"{where}: expected {'/'.join(t.__name__ for t in types)}, got bool")
    elif not isinstance(obj, types):
        out.append(f"{where}: expected {'/'.join(t.__name__ for t in types)}, got {type(obj).__name__}")


def check(rep: dict) -> list[str]:
    """What a report lacks or holds with the wrong type, of the fields :func:`to_markdown` and
    :func:`compare` read (empty: it can be printed)."""
    out: list[str] = []
    _check(rep, FIELDS, "", out)
    for name in ("A", "B"):
        site = rep.get("arms", {}).get(name, {}).get("site") if isinstance(rep.get("arms"), dict) else None
        if isinstance(site, dict):
            _check(site, _SITE, f"arms.{name}.site", out)
    out += _value_problems(rep)
    paired = rep.get("paired")
    if isinstance(paired, dict):
        for f, p in paired.items():
            ci = p.get("ci95") if isinstance(p, dict) else None
            if isinstance(ci, list) and (len(ci) != 2 or not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in ci)):
                out.append(f"paired.{f}.ci95: expected two numbers, got {ci!r}")
            elif isinstance(ci, list) and not ci[0] <= ci[1]:  # NaN fails too
                out.append(f"paired.{f}.ci95: expected [low, high] with low <= high, got {ci!r}")
    return out


#: Where a report's numbers can lie (a path of keys, "*" for any key): an accuracy is a fraction, a p-value
#: a probability; NaN is no value anywhere.
_RANGES = (
    (("arms", "*", "metrics", "*", "accuracy"), 0.0, 1.0),
    (("arms", "*", "metrics", "*", "stderr"), 0.0, float("inf")),
    (("paired", "*", "mcnemar_p"), 0.0, 1.0),
    (("paired", "*", "se"), 0.0, float("inf")),
    (("agreement", "top1"), 0.0, 1.0),
    (("agreement", "identical_generations"), 0.0, 1.0),
    (("agreement", "kl"), 0.0, float("inf")),
    (("elapsed_s",), 0.0, float("inf")),
)


def _value_problems(rep: dict) -> list[str]:
    """Numbers a report cannot hold (an accuracy of 7.5, a NaN agreement) and verdict reasons that are not
    text: each printed as if it were a result."""
    out = []

    def walk(obj, path, where):
        if not path:
            if isinstance(obj, _NUM) and not isinstance(obj, bool):
                lo, hi = where[1]
                if not lo <= obj <= hi:  # NaN fails both
                    out.append(f"{where[0]}: expected a number in [{lo:g}, {hi:g}], got {obj!r}")
            return
        if isinstance(obj, dict):
            for key in (obj if path[0] == "*" else [path[0]] if path[0] in obj else []):
                walk(obj[key], path[1:], (f"{where[0]}.{key}" if where[0] else key, where[1]))

    for path, lo, hi in _RANGES:
        walk(rep, path, ("", (lo, hi)))
    reasons = rep.get("verdict", {}).get("reasons") if isinstance(rep.get("verdict"), dict) else None
    if isinstance(reasons, list) and not all(isinstance(r, str) for r in reasons):
        out.append(f"verdict.reasons: expected a list of text, got {reasons!r}")
    return out


def ci95(p: dict) -> tuple[float, float]:
    """A filter's paired 95% interval, clipped to where a difference of two accuracies lies (reports
    written before :func:`accval.stats.paired_stats` clipped it hold intervals past -1 or 1)."""
    return stats.clip_difference(p["ci95"])


def mde_paired_text(p: dict) -> str:
    """The paired MDE in points, or "n/a" when no question is discordant: the paired variance is then
    estimated as 0, and an MDE of 0 would read as a run that sees every difference."""
    return "n/a" if p["b_only"] + p["a_only"] == 0 else _pct(p["mde_paired"])


def mde_independent_text(p: dict) -> str:
    """The independent MDE in points, or "n/a" when arm A scored 0 or 1 on every question: its binomial
    variance is then estimated as 0, and so would the MDE be."""
    return "n/a" if p["mde_independent"] == 0 else _pct(p["mde_independent"])


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _device(dev: dict) -> str:
    """The device, and every device of a run resumed across machines (earlier reports have no sessions)."""
    seen = list(dict.fromkeys(dev.get("sessions") or [dev["name"]]))
    if len(seen) <= 1:
        return dev["name"]
    return f"{dev['name']} (resumed: its {len(dev['sessions'])} sessions ran on {', then '.join(seen)})"


def prefill_text(tokens: int) -> str:
    """How a run's prompts are prefilled, from its ``prefill_tokens`` budget (the plan line and the report)."""
    return "prefill one prompt at a time per rank" if tokens == 1 else f"prefill up to {tokens} tokens per rank"


#: how a rank's M is counted while decoding (reports without ``mode.decode`` kept ended requests in the batch)
DECODE = "decoding, a rank's M is its requests still running"


def _matmul_and_prefill(settings: dict) -> str:
    """How the model's own matmuls ran (a report without ``settings.matmul`` recorded only the attention's)
    and how its prompts were prefilled (reports without ``settings.prefill_tokens`` prefilled one prompt at a
    time)."""
    matmul = (f"model matmuls {settings['matmul']}" if "matmul" in settings
              else f"attention {settings.get('attention', 'model')}")
    if settings.get("endpoint_a"):
        return "the servers' own matmuls and prefill"
    return f"{matmul}; {prefill_text(settings.get('prefill_tokens') or 1)}"


def _elapsed(rep: dict) -> str:
    """The run's time: the sum over its sessions (each invocation of the run directory) and, when it was
    resumed, each session's. Reports written before sessions were timed hold the last invocation's time
    only, and say which questions earlier ones had finished."""
    each = rep.get("elapsed_sessions_s")
    if each is None:
        done = {n: a.get("resumed_samples") for n, a in rep["arms"].items() if a.get("resumed_samples")}
        if not done:
            return f"{rep['elapsed_s']} s"
        return (f"{rep['elapsed_s']} s (this invocation; resumed a run whose earlier invocations had finished "
                + ", ".join(f"{c} questions of arm {n}" for n, c in done.items()) + ")")
    if len(each) <= 1:
        return f"{rep['elapsed_s']} s"
    parts = ", ".join("not recorded" if x is None else f"{x} s" for x in each)
    return f"{rep['elapsed_s']} s over {len(each)} sessions ({parts})"


def inject_lines(rep: dict) -> list[str]:
    """What arm B's injected catalog defect changed: the o_a_proj calls whose output differed from the clean
    chain's (reports written before this was counted say nothing)."""
    arm, site = rep["arms"]["B"], rep["arms"]["B"]["site"]
    if not arm.get("inject") or not site or site.get("inject_changed_calls") is None:
        return []
    n = site["inject_changed_calls"]
    if n:
        return ["", f"The injected defect `{arm['inject']}` changed arm B's o_a_proj output at {n} of {site['calls']} calls."]
    return ["", f"**The injected defect `{arm['inject']}` changed arm B's o_a_proj output at none of its {site['calls']} "
            f"calls** (M from {site['m_min']} to {site['m_max']}): this run never exercised it, so its verdict says "
            "nothing of the defect (one that shows at M >= 1024 needs more prompt tokens per rank: a larger "
            "--batch-size)."]


def to_markdown(rep: dict) -> str:
    t, m, v = rep["task"], rep["mode"], rep["verdict"]
    lines = [
        f"# gsm8k {t['num_fewshot']}-shot A/B, {m['name']}: {'REGRESSION' if v['regression'] else 'no regression'}",
        "",
        f"- model: {rep['model']['description']} (`{rep['model']['id']}`"
        + (f", weights sha256 {rep['model']['weights_sha256'][:12]})" if rep["model"]["weights_sha256"] else ")"),
        f"- device: {_device(rep['device'])}; {m['execution']} ({m['sharding'].upper()}, {m['ranks']} ranks); "
        f"{_matmul_and_prefill(rep['settings'])}" + (f"; {m['decode']}" if m.get("decode") else ""),
        f"- questions: {t['questions']} (limit {t['limit']}) from {t.get('questions_from', 'gsm8k')}, data "
        f"{t['data']['source']}, task config sha256 "
        f"{t['config_sha256'][:12]}, max_gen_toks {t['max_gen_toks']}",
        "- versions: " + ", ".join(f"{k} {v_}" for k, v_ in rep["versions"].items()),
        f"- elapsed: {_elapsed(rep)}",
        "",
        "| arm | implementation that ran | strict-match | flexible-extract |",
        "|---|---|---|---|",
    ]
    for name, arm in rep["arms"].items():
        ran = ", ".join(f"{k} x{c}" for k, c in arm["site"]["ran"].items()) if arm.get("site") else "remote"
        cells = [f"{_pct(arm['metrics'][f]['accuracy'])} ± {_pct(arm['metrics'][f]['stderr'])}"
                 for f in ("strict-match", "flexible-extract")]
        lines.append(f"| {name} | {arm['implementation']} ({ran}) | {cells[0]} | {cells[1]} |")
    lines += ["", "| paired, B - A | delta (pts) | paired se | 95% CI | B only / A only | McNemar p | MDE paired / independent |",
              "|---|---|---|---|---|---|---|"]
    for f, p in rep["paired"].items():
        lo, hi = ci95(p)
        lines.append(f"| {f} | {_pct(p['delta'])} | {_pct(p['se'])} | [{_pct(lo)}, {_pct(hi)}] | "
                     f"{p['b_only']} / {p['a_only']} | {p['mcnemar_p']:.3g} | {mde_paired_text(p)} / {mde_independent_text(p)} |")
    a = rep["agreement"]
    th = rep["thresholds"]
    if a["top1"] is None:
        lines += ["", f"Agreement of B with A: identical generations {a['identical_generations']:.3f} (endpoint arms "
                  "return no logits, so no teacher-forced agreement)."]
    else:
        lines += ["", f"Agreement of B with A: teacher-forced top-1 {a['top1']:.4f} over {a['tokens']} gold-answer tokens "
                  f"(floor {th['top1_agreement_floor']}), mean KL(A||B) {a['kl']:.3g} nats (ceiling {th['kl_ceiling']}), "
                  f"identical generations {a['identical_generations']:.3f}."]
    sb = rep["arms"]["B"]["site"]
    if sb:
        lines.append(f"o_a_proj site, arm B: {sb['calls']} calls, M from {sb['m_min']} to {sb['m_max']} ({sb['distinct_m']} "
                 f"distinct; {sb['calls_m_ge_1024']} calls with M >= 1024, {sb['calls_m_not_multiple_of_4']} with M % 4 != 0), "
                     f"contract violations {sb['contract_violations']}" + (f" (first: {sb['first_violation']})" if sb["first_violation"] else "") + ".")
        lines += inject_lines(rep)
    if rep["model"].get("random_weights"):
        lines.append("")
        lines.append("The built-in model has random weights: its gsm8k accuracy is near zero in both arms, so the "
                     "accuracy delta cannot show a regression; agreement between the arms carries the verdict.")
    lines += ["", f"**Verdict: {'regression' if v['regression'] else 'no regression'}.**"]
    lines += [f"- {r}" for r in v["reasons"]]
    return "\n".join(lines) + "\n"


#: The filter whose discordant questions the figure lists by id (lm-eval's gsm8k reports both filters;
#: strict-match, the answer after "####", is the one the verdict and the README quote first).
PRIMARY_FILTER = "strict-match"

#: Discordant questions listed by id on the figure, per direction (the rest are counted, not listed).
DISCORDANT_LISTED = 6

#: The figure's line naming what each arm ran is cut to this many characters (its width in monospace).
ARMS_LINE_CHARS = 136

#: Colours of the verdict on the figure.
_VERDICT_COLOUR = {True: "#b2182b", False: "#1a7837"}


def jsonl_path(run_dir: str | Path, name: str) -> Path | None:
    """``run_dir/name`` or its gzip-compressed copy ``name.gz`` (committed reports keep their per-sample
    files compressed); None when neither exists. Both existing is an error: which one is the run's?"""
    plain = Path(run_dir) / name
    gz = plain.with_name(plain.name + ".gz")
    if plain.is_file() and gz.is_file():
        raise ValueError(f"{run_dir}: both {name} and {gz.name} exist; keep one")
    return plain if plain.is_file() else gz if gz.is_file() else None


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a jsonl file, gzip-compressed (``.gz``) or not."""
    p = Path(path)
    with (gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else p.open(encoding="utf-8")) as f:
        rows = []
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}: line {i} is not JSON ({e})") from None
    return rows


def _gold(target: str) -> str:
    """The number after gsm8k's ``####`` (the whole target when it has none)."""
    return target.rsplit("####", 1)[-1].strip()


def _answer(sample: dict) -> str:
    got = sample.get("filtered_resps")
    got = got[0] if isinstance(got, list) and got else got
    return str(got).strip()[:16]


def discordant(run_dir: str | Path, filt: str = PRIMARY_FILTER) -> dict[str, list[dict]] | None:
    """The questions one arm got right and the other wrong under ``filt``: ``{"a_only": [...], "b_only":
    [...]}``, each row ``{doc_id, gold, A, B}`` (the gold number and each arm's extracted answer), read
    from the run's scored samples (``samples-A.jsonl`` / ``samples-B.jsonl``, or their ``.gz``).
    None when the run directory does not keep them."""
    paths = {arm: jsonl_path(run_dir, f"samples-{arm}.jsonl") for arm in ("A", "B")}
    if any(p is None for p in paths.values()):
        return None
    by_doc = {arm: {int(s["doc_id"]): s for s in read_jsonl(p) if s.get("filter") == filt} for arm, p in paths.items()}
    if set(by_doc["A"]) != set(by_doc["B"]) or not by_doc["A"]:
        raise ValueError(f"{run_dir}: samples-A and samples-B must score the same questions under {filt!r}; got "
                         f"{len(by_doc['A'])} and {len(by_doc['B'])} (common {len(set(by_doc['A']) & set(by_doc['B']))})")
    out: dict[str, list[dict]] = {"a_only": [], "b_only": []}
    for doc_id in sorted(by_doc["A"]):
        a, b = by_doc["A"][doc_id], by_doc["B"][doc_id]
        right_a, right_b = float(a["exact_match"]) > 0, float(b["exact_match"]) > 0
        if right_a != right_b:
            out["a_only" if right_a else "b_only"].append(
                {"doc_id": doc_id, "gold": _gold(str(a["target"])), "A": _answer(a), "B": _answer(b)})
    return out


def _when(created: str) -> str:
    return created[:16].replace("T", " ") + " UTC"


def _agreement_lines(rep: dict) -> list[tuple[str, bool | None]]:
    """(text, within its threshold; None where there is none) for each agreement figure the report has."""
    a, th, n = rep["agreement"], rep["thresholds"], rep["task"]["questions"]
    lines = []
    if a["top1"] is not None:
        differ = round(a["tokens"] * (1 - a["top1"]))
        lines.append((f"top-1 {a['top1']:.5f} (floor {th['top1_agreement_floor']}): {differ} of {a['tokens']} "
                      "gold-answer tokens differ", a["top1"] >= th["top1_agreement_floor"]))
        lines.append((f"mean KL(A||B) {a['kl']:.3g} nats (ceiling {th['kl_ceiling']:g})", a["kl"] <= th["kl_ceiling"]))
    else:
        lines.append(("no teacher-forced agreement: endpoint arms return no logits", None))
    lines.append((f"identical generations {a['identical_generations']:.3f} "
                  f"({round(a['identical_generations'] * n)} of {n})", None))
    return lines


def _contingency(ax, rep: dict, f: str, colour: str) -> None:
    """McNemar's 2x2 table of one filter: both right, A only, B only, both wrong."""
    from matplotlib.patches import Rectangle

    p, n = rep["paired"][f], rep["task"]["questions"]
    both = rep["arms"]["A"]["metrics"][f]["correct"] - p["a_only"]
    cells = {(0, 0): both, (0, 1): p["a_only"], (1, 0): p["b_only"], (1, 1): n - both - p["a_only"] - p["b_only"]}
    for (r, c), count in cells.items():
        off_diagonal = r != c
        ax.add_patch(Rectangle((c, 1 - r), 1, 1, facecolor="#fde0dd" if off_diagonal and count else "#f7f7f7",
                               edgecolor="grey"))
        ax.text(c + 0.5, 1.5 - r, str(count), ha="center", va="center", fontsize=13,
                weight="bold" if off_diagonal else "normal", color=colour if off_diagonal and count else "black")
    ax.set_xlim(0, 2)
    ax.set_ylim(0, 2)
    ax.set_xticks([0.5, 1.5], ["B right", "B wrong"], fontsize=9)
    ax.set_yticks([1.5, 0.5], ["A right", "A wrong"], fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"questions, {f} (discordant: McNemar p {p['mcnemar_p']:.2g})", fontsize=9.5, pad=22)


def delta_label(rep: dict, f: str) -> str:
    """The figure's label of filter ``f``: both accuracies, the delta with its (clipped) interval, McNemar's
    p and the paired MDE as report.md gives it ("n/a" with no discordant question, not "±0.00")."""
    p, arms = rep["paired"][f], rep["arms"]
    acc = {n: 100 * arms[n]["metrics"][f]["accuracy"] for n in ("A", "B")}
    lo, hi = (100 * x for x in ci95(p))
    mde = mde_paired_text(p)
    mde = "n/a (no discordant questions)" if mde == "n/a" else f"±{mde}"
    return (f"{f}: A {acc['A']:.2f}%  B {acc['B']:.2f}%\n"
            f"delta {100 * p['delta']:+.2f} pts [{lo:+.2f}, {hi:+.2f}], McNemar p {p['mcnemar_p']:.2g}, MDE {mde}")


def discordant_lines(p: dict, listed: dict[str, list[dict]] | None) -> list[str]:
    """The figure's lines on the discordant questions of :data:`PRIMARY_FILTER` (``p``: its paired numbers):
    "none" when there are none, else each direction's questions by id (from :func:`discordant`; counts
    only when ``listed`` is None, the run keeping no scored samples)."""
    lines = [f"Discordant questions ({PRIMARY_FILTER}):"]
    if p["a_only"] + p["b_only"] == 0:
        return lines + ["  none: A and B are right on the same questions"]
    if listed is None:
        return lines + [f"  A right, B wrong: {p['a_only']}; B right, A wrong: {p['b_only']} (ids: the run's "
                        "samples-A/B.jsonl)"]
    for key, title, other in (("a_only", "A right, B wrong", "B"), ("b_only", "B right, A wrong", "A")):
        qs = listed[key]
        if qs:
            shown = ", ".join(f"q{q['doc_id']} (gold {q['gold']}, {other} {q[other]})" for q in qs[:DISCORDANT_LISTED])
            more = f" and {len(qs) - DISCORDANT_LISTED} more" if len(qs) > DISCORDANT_LISTED else ""
            lines.append(textwrap.fill(f"{title}: {shown}{more}", 70, initial_indent="  ", subsequent_indent="    "))
        else:
            lines.append(f"  {title}: none")
    return lines


def plot(rep: dict, path: Path, run_dir: str | Path | None = None) -> None:
    """The report's picture: the paired delta of each filter with its 95% interval against zero and the
    MDE band (the smallest difference these questions detect with 80% power); the verdict and what ran
    (model, mode, device, date, n); the arms' agreement; the discordant questions (A right and B
    wrong, and the reverse), counted in McNemar's 2x2 table and listed by id when ``run_dir`` (by
    default the PNG's directory) keeps the scored samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    where = path.parent if run_dir is None else Path(run_dir)
    listed = discordant(where)
    p0 = rep["paired"][PRIMARY_FILTER]
    if listed is not None and (len(listed["a_only"]), len(listed["b_only"])) != (p0["a_only"], p0["b_only"]):
        raise ValueError(f"{where}: the scored samples give {len(listed['a_only'])} A-only and "
                         f"{len(listed['b_only'])} B-only questions, the report {p0['a_only']} and {p0['b_only']}")
    regression = rep["verdict"]["regression"]
    colour = _VERDICT_COLOUR[regression]
    arms = rep["arms"]
    fig = plt.figure(figsize=(12, 6.4))
    grid = fig.add_gridspec(2, 2, width_ratios=(1.3, 1), height_ratios=(1, 1.05), left=0.115, right=0.985, top=0.75,
                            bottom=0.2, wspace=0.17, hspace=0.3)

    # header: the verdict and what ran
    fig.text(0.01, 0.97, f"gsm8k {rep['task']['num_fewshot']}-shot A/B, {rep['mode']['name'].upper()}, "
             f"model {rep['model']['id']}, n = {rep['task']['questions']}", fontsize=14, weight="bold", va="top")
    fig.text(0.985, 0.97, "REGRESSION" if regression else "no regression", fontsize=14, weight="bold", va="top",
             ha="right", color="white", bbox={"facecolor": colour, "edgecolor": "none", "pad": 4})
    fig.text(0.01, 0.905, f"{_device(rep['device'])} · {rep['mode']['execution']} · {_when(rep['created'])}",
             fontsize=9.5, va="top")
    ran = f"A: {arms['A']['implementation']}    B: {arms['B']['implementation']}"
    if len(ran) > ARMS_LINE_CHARS:
        ran = ran[:ARMS_LINE_CHARS - 30] + " ... (report.md has it all)"
    fig.text(0.01, 0.865, ran, fontsize=9.5, va="top", family="monospace")

    # the paired deltas against zero and the MDE band, the primary filter on top
    ax = fig.add_subplot(grid[:, 0])
    filters = list(rep["paired"])
    lo_all, hi_all = -1.0, 1.0
    for i, f in enumerate(filters):
        p = rep["paired"][f]
        d, mde = 100 * p["delta"], 100 * p["mde_paired"]
        lo, hi = (100 * x for x in ci95(p))
        lo_all, hi_all = min(lo_all, lo, -mde), max(hi_all, hi, mde)
        y = len(filters) - 1 - i
        ax.fill_betweenx([y - 0.2, y + 0.2], -mde, mde, color="#c6dbef", lw=0,
                         label="MDE band (paired, 80% power)" if i == 0 else None)
        ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]], fmt="o", color=colour, capsize=6, lw=2, ms=7,
                    label="delta B - A with its 95% interval" if i == 0 else None)
        # on a white box above the zero line, which runs through the middle of the axes
        ax.text(0.5, (y + 1) / len(filters) - 0.015, delta_label(rep, f), transform=ax.transAxes, ha="center",
                va="top", fontsize=8.5, zorder=3, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5})
    ax.axvline(0, color="black", lw=1)
    pad = 0.12 * (hi_all - lo_all)
    ax.set_xlim(lo_all - pad, hi_all + pad)
    ax.set_ylim(-0.5, len(filters) - 0.5)
    ax.set_yticks(range(len(filters)), filters[::-1])
    ax.set_xlabel("accuracy difference, B - A (percentage points)")
    ax.legend(loc="upper center", fontsize=8.5, frameon=False, ncol=2, bbox_to_anchor=(0.5, -0.1))

    _contingency(fig.add_subplot(grid[0, 1]), rep, PRIMARY_FILTER, colour)

    # agreement and the discordant questions by id
    tx = fig.add_subplot(grid[1, 1])
    tx.axis("off")
    lines = ["Agreement of B with A (teacher-forced on the gold answers):"]
    lines += [textwrap.fill(("" if ok is None else "[ok] " if ok else "[FAIL] ") + t, 70, initial_indent="  ",
                            subsequent_indent="    ") for t, ok in _agreement_lines(rep)]
    lines += discordant_lines(p0, listed)
    tx.text(0, 1, "\n".join(lines), fontsize=8.5, va="top", transform=tx.transAxes, linespacing=1.45)

    notes = [f"- {r}" for r in rep["verdict"]["reasons"]]
    if rep["model"].get("random_weights"):
        notes.append("- random weights: accuracy is near zero in both arms, so agreement carries the verdict")
    if notes:
        fig.text(0.01, 0.015, "\n".join(textwrap.shorten(n, 180) for n in notes[:4]), fontsize=8.5, va="bottom",
                 color=colour)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rep: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(to_markdown(rep))
    plot(rep, out_dir / "report.png")


def compare(reports: list[dict], labels: list[str] | None = None) -> str:
    """One row per report, in the order given (oldest first for a nightly trend), each labelled by
    ``labels`` (the paths it was read from, or names the caller chose; default: each report's run
    directory)."""
    if labels is None:
        labels = [str(r.get("out", "-")) for r in reports]
    if len(labels) != len(reports):
        raise ValueError(f"report labels: expected one per report ({len(reports)}), got {len(labels)}")
    lines = ["| report | created | mode | model | arm B | n | strict A / B | delta (p) | flexible A / B | delta (p) | top-1 | KL | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in zip(labels, reports):
        cells = []
        for f in ("strict-match", "flexible-extract"):
            a, b = r["arms"]["A"]["metrics"][f], r["arms"]["B"]["metrics"][f]
            p = r["paired"][f]
            cells += [f"{_pct(a['accuracy'])} / {_pct(b['accuracy'])}", f"{_pct(p['delta'])} ({p['mcnemar_p']:.2g})"]
        lines.append(f"| {_cell(label)} | {r['created'][:19]} | {_cell(mode_text(r))} | {r['model']['id']} | "
                     f"{r['arms']['B']['implementation']} | {r['task']['questions']} | {cells[0]} | {cells[1]} | {cells[2]} | "
                     f"{cells[3]} | {_num(r['agreement']['top1'], '.4f')} | {_num(r['agreement']['kl'], '.3g')} | "
                     f"{_cell(verdict_text(r))} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def mode_text(rep: dict) -> str:
    """The mode a report ran, with what changes its numbers: processes, prefill budget, decode batching."""
    mode = rep["mode"]["name"] + (f", {rep['mode']['processes']} proc" if rep["mode"].get("processes", 1) > 1 else "")
    if rep["settings"].get("prefill_tokens"):  # recorded since each rank prefills its prompts together
        mode += f", prefill {rep['settings']['prefill_tokens']}"
    if rep["mode"].get("decode"):
        mode += ", decode running"
    return mode


def verdict_text(rep: dict) -> str:
    """"ok", or "REGRESSION: " and each kind of reason once (both filters' significant drops read as one)."""
    v = rep["verdict"]
    return "REGRESSION: " + ", ".join(dict.fromkeys(_short(r) for r in v["reasons"])) if v["regression"] else "ok"


def _short(reason: str) -> str:
    for key in ("top-1", "KL", "provenance", "contract", "significant"):
        if key in reason:
            return key
    return reason[:30]
