"""`junit.xml`: one test case per check, so that any CI shows which threshold a synthetic cohort missed.

A failed check is a `<failure>` whose message gives value, operator and threshold; an auditor that
could not finish is an `<error>` carrying its exception. ElementTree escapes every string.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

SUITE = "cmri-release audit"
# Characters XML 1.0 cannot hold at all (ElementTree escapes markup but would write these as they are).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _num(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "none"
    return f"{value:.6g}"


def junit_tree(report) -> ET.ElementTree:
    errors = report.errors
    by_group = defaultdict(list)
    for result in report.results:
        for check in result.checks:
            by_group[result.group].append((result, check))
    root = ET.Element("testsuites", name=SUITE)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for group, entries in by_group.items():
        suite = ET.SubElement(root, "testsuite", name=f"{SUITE}: {group}")
        counts = {"tests": 0, "failures": 0, "errors": 0}
        seconds = {}
        for result, check in entries:
            seconds[result.auditor] = result.seconds
            case = ET.SubElement(suite, "testcase", classname=f"{group}.{result.auditor}", name=_clean(check.name),
                                 time=f"{result.seconds:.3f}")
            counts["tests"] += 1
            if result.auditor in errors and check.name.endswith("_completed"):
                counts["errors"] += 1
                err = ET.SubElement(case, "error", type="AuditorError",
                                    message=_clean(f"auditor {result.auditor} raised: {errors[result.auditor]}"))
                err.text = _clean(errors[result.auditor])
            elif not check.passed:
                # Inconclusive blocks like a failure; its type and message say the cohort could not tell.
                counts["failures"] += 1
                kind = "Inconclusive" if check.verdict == "inconclusive" else "ThresholdNotMet"
                fail = ET.SubElement(case, "failure", type=kind,
                                     message=_clean(f"{check.name} {check.verdict}: estimate {_num(check.estimate)}, "
                                                    f"interval [{_num(check.lower)}, {_num(check.upper)}], needs "
                                                    f"{check.op} {_num(check.threshold)}; {check.reason}"))
                fail.text = _clean("\n".join(t for t in (check.description, check.details, check.decide) if t))
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _clean(f"{check.name} = {_num(check.estimate)} [{_num(check.lower)}, {_num(check.upper)}] "
                                  f"{check.op} {_num(check.threshold)}: passed ({check.reason})")
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{sum(seconds.values()):.3f}")
    if totals["tests"] == 0:  # an audit without a single check is not a pass: say so to CI
        suite = ET.SubElement(root, "testsuite", name=SUITE, tests="1", failures="0", errors="1", time="0")
        case = ET.SubElement(suite, "testcase", classname="audit", name="audit.checks")
        ET.SubElement(case, "error", type="NoChecks", message="the audit ran no check at all")
        totals["tests"], totals["errors"] = 1, 1
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{report.timings.get('total', 0.0):.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report, path) -> Path:
    path = Path(path)
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
    return path
