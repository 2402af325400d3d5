"""`cmri-release plan`: per check, the honest pass chance and the smallest leak caught, from Auditor.plan."""
import pytest
from click.testing import CliRunner

from auditors.base import CohortSizes
from auditors.privacy.mia import MembershipInference
from cmri_release.cli import main


def _plan(*args):
    return CliRunner().invoke(main, ["plan", *args])


def _row(output, check):
    return next(line for line in output.splitlines() if line.startswith(check + " "))


def test_plan_prints_the_auditors_figures():
    result = _plan("--train", "100", "--holdout", "100", "--synthetic", "100", "--test", "40")
    assert result.exit_code == 0, result.output
    expected = MembershipInference().plan(CohortSizes(100, 100, 100, 40), {})
    row = _row(result.output, "privacy.mia_auc")
    assert f"{100 * expected['privacy.mia_auc']['honest_pass_probability']:.1f}%" in row
    assert f"{expected['privacy.mia_auc']['smallest_detectable']:.3g}" in row
    assert "<= 0.7" in row
    assert "not planned" in _row(result.output, "utility.tstr_dice_ratio") or "%" in _row(result.output,
                                                                                          "utility.tstr_dice_ratio")


def test_plan_reads_thresholds_and_says_what_is_not_estimable(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('"privacy.mia_auc" = 0.6\n')
    result = _plan("--train", "100", "--holdout", "40", "--synthetic", "100", "--thresholds", str(path))
    assert result.exit_code == 0, result.output
    assert "<= 0.6" in _row(result.output, "privacy.mia_auc")
    assert "not estimable" in _row(result.output, "privacy.mia_tpr_at_low_fpr")
    bigger = _plan("--train", "100", "--holdout", "100", "--synthetic", "100", "--thresholds", str(path))
    share = float(_row(bigger.output, "privacy.mia_auc").split("%")[0].split()[-1])
    assert share < 90  # 0.6 is out of reach at 100 / 100: the plan says so


def test_plan_refuses_bad_input(tmp_path):
    bad = _plan("--train", "0", "--holdout", "100", "--synthetic", "100")
    assert bad.exit_code == 2
    path = tmp_path / "t.toml"
    path.write_text('"privacy.mia_acu" = 0.6\n')
    typo = _plan("--train", "10", "--holdout", "10", "--synthetic", "10", "--thresholds", str(path))
    assert typo.exit_code == 2 and "did you mean 'privacy.mia_auc'" in typo.output
    assert "Traceback" not in typo.output


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine; CI runs it
def test_plan_prints_the_gate_figure_and_a_recommendation_as_text_and_json():
    import json

    text = _plan("--train", "100", "--holdout", "100", "--synthetic", "100", "--test", "50", "--recommend")
    assert text.exit_code == 0, text.output
    gate = next(line for line in text.output.splitlines() if line.startswith("gate:"))
    assert "%" in gate
    assert "recommended for 95%" in text.output
    raw = _plan("--train", "100", "--holdout", "100", "--synthetic", "100", "--test", "50", "--recommend", "--json")
    assert raw.exit_code == 0, raw.output
    data = json.loads(raw.output)
    assert f"{100 * data['gate']['pass_probability']:.1f}%" in gate
    rec = data["recommendation"]
    assert rec["gate"]["pass_probability"] >= 0.95 and rec["sizes"]["synthetic"] >= rec["sizes"]["holdout"]
    assert {c["check"] for c in data["checks"]} >= {"privacy.mia_auc", "fidelity.discriminator_auc"}
    assert _plan("--train", "10", "--holdout", "10", "--synthetic", "10", "--target", "1.5").exit_code == 2
