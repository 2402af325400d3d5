"""cmri_release.gate_plan: the gate's honest pass chance over every planned check, and the recommended cohort."""
import math

import pytest

from auditors.base import CohortSizes
from cmri_release.commands.plan_cmd import plan_rows
from cmri_release.gate_plan import gate_figures, recommend


def _row(check, p):
    return {"check": check, "plan": {} if p is None else {"honest_pass_probability": p}}


def test_gate_figure_is_the_product_and_lists_what_is_not_planned():
    figures = gate_figures([_row("a", 0.9), _row("b", 0.5), _row("c", None), _row("d", 1.0)])
    assert figures["pass_probability"] == pytest.approx(0.45)
    assert figures["limiting"][0] == ("b", 0.5)
    assert figures["unplanned"] == ["c"]
    assert gate_figures([_row("c", None)])["pass_probability"] is None


def test_gate_figure_of_real_plans_is_below_every_check():
    rows = plan_rows(CohortSizes(100, 100, 100, 50), {})
    figures = gate_figures(rows)
    planned = [r["plan"]["honest_pass_probability"] for r in rows if r["plan"].get("honest_pass_probability") is not None]
    assert len(planned) >= 15
    assert figures["pass_probability"] <= min(planned)
    assert math.isclose(figures["pass_probability"], math.prod(planned))


def _model(sizes):
    """A toy gate: one check that needs synthetic patients, one that needs holdout patients."""
    syn = 1 - math.exp(-sizes.synthetic / 100)
    hold = 1 - math.exp(-sizes.holdout / 30)
    return [_row("needs synthetic", syn), _row("needs holdout", hold)]


def test_recommend_adds_synthetic_patients_first():
    rec = recommend(CohortSizes(100, 100, 100, 0), _model, 0.9)
    assert rec["real_patients_enough"]
    assert rec["sizes"].holdout == 100 and rec["sizes"].synthetic == 300  # 1x, 1.5x and 2x fall short
    assert rec["figures"]["pass_probability"] >= 0.9


def test_recommend_asks_for_more_real_patients_when_synthetic_ones_cannot_help():
    rec = recommend(CohortSizes(40, 40, 100, 10), _model, 0.95)
    assert not rec["real_patients_enough"]
    best_sizes, best = rec["best_with_these_real_patients"]
    assert best["pass_probability"] < 0.95 and best_sizes.holdout == 40
    assert rec["sizes"].holdout > 40 and rec["sizes"].synthetic == 3 * rec["sizes"].holdout
    assert rec["sizes"].train > 40 and rec["sizes"].test > 10
    assert recommend(CohortSizes(1, 1, 1, 0), lambda s: [_row("never", 0.5)], 0.95)["sizes"] is None
