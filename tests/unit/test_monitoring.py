"""The alert rules, their runbooks and the Grafana dashboard, read as files (a real Prometheus
runs them in tests/integration/test_prometheus.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy/prometheus"
RUNBOOKS = ROOT / "docs/operations.md"
DASHBOARD = ROOT / "deploy/grafana/streamwatch.json"
STREAM_DASHBOARD = ROOT / "deploy/grafana/streamwatch-stream.json"


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [rule for g in groups for rule in g["rules"] if "alert" in rule]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M):
        out.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return out


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    anchors = _anchors(RUNBOOKS.read_text())
    for rule in _alerts():
        url = rule["annotations"].get("runbook_url", "")
        assert url == f"docs/operations.md#{rule['alert'].lower()}", rule["alert"]
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no section {url}"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fired == set(), "never seen firing"
    assert names - quiet == set(), "never seen quiet"


# metric name suffixes each unit may plot: one unit to an axis
_UNITS = {
    "s": re.compile(r"_seconds(_bucket)?\b|\btime\(\)"),
    "bytes": re.compile(r"_bytes\b"),
}


def test_dashboard_panels_plot_one_unit_each() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, panel["title"]
        names = [  # changes(x) counts, whatever x's unit
            name
            for t in panel["targets"]
            for counted, name in re.findall(
                r"(changes\(\s*)?((?:streamwatch|process)_\w+|\btime\(\))", t["expr"]
            )
            if not counted
        ]
        for kind, pattern in _UNITS.items():
            matching = [n for n in names if pattern.search(n)]
            if unit == kind:
                assert matching == names, (panel["title"], names)
            else:
                assert not matching, f"{panel['title']}: {matching} on a {unit} axis"


def test_dashboard_shows_health_model_restarts_memory_and_partitions() -> None:
    exprs = " ".join(
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]
    )
    for name in (
        "up{",
        "streamwatch_ready",
        "streamwatch_model_info",
        "changes(process_start_time_seconds",
        "process_resident_memory_bytes",
        "streamwatch_assigned_partitions",
    ):
        assert name in exprs, name


def test_the_stream_dashboard_drills_into_one_stream_from_the_remote_write_series() -> None:
    from streamwatch.sinks.remote_write import SERIES

    board = json.loads(STREAM_DASHBOARD.read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert board["uid"] != json.loads(DASHBOARD.read_text())["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["stream"]["query"] == "label_values(streamwatch_stream_score, stream)"
    assert "$stream" in variables["field"]["query"]
    shown = set()
    for panel in panels:
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bstreamwatch_\w+", target["expr"]))
            assert names <= set(SERIES), (panel["title"], names - set(SERIES))
            shown |= names
            # one stream, but for the table that finds the streams flagged
            assert 'stream="$stream"' in target["expr"] or panel["type"] == "table", target
    assert shown == set(SERIES)  # reading, forecast, its band, score and flags all shown
