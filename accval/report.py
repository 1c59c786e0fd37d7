"""gsm8k A/B reports: write one (JSON, Markdown, PNG), print one, compare several (a nightly trend)."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMAS = ("accval.gsm8k.ab/1",)


def load(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
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
    paired = rep.get("paired")
    if isinstance(paired, dict):
        for f, p in paired.items():
            ci = p.get("ci95") if isinstance(p, dict) else None
            if isinstance(ci, list) and (len(ci) != 2 or not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in ci)):
                out.append(f"paired.{f}.ci95: expected two numbers, got {ci!r}")
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _device(dev: dict) -> str:
    """The device, and every device of a run resumed across machines (earlier reports have no sessions)."""
    seen = list(dict.fromkeys(dev.get("sessions") or [dev["name"]]))
    if len(seen) <= 1:
        return dev["name"]
    return f"{dev['name']} (resumed: its {len(dev['sessions'])} sessions ran on {', then '.join(seen)})"


def _matmul(settings: dict) -> str:
    """How the model's own matmuls ran (reports before ``--matmul`` recorded only the attention's)."""
    if "matmul" in settings:
        return f"model matmuls {settings['matmul']}"
    return f"attention {settings.get('attention', 'model')}"


def to_markdown(rep: dict) -> str:
    t, m, v = rep["task"], rep["mode"], rep["verdict"]
    lines = [
        f"# gsm8k {t['num_fewshot']}-shot A/B, {m['name']}: {'REGRESSION' if v['regression'] else 'no regression'}",
        "",
        f"- model: {rep['model']['description']} (`{rep['model']['id']}`, weights sha256 {rep['model']['weights_sha256'][:12]})",
        f"- device: {_device(rep['device'])}; {m['execution']} ({m['sharding'].upper()}, {m['ranks']} ranks); "
        f"{_matmul(rep['settings'])}",
        f"- questions: {t['questions']} (limit {t['limit']}) from {t.get('questions_from', 'gsm8k')}, data "
        f"{t['data']['source']}, task config sha256 "
        f"{t['config_sha256'][:12]}, max_gen_toks {t['max_gen_toks']}",
        f"- versions: " + ", ".join(f"{k} {v_}" for k, v_ in rep["versions"].items()),
        f"- elapsed: {rep['elapsed_s']} s",
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
        lines.append(f"| {f} | {_pct(p['delta'])} | {_pct(p['se'])} | [{_pct(p['ci95'][0])}, {_pct(p['ci95'][1])}] | "
                     f"{p['b_only']} / {p['a_only']} | {p['mcnemar_p']:.3g} | {_pct(p['mde_paired'])} / {_pct(p['mde_independent'])} |")
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
    if rep["model"].get("random_weights"):
        lines.append("")
        lines.append("The built-in model has random weights: its gsm8k accuracy is near zero in both arms, so the "
                     "accuracy delta cannot show a regression; agreement between the arms carries the verdict.")
    lines += ["", f"**Verdict: {'regression' if v['regression'] else 'no regression'}.**"]
    lines += [f"- {r}" for r in v["reasons"]]
    return "\n".join(lines) + "\n"


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    filters = list(rep["paired"])
    width = 0.38
    for i, (name, arm) in enumerate(rep["arms"].items()):
        acc = [100 * arm["metrics"][f]["accuracy"] for f in filters]
        err = [100 * arm["metrics"][f]["stderr"] for f in filters]
        ax1.bar([j + (i - 0.5) * width for j in range(len(filters))], acc, width, yerr=err, capsize=4,
                label=f"{name}: {arm['implementation']}")
    ax1.set_xticks(range(len(filters)), filters)
    ax1.set_ylabel("accuracy (%) ± stderr")
    ax1.legend(fontsize=7)
    ax1.set_title(f"gsm8k {rep['task']['num_fewshot']}-shot, {rep['mode']['name']}, n={rep['task']['questions']}")
    for j, f in enumerate(filters):
        p = rep["paired"][f]
        lo, hi = 100 * p["ci95"][0], 100 * p["ci95"][1]
        ax2.errorbar([j], [100 * p["delta"]], yerr=[[100 * p["delta"] - lo], [hi - 100 * p["delta"]]], fmt="o", capsize=6)
        ax2.annotate(f"p={p['mcnemar_p']:.2g}", (j, hi), textcoords="offset points", xytext=(6, 0), fontsize=8)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_xticks(range(len(filters)), filters)
    ax2.set_xlim(-0.5, len(filters) - 0.5)
    ax2.set_ylabel("delta B - A (pts), paired 95% CI")
    a = rep["agreement"]
    agree = (f"identical generations {a['identical_generations']:.3f}" if a["top1"] is None
             else f"top-1 agreement {a['top1']:.3f}, KL {a['kl']:.2g}")
    ax2.set_title(f"{agree}; "
                  f"{'REGRESSION' if rep['verdict']['regression'] else 'ok'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rep: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(to_markdown(rep))
    plot(rep, out_dir / "report.png")


def compare(reports: list[dict]) -> str:
    """One row per report, in the order given (oldest first for a nightly trend)."""
    lines = ["| created | mode | model | arm B | n | strict A / B | delta (p) | flexible A / B | delta (p) | top-1 | KL | verdict | why |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        cells = []
        for f in ("strict-match", "flexible-extract"):
            a, b = r["arms"]["A"]["metrics"][f], r["arms"]["B"]["metrics"][f]
            p = r["paired"][f]
            cells += [f"{_pct(a['accuracy'])} / {_pct(b['accuracy'])}", f"{_pct(p['delta'])} ({p['mcnemar_p']:.2g})"]
        lines.append(f"| {r['created'][:19]} | {r['mode']['name']} | {r['model']['id']} | {r['arms']['B']['implementation']} | "
                     f"{r['task']['questions']} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                     f"{_num(r['agreement']['top1'], '.4f')} | {_num(r['agreement']['kl'], '.3g')} | "
                     f"{'REGRESSION' if r['verdict']['regression'] else 'ok'} | {'; '.join(_short(x) for x in r['verdict']['reasons'])} |")
    return "\n".join(lines) + "\n"


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _short(reason: str) -> str:
    for key in ("top-1", "KL", "provenance", "contract", "significant"):
        if key in reason:
            return key
    return reason[:30]
