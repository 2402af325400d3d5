import math

import pytest

from auditors.base import (OPTIONS, AuditContext, AuditResult, Auditor, Check, Option, Verdict, combine_verdicts,
                           validate_options, worst_case)
from auditors.runner import group_verdicts, run_auditors, verdict


@pytest.mark.parametrize("estimate,lower,upper,op,threshold,expected", [
    # value <= threshold: the upper bound must be inside to pass, the lower bound outside to fail
    (0.05, 0.01, 0.09, "<=", 0.10, "pass"),
    (0.05, 0.01, 0.10, "<=", 0.10, "pass"),  # at the threshold counts as inside
    (0.08, 0.02, 0.15, "<=", 0.10, "inconclusive"),
    (0.20, 0.12, 0.30, "<=", 0.10, "fail"),
    (0.20, 0.10, 0.30, "<=", 0.10, "inconclusive"),  # a lower bound AT the threshold shows nothing
    # value >= threshold, mirrored
    (0.95, 0.91, 0.99, ">=", 0.90, "pass"),
    (0.92, 0.85, 0.99, ">=", 0.90, "inconclusive"),
    (0.70, 0.60, 0.80, ">=", 0.90, "fail"),
])
def test_three_verdicts_follow_the_bound_on_each_side(estimate, lower, upper, op, threshold, expected):
    check = Check("privacy.x", estimate, threshold, op, lower=lower, upper=upper, confidence=0.95)
    assert check.verdict.value == expected
    assert check.passed is (expected == "pass")
    assert check.to_dict()["verdict"] == expected and check.to_dict()["upper"] == upper


@pytest.mark.parametrize("estimate,lower,upper", [
    (None, 0.0, 0.1), (math.nan, 0.0, 0.1), (0.05, None, 0.1), (0.05, 0.0, None), (0.05, 0.0, math.inf),
    (0.05, 0.2, 0.1),  # an inverted interval is a bug, never a pass
])
def test_a_check_without_a_finite_estimate_and_interval_fails_closed(estimate, lower, upper):
    check = Check("privacy.x", estimate, 1.0, "<=", lower=lower, upper=upper)
    assert check.verdict is Verdict.FAIL and not check.passed and check.reason


def test_an_inconclusive_check_says_what_would_decide_it():
    check = Check("privacy.x", 0.5, 0.6, "<=", lower=0.3, upper=0.7, decide="about 80 holdout patients would decide")
    assert check.verdict is Verdict.INCONCLUSIVE and "80 holdout patients" in check.reason


def test_exact_checks_have_the_value_as_both_bounds():
    assert Check.exact("privacy.eps", 2.0, 3.0, "<=").verdict is Verdict.PASS
    assert Check.exact("privacy.eps", 4.0, 3.0, "<=").verdict is Verdict.FAIL
    assert Check.exact("privacy.eps", None, 3.0, "<=").verdict is Verdict.FAIL


def test_check_name_must_carry_a_group_and_op_a_side():
    with pytest.raises(ValueError):
        Check("x", 1.0, 1.0, "<=", lower=1.0, upper=1.0)
    with pytest.raises(ValueError):
        Check("privacy.x", 1.0, 1.0, "<", lower=1.0, upper=1.0)


def test_combined_verdicts_fail_over_inconclusive_over_pass():
    assert combine_verdicts(["pass", "pass"]) is Verdict.PASS
    assert combine_verdicts(["pass", "inconclusive"]) is Verdict.INCONCLUSIVE
    assert combine_verdicts(["inconclusive", "fail", "pass"]) is Verdict.FAIL
    assert combine_verdicts([]) is Verdict.FAIL


def test_worst_case_never_loosens_when_a_part_is_added():
    parts = [("a", 0.55, 0.45, 0.58), ("b", 0.52, 0.40, 0.57)]
    label, est, lo, hi = worst_case(parts, "<=")
    assert (label, lo, hi) == ("a", 0.45, 0.58)
    # Adding a weak attack with a wide interval can only widen the combined interval on the safe side.
    for extra in [("c", 0.50, 0.30, 0.70), ("d", 0.40, 0.20, 0.50)]:
        _, _, lo2, hi2 = worst_case(parts + [extra], "<=")
        assert hi2 >= hi
    _, est3, lo3, hi3 = worst_case([("a", 0.9, 0.85, 0.95), ("b", 0.8, 0.70, 0.99)], ">=")
    assert (est3, lo3, hi3) == (0.8, 0.70, 0.95)
    # the named part decides the pass; the estimate is the worst one and lies inside the combined interval
    label, est, lo, hi = worst_case([("wide", 0.0, 0.0, 0.59), ("tight", 0.2, 0.09, 0.35)], "<=")
    assert label == "wide" and (est, lo, hi) == (0.2, 0.09, 0.59) and lo <= est <= hi
    assert worst_case([("a", 0.5, None, 0.6)], "<=")[2] is None


