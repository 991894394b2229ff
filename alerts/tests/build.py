#!/usr/bin/env python3
"""Builds a promtool test file from alerts/tests/cases.yml: each case becomes a test that the
alert fires with the expected labels and summary (plus the rule's other annotations, runbook
and description, as written: only the summary may be templated) at eval_time, and - since
exp_alerts is exact - that it fires for nothing else in the case's series.

Usage: build.py RULES CASES OUT
"""

import sys

import yaml


def main():
    rules_path, cases_path, out_path = sys.argv[1:4]
    rules = yaml.safe_load(open(rules_path))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    runbooks = {name: r["annotations"]["runbook"] for name, r in alerts.items()}
    # Every annotation but the summary, expected verbatim.
    fixed = {name: {k: v for k, v in r["annotations"].items() if k != "summary"} for name, r in alerts.items()}
    for name, annotations in fixed.items():
        for k, v in annotations.items():
            if "{{" in v:
                sys.exit(f"{name}: annotation {k} is templated (only the summary may be)")
    cases = yaml.safe_load(open(cases_path))
    tests = []
    seen = set()
    for c in cases["cases"]:
        seen.add(c["alert"])
        exp = [{"exp_labels": e["labels"],
                "exp_annotations": {"summary": e["summary"], **fixed[c["alert"]]}}
               for e in c["expect"]]
        checks = [{"eval_time": c["eval_time"], "alertname": c["alert"], "exp_alerts": exp}]
        if "for" in alerts[c["alert"]]:
            # Before its `for` window has passed, nothing fires.
            checks.append({"eval_time": "1m", "alertname": c["alert"], "exp_alerts": []})
        tests.append({
            "name": c["name"],
            "interval": cases.get("evaluation_interval", "30s"),
            "input_series": c["series"],
            "alert_rule_test": checks,
        })
    missing = set(runbooks) - seen
    if missing:
        sys.exit(f"alerts without a test case: {sorted(missing)}")
    with open(out_path, "w") as f:
        yaml.safe_dump({"rule_files": [rules_path], "evaluation_interval": cases.get("evaluation_interval", "30s"),
                        "tests": tests}, f, sort_keys=False, width=1000)


if __name__ == "__main__":
    main()
