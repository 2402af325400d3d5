"""The gate's plan: how likely an honest generator's cohort is to pass EVERY check, and which sizes get it there.

Each auditor plans its own checks (`Auditor.plan`: the chance an honest cohort of these sizes passes, from the
spread measured on the phantom). The gate releases only when every check passes, so its honest pass chance is the
chance of the intersection; this module takes the checks as independent (their product). Checks that move
together (the two FD spaces, the attacks on one holdout) pass together more often than independent ones would,
so the product leans low: a planning floor, not a promise. Checks an auditor cannot plan are listed, not guessed.

The recommendation answers the question a data team asks before it trains: with the real patients we have, how
many synthetic patients should the audit see (they cost only synthesis and audit time), and if no number is
enough, how many more real patients the checks need. Synthetic counts are tried on a grid of multiples of the
holdout; real cohorts are scaled together (train, holdout and test by one factor, synthetic at 3x the holdout).
"""
from __future__ import annotations

import math
from dataclasses import replace

SYNTHETIC_MULTIPLES = (1, 1.5, 2, 3, 4, 6, 8, 10)  # synthetic patients per holdout patient tried
REAL_FACTORS = (1.25, 1.5, 2, 3, 4, 6, 8)  # real cohort scalings tried when synthetic patients alone do not reach it
SYNTHETIC_PER_HOLDOUT_WHEN_SCALING = 3


def gate_figures(rows: list[dict]) -> dict:
    """{pass_probability: product over planned checks, limiting: [(check, p)] lowest first, unplanned: [check]}."""
    planned = [(r["check"], r["plan"]["honest_pass_probability"]) for r in rows
               if r["plan"] and r["plan"].get("honest_pass_probability") is not None]
    unplanned = [r["check"] for r in rows if not (r["plan"] and r["plan"].get("honest_pass_probability") is not None)]
    p = math.prod(float(v) for _, v in planned) if planned else None
    return {"pass_probability": p, "limiting": sorted(planned, key=lambda cv: cv[1]), "unplanned": unplanned}


def recommend(sizes, plan_rows, target: float) -> dict:
    """The smallest synthetic cohort for these real patients that reaches `target`, else the smallest real
    scaling (with synthetic at 3x holdout) that does. `plan_rows(sizes)` gives the rows of a size."""
    tried = []
    for multiple in SYNTHETIC_MULTIPLES:
        candidate = replace(sizes, synthetic=max(1, int(math.ceil(multiple * sizes.holdout))))
        figures = gate_figures(plan_rows(candidate))
        tried.append((candidate, figures))
        if figures["pass_probability"] is not None and figures["pass_probability"] >= target:
            return {"sizes": candidate, "figures": figures, "real_patients_enough": True}
    best_synthetic = max(tried, key=lambda cf: cf[1]["pass_probability"] or 0.0)
    for factor in REAL_FACTORS:
        holdout = int(math.ceil(factor * sizes.holdout))
        candidate = replace(sizes, train=int(math.ceil(factor * sizes.train)), holdout=holdout,
                            test=int(math.ceil(factor * sizes.test)),
                            synthetic=SYNTHETIC_PER_HOLDOUT_WHEN_SCALING * holdout)
        figures = gate_figures(plan_rows(candidate))
        if figures["pass_probability"] is not None and figures["pass_probability"] >= target:
            return {"sizes": candidate, "figures": figures, "real_patients_enough": False,
                    "best_with_these_real_patients": best_synthetic}
    return {"sizes": None, "figures": None, "real_patients_enough": False,
            "best_with_these_real_patients": best_synthetic}
