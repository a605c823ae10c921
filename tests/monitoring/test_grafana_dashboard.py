"""The Grafana dashboard: valid dashboard JSON whose queries name only metrics serving registers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from serving.metrics import ServingMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "persona_serving.json"
PANEL_TYPES = {"timeseries", "stat", "heatmap", "gauge", "bargauge", "table", "row", "text"}
#: Samples each metric type exposes, by the Prometheus exposition format.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def exposed_names() -> dict[str, str]:
    """Sample name -> metric family, for every metric ``ServingMetrics.create()`` registers."""
    names = {}
    for family in ServingMetrics.create().registry.collect():
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels, keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors ($__rate_interval, 5m)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def template_metric_names(query: str) -> set[str]:
    return set(re.findall(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,", query))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def test_dashboard_has_grafanas_dashboard_fields(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"] == "persona-serving"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["panels"]
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys()
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "xywh")
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the 24-column grid"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"])


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_datasource_and_app_are_template_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    app = variables["app"]
    assert app["type"] == "query" and app["multi"] and app["includeAll"]
    assert template_metric_names(app["definition"]) == {"persona_requests_total"}
    filtered = [e for e in _exprs(dashboard) if "persona_feature_cache" not in e]
    assert all('app=~"$app"' in e for e in filtered), "every app-labelled panel filters by $app"


def test_every_query_names_only_registered_metrics(dashboard: dict[str, Any]) -> None:
    exposed = exposed_names()
    used: set[str] = set()
    for expr in _exprs(dashboard):
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        unknown = names - exposed.keys()
        assert not unknown, f"{expr!r} names metrics serving does not register: {unknown}"
        used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else ""
            assert template_metric_names(query) <= exposed.keys()
    missing = {exposed[n] for n in exposed} - {exposed[n] for n in used}
    assert not missing, f"registered metrics with no panel: {missing}"


def test_the_metric_check_catches_a_renamed_metric() -> None:
    exposed = exposed_names()
    expr = 'sum by (app) (rate(persona_request_total{app=~"$app"}[$__rate_interval]))'
    assert metric_names(expr) == {"persona_request_total"}
    assert metric_names(expr) - exposed.keys() == {"persona_request_total"}
    ratio = (
        'sum(rate(persona_feature_cache_total{result="hit"}[5m])) '
        "/ sum(rate(persona_feature_cache_total[5m]))"
    )
    assert metric_names(ratio) == {"persona_feature_cache_total"}


@pytest.mark.parametrize(
    ("metric", "grouping"),
    [
        ("persona_requests_total", "by (app, status)"),
        ("persona_request_seconds_bucket", "by (le, app)"),
        ("persona_stage_seconds_bucket", "by (le, stage)"),
        ("persona_fallbacks_total", "by (reason)"),
        ("persona_served_score_bucket", "by (le, variant)"),
        ("persona_rule_removals_total", "by (rule)"),
        ("persona_events_total", "by (event_type)"),
    ],
)
def test_the_issue_breakdowns_are_on_the_dashboard(
    dashboard: dict[str, Any], metric: str, grouping: str
) -> None:
    assert any(metric in e and grouping in e for e in _exprs(dashboard))


def test_latency_quantiles_p50_p95_p99_by_app(dashboard: dict[str, Any]) -> None:
    latency = [
        e
        for e in _exprs(dashboard)
        if "persona_request_seconds_bucket" in e and "by (le, app)" in e
    ]
    quantiles = {float(q) for e in latency for q in re.findall(r"histogram_quantile\(([\d.]+)", e)}
    assert quantiles == {0.5, 0.95, 0.99}