def test_options_are_typed_and_a_typo_names_the_nearest():
    import auditors  # noqa: F401 - registers the declared options

    assert validate_options({"mia_bootstrap": 500}) == {"mia_bootstrap": 500}
    with pytest.raises(ValueError, match="did you mean 'mia_bootstrap'"):
        validate_options({"mia_boostrap": 5})
    with pytest.raises(ValueError, match="integer"):
        validate_options({"mia_bootstrap": 1.5})
    with pytest.raises(ValueError, match="outside"):
        validate_options({"mia_bootstrap": 1})
    with pytest.raises(ValueError, match="unknown 'voxels'"):
        validate_options({"feature_spaces": ["pixels", "voxels"]})
    assert validate_options({"feature_spaces": "pixels"}) == {"feature_spaces": ("pixels",)}
    assert validate_options({"copy_translation_orientations": 4}) == {"copy_translation_orientations": 4}
    with pytest.raises(ValueError, match="expected one of 1, 4, 8, got 3"):
        validate_options({"copy_translation_orientations": 3})
    assert OPTIONS["white_box"].coerce(False) is False
    with pytest.raises(ValueError):
        OPTIONS["white_box"].coerce("no")


def test_every_option_read_by_the_auditors_is_declared():
    """A `ctx.option` of an undeclared name raises: grep the sources so that no read escapes the registry."""
    import pathlib
    import re

    import auditors

    root = pathlib.Path(auditors.__file__).parent
    read = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "ctx.options.get(" not in text, f"{path}: read options through ctx.option (declared, typed)"
        read |= set(re.findall(r'ctx\.option\("([a-z0-9_]+)"\)', text))
    assert read and read <= set(OPTIONS), sorted(read - set(OPTIONS))


def test_reading_an_undeclared_option_is_a_bug():
    ctx = AuditContext(train=None, holdout=None, synthetic=None)
    with pytest.raises(KeyError):
        ctx.option("no_such_option_anywhere")


def test_an_option_declared_twice_differently_is_refused():
    from auditors.base import register_options

    register_options(Option("test_only_option", int, 1, "x"))
    with pytest.raises(ValueError):
        register_options(Option("test_only_option", int, 2, "x"))
    OPTIONS.pop("test_only_option")


def test_an_auditor_that_raises_blocks(monkeypatch):
    from auditors import base

    class Boom(Auditor):
        name, group = "boom_test", "privacy"

        def run(self, ctx):
            raise RuntimeError("disk on fire")

    class Fine(Auditor):
        name, group = "fine_test", "privacy"
        default_thresholds = {"privacy.fine": (1.0, "<=", "ok")}

        def run(self, ctx):
            return AuditResult(self.name, self.group, checks=[self.check(ctx, "privacy.fine", 0.5, 0.4, 0.6)])

    class Unsure(Auditor):
        name, group = "unsure_test", "fidelity"
        default_thresholds = {"fidelity.unsure": (1.0, "<=", "ok")}

        def run(self, ctx):
            return AuditResult(self.name, self.group, checks=[self.check(ctx, "fidelity.unsure", 0.9, 0.5, 1.3)])

    monkeypatch.setattr(base, "AUDITORS", {"boom_test": Boom, "fine_test": Fine, "unsure_test": Unsure})
    ctx = AuditContext(train=None, holdout=None, synthetic=None)
    results = run_auditors(ctx, ["privacy", "fidelity"])
    assert verdict(results) == "fail"
    boom = [r for r in results if r.auditor == "boom_test"][0]
    assert "disk on fire" in boom.error and not boom.checks[0].passed
    fine = [r for r in results if r.auditor == "fine_test"]
    assert verdict(fine) == "pass"
    assert verdict([r for r in results if r.auditor != "boom_test"]) == "inconclusive"
    assert group_verdicts(results) == {"privacy": "fail", "fidelity": "inconclusive"}
    assert verdict([]) == "fail"  # no check at all is not a pass
