"""`cmri-release plan --train N --holdout M --synthetic K [--test T] [--thresholds FILE]`: cohort-size planning.

For every check of every registered auditor, the chance that an honest generator's cohort of these sizes passes
and the smallest leak or fault the check catches (blocks the release) with 80% probability, from `Auditor.plan`
(the same functions that put these figures beside each check in audit.html). An auditor that cannot plan says
"not planned". Nothing is read or trained: the figures come from the sizes and thresholds alone.
"""
from __future__ import annotations

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


def render(rows: list[dict], sizes) -> str:
    lines = [f"cohort: {sizes.train} training, {sizes.holdout} holdout, {sizes.synthetic} synthetic, {sizes.test} "
             "test patients",
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
    return "\n".join(lines)


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
def plan_command(n_train, n_holdout, n_synthetic, n_test, thresholds, seed):
    """Print, per check, the chance an honest generator passes and the smallest leak caught at these sizes."""
    from auditors.base import CohortSizes

    from ..audit import known_checks, load_thresholds

    overrides = load_thresholds(thresholds, known_checks()) if thresholds is not None else {}
    sizes = CohortSizes(train=n_train, holdout=n_holdout, synthetic=n_synthetic, test=n_test)
    click.echo(render(plan_rows(sizes, overrides, seed), sizes))
