"""The dashboard in a real headless browser: it loads, has no console errors, shows every panel
with content, on a small simulated bank with served traffic, drift, alerts, segments and an
experiment readout produced by the platform's own commands."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from monitoring.dashboard.browser import load_page, screenshot
from monitoring.dashboard.build import Dashboard, DashboardInputs, build_dashboard
from persona.layout import DataLayout, parquet_glob, schema_for, write_table
from serving.config import DEFAULT_CONFIG_DIR, load_experiments
from serving.experiments import assign
from tests.banks import featured_bank

pytestmark = pytest.mark.slow
PANELS = (
    "panel-kpi-app",
    "panel-kpi-segment",
    "panel-kpi-variant",
    "panel-kpi-model-version",
    "panel-drift",
    "panel-anomalies",
    "panel-segments",
    "panel-experiment",
)


def served_log_from_history(root: Path, days: int = 14) -> int:
    """Replay the last ``days`` of logged impressions and clicks as served traffic of the shipped
    experiment: each customer's sticky arm, the arm's model label. Returns rows written."""
    experiment = load_experiments(DEFAULT_CONFIG_DIR / "experiments.yaml").experiments[
        "ranker_vs_priors"
    ]
    glob = parquet_glob(DataLayout(root).clean_table("events"))
    with duckdb.connect() as con:
        table = con.sql(
            f"SELECT * FROM read_parquet('{glob}', hive_partitioning = false) "
            "WHERE event_type IN ('impression', 'click') AND event_timestamp > "
            f"(SELECT max(event_timestamp) FROM read_parquet('{glob}', hive_partitioning = false)) "
            f"- INTERVAL {days} DAY"
        ).to_arrow_table()
    arms = [
        assign(int(c), "ranker_vs_priors", experiment).variant
        for c in table.column("customer_id").to_pylist()
    ]
    table = table.set_column(
        table.schema.get_field_index("variant"), "variant", pa.array([a.name for a in arms])
    )
    models = ["persona-ranker@v1" if a.policy == "model" else "segment_prior" for a in arms]
    table = table.set_column(
        table.schema.get_field_index("model_version"), "model_version", pa.array(models)
    )
    return write_table(
        root / "serving" / "events",
        table.select(schema_for("events").column_names),
        schema_for("events"),
    )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Dashboard:
    from monitoring.alerts import write_alerts
    from monitoring.behaviour_anomaly import behaviour_alerts, latest_behaviour, score_behaviour
    from monitoring.drift import drift_report, write_drift_report
    from monitoring.experiments.readout import experiment_readout
    from monitoring.experiments.report import write_readout
    from monitoring.experiments.sources import units_from_event_log
    from persona.pseudonym import Pseudonymiser
    from segmentation.pipeline import run_segmentation
    from training.examples import ExampleSet
    from training.sets.impressions import build_impression_set

    root = tmp_path_factory.mktemp("dashboard_bank")
    featured_bank(root, customers=500, days=40, seed=11)
    assert served_log_from_history(root) > 0
    units = units_from_event_log(
        root,
        experiments_file=DEFAULT_CONFIG_DIR / "experiments.yaml",
        experiment="ranker_vs_priors",
    )
    write_readout(experiment_readout(units, control="control"), root / "monitoring" / "experiment")
    examples = ExampleSet(root / "examples")
    build_impression_set(
        root, examples.root, dataset="dash", max_len=10, valid_days=3, test_days=3, seed=1
    )
    write_drift_report(drift_report(examples, root), root / "monitoring" / "drift")
    scores = score_behaviour(latest_behaviour(root))
    write_alerts(
        root / "monitoring" / "alerts.jsonl",
        behaviour_alerts(scores, pseudonym=Pseudonymiser(b"k" * 32), top=10),
    )
    run_segmentation(root, publish=False, materialize=False, progress=False)
    return build_dashboard(DashboardInputs(root), root / "dashboard" / "index.html")


def test_every_panel_has_content(dashboard: Dashboard) -> None:
    assert dashboard.panels == list(PANELS)
    assert dashboard.missing == {}


def test_page_loads_in_chromium_without_console_errors_and_shows_the_panels(
    dashboard: Dashboard, chromium: str
) -> None:
    page = load_page(chromium, dashboard.path)
    assert page.console == [], page.console
    for panel in PANELS:
        assert f'id="{panel}"' in page.dom, panel
    assert "not available yet" not in page.dom
    # plotly drew its figures: every figure div holds an SVG after the scripts ran
    assert page.dom.count('class="main-svg"') >= len(PANELS) - 1
    for text in ("control", "transformer", "PSI", "ARI"):
        assert text in page.dom, text


def test_screenshot_is_written(dashboard: Dashboard, chromium: str, tmp_path: Path) -> None:
    """``PERSONA_DASHBOARD_SCREENSHOT=docs/dashboard.png`` keeps the shot (how the docs' one is made)."""
    keep = os.environ.get("PERSONA_DASHBOARD_SCREENSHOT")
    shot = screenshot(chromium, dashboard.path, Path(keep) if keep else tmp_path / "dashboard.png")
    assert shot.stat().st_size > 50_000
