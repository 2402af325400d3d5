"""`cmri-release plan --train N --holdout M --synthetic K [--test T] [--thresholds FILE] [--recommend] [--json]`.

For every check of every registered auditor, the chance that an honest generator's cohort of these sizes passes
and the smallest leak or fault the check catches (blocks the release) with 80% probability, from `Auditor.plan`
(the same functions that put these figures beside each check in audit.html). An auditor that cannot plan says
"not planned". Then the gate's figure (every planned check passing, `cmri_release.gate_plan`) and, with
`--recommend`, the cohort that reaches `--target`. Nothing is read or trained: the figures come from the sizes
and thresholds alone.
"""
from __future__ import annotations

import math
from pathlib import Path

import click


def _fmt(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if percent else f"{value:.3g}"
    return str(value)


def plan_rows(sizes, thresholds: dict[str, float], seed: int = 0) -> list[dict]:
    """One row per check of every registered auditor, in group order: name, op, threshold and its plan (or {})."""
    import auditors  # noqa: F401 - importing registers every auditor
    from auditors.base import AUDITORS, GROUPS

    rows = []
    for group in GROUPS:
        for name, cls in AUDITORS.items():
            if cls.group != group:
                continue
            planned = cls().plan(sizes, thresholds, seed) or {}
            for check, (default, op, _) in cls.default_thresholds.items():
                rows.append({"check": check, "auditor": name, "op": op, "threshold": thresholds.get(check, default),
                             "plan": planned.get(check, {})})
    return rows


def _sizes_text(sizes) -> str:
    return (f"{sizes.train} training, {sizes.holdout} holdout, {sizes.synthetic} synthetic, {sizes.test} test "
            "patients")


def gate_lines(figures: dict) -> list[str]:
    p = figures["pass_probability"]
    lines = [f"gate: an honest generator's cohort passes every planned check with {_fmt(p, True)} (checks taken as "
             "independent: a floor when they move together)"]
    if figures["limiting"]:
        lines.append("  lowest: " + ", ".join(f"{c} {_fmt(v, True)}" for c, v in figures["limiting"][:3]))
    if figures["unplanned"]:
        lines.append(f"  not planned, not in the figure ({len(figures['unplanned'])}): " + ", ".join(figures["unplanned"]))
    return lines


def recommendation_lines(rec: dict, target: float) -> list[str]:
    want = f"{100 * target:.0f}%"
    if rec["real_patients_enough"]:
        return [f"recommended for {want}: {_sizes_text(rec['sizes'])} (gate {_fmt(rec['figures']['pass_probability'], True)})"]
    best_sizes, best = rec["best_with_these_real_patients"]
    at_most = math.floor(1000 * best["pass_probability"]) / 10  # rounded down: "at most 95.0%" would read as reached
    lines = [f"these real patients cannot reach {want}: at most {at_most:.1f}% with "
             f"{best_sizes.synthetic} synthetic patients, held back by " +
             ", ".join(f"{c} {_fmt(v, True)}" for c, v in best["limiting"][:3])]
    if rec["sizes"] is None:
        lines.append(f"no cohort up to 8x these real patients reaches {want}")
    else:
        lines.append(f"recommended for {want}: {_sizes_text(rec['sizes'])} "
                     f"(gate {_fmt(rec['figures']['pass_probability'], True)})")
    return lines


def render(rows: list[dict], sizes) -> str:
    lines = [f"cohort: {_sizes_text(sizes)}",
             "honest pass: chance an honest generator's cohort passes the check; smallest caught: the smallest leak "
             "or fault that blocks the release with 80% probability", ""]
    width = max(len(r["check"]) for r in rows) if rows else 10
    lines.append(f"{'check':<{width}}  {'needs':<10}  {'honest pass':>11}  smallest caught")
    for r in rows:
        needs = f"{r['op']} {r['threshold']:.4g}"
        plan = r["plan"]
        if not plan:
            lines.append(f"{r['check']:<{width}}  {needs:<10}  {'not planned':>11}")
            continue
        caught = _fmt(plan.get("smallest_detectable"))
        if plan.get("smallest_detectable") is not None and plan.get("detectable_unit"):
            caught += f" ({plan['detectable_unit']})"
        note = f"  [{plan['note']}]" if plan.get("note") else ""
        lines.append(f"{r['check']:<{width}}  {needs:<10}  {_fmt(plan.get('honest_pass_probability'), True):>11}  "
                     f"{caught}{note}")
    from ..gate_plan import gate_figures

    lines += [""] + gate_lines(gate_figures(rows))
    return "\n".join(lines)


def as_json(rows: list[dict], sizes, rec: dict | None, target: float) -> dict:
    from dataclasses import asdict

    from ..gate_plan import gate_figures

    def figures(f):
        return None if f is None else {"pass_probability": f["pass_probability"],
                                        "limiting": [{"check": c, "honest_pass_probability": v} for c, v in f["limiting"]],
                                        "unplanned": f["unplanned"]}

    out = {"sizes": asdict(sizes), "checks": rows, "gate": figures(gate_figures(rows))}
    if rec is not None:
        out["recommendation"] = {"target": target, "real_patients_enough": rec["real_patients_enough"],
                                 "sizes": None if rec["sizes"] is None else asdict(rec["sizes"]),
                                 "gate": figures(rec["figures"])}
        if "best_with_these_real_patients" in rec:
            best_sizes, best = rec["best_with_these_real_patients"]
            out["recommendation"]["best_with_these_real_patients"] = {"sizes": asdict(best_sizes),
                                                                      "gate": figures(best)}
    return out


@click.command("plan")
@click.option("--train", "n_train", type=click.IntRange(min=1), required=True, help="Training patients.")
@click.option("--holdout", "n_holdout", type=click.IntRange(min=1), required=True, help="Holdout patients.")
@click.option("--synthetic", "n_synthetic", type=click.IntRange(min=1), required=True, help="Synthetic patients.")
@click.option("--test", "n_test", type=click.IntRange(min=0), default=0, show_default=True,
              help="Test patients (utility).")
@click.option("--thresholds", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="TOML file of thresholds keyed by check name (as for audit).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of any simulation an auditor's plan runs.")
@click.option("--recommend", is_flag=True,
              help="Also search the cohort at which the gate passes an honest generator with --target.")
@click.option("--target", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Honest pass chance of the whole gate that --recommend looks for.")
@click.option("--json", "as_json_output", is_flag=True, help="Print the figures as JSON (for CI and notebooks).")
def plan_command(n_train, n_holdout, n_synthetic, n_test, thresholds, seed, recommend, target, as_json_output):
    """Print, per check, the chance an honest generator passes and the smallest leak caught at these sizes."""
    from auditors.base import CohortSizes

    from ..audit import known_checks, load_thresholds

    overrides = load_thresholds(thresholds, known_checks()) if thresholds is not None else {}
    sizes = CohortSizes(train=n_train, holdout=n_holdout, synthetic=n_synthetic, test=n_test)
    rows = plan_rows(sizes, overrides, seed)
    rec = None
    if recommend:
        from ..gate_plan import recommend as search

        rec = search(sizes, lambda candidate: plan_rows(candidate, overrides, seed), target)
    if as_json_output:
        import json

        click.echo(json.dumps(as_json(rows, sizes, rec, target), indent=1, default=float))
        return
    text = render(rows, sizes)
    if rec is not None:
        text += "\n" + "\n".join(recommendation_lines(rec, target))
    click.echo(text)
