import xml.etree.ElementTree as ET

from cmri_release.audit import AuditReport
from cmri_release.reporting.junit import write_junit


def test_one_testcase_per_check_failures_and_errors(tmp_path, report):
    root = ET.parse(write_junit(report, tmp_path / "junit.xml")).getroot()  # well-formed despite '<', '&', NUL
    cases = {tc.get("name"): tc for tc in root.iter("testcase")}
    assert set(cases) == {"privacy.near_copy_rate", "privacy.closer_to_train_share", "privacy.mia_auc",
                          "fidelity.boom_completed"}
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "2", "1")
    assert cases["privacy.near_copy_rate"].find("failure") is None and cases["privacy.near_copy_rate"].find(
        "error") is None
    failure = cases["privacy.mia_auc"].find("failure")
    assert failure.get("type") == "ThresholdNotMet"
    assert failure.get("message").startswith("privacy.mia_auc fail: estimate 0.91, interval [0.8, 0.97], needs <= 0.6")
    unsure = cases["privacy.closer_to_train_share"].find("failure")  # inconclusive blocks CI like a failure
    assert unsure.get("type") == "Inconclusive" and "cannot tell" in unsure.get("message")
    assert "120 synthetic patients" in unsure.get("message")
    assert "<script>" in failure.text and "gan_leaks & co" in failure.text  # escaped in the file, intact when parsed
    error = cases["fidelity.boom_completed"].find("error")
    assert "RuntimeError: <disk> &" in error.get("message") and "\x00" not in error.text
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["cmri-release audit: privacy"].get("tests") == "3"
    assert cases["privacy.mia_auc"].get("classname") == "privacy.membership_inference"


def test_an_audit_without_checks_is_an_error_for_ci(tmp_path):
    empty = AuditReport(results=[], verdict="fail", groups=[], thresholds={}, timings={"total": 0.0})
    root = ET.parse(write_junit(empty, tmp_path / "junit.xml")).getroot()
    assert root.get("errors") == "1" and root.find(".//error").get("message") == "the audit ran no check at all"
