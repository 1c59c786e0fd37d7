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
        rep = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"report: {p} is not JSON ({e})") from None
    if rep.get("schema") not in SCHEMAS:
        raise ValueError(f"report: {p} has schema {rep.get('schema')!r}, expected one of {SCHEMAS}")
    rep.setdefault("out", str(p.parent))
    return rep


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
