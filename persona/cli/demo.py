"""``persona demo``: the main job end to end on a small simulated bank.

simulate → validate → build features (DuckDB) → feast apply → materialise → read one
customer's online feature vector → build labelled examples from the logged impressions
(point-in-time features) → train the transformer with Ray Train → evaluate it beside the
baselines → register it (MLflow) as serving for every app → start the Ray Serve graph and call
it as the four apps would (recommendations, events) → say where everything is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer
from rich.panel import Panel
from rich.table import Table

from persona.cli.errors import console, user_errors
from persona.cli.features import settings_for
from persona.layout import DataLayout, parquet_glob


def demo_command(
    customers: Annotated[int, typer.Option(help="Customers to simulate.")] = 2_000,
    days: Annotated[int, typer.Option(help="Days of activity to simulate.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs of the small model.")] = 3,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where to write (default: PERSONA_DATA_DIR).")
    ] = None,
) -> None:
    """Run the main job end to end and print one customer's online feature vector."""
    from persona.features.build import build_features
    from persona.features.store import (
        apply_definitions,
        choose_online_store,
        materialize_all,
        online_customer_vector,
        open_store,
    )
    from persona.simulator import SimulationConfig, simulate_bank
    from persona.validation import validate_dataset

    with user_errors():
        settings = settings_for(data_dir)
    root = settings.data_dir
    timings: dict[str, float] = {}

    def step(name: str) -> float:
        console.rule(f"[bold]{name}")
        return time.perf_counter()

    with user_errors():
        started = step(f"1. simulate {customers:,} customers × {days} days (seed {seed})")
        sim = simulate_bank(SimulationConfig(customers=customers, days=days, seed=seed), root)
        console.print(f"rows: {sim.rows}")
        timings["simulate"] = time.perf_counter() - started

        started = step("2. validate raw → clean (+ quarantine)")
        report = validate_dataset(root)
        timings["validate"] = time.perf_counter() - started

        started = step("3. build offline features with DuckDB (point-in-time correct)")
        built = build_features(root)
        console.print(f"feature rows: {built.rows}")
        timings["features_build"] = time.perf_counter() - started

        choice = choose_online_store(settings)
        console.print(
            f"online store: [bold]{choice.kind}[/bold] at {choice.location} — {choice.reason}"
        )
        store = open_store(settings, choice)
        started = step("4. feast apply")
        names = apply_definitions(store, root)
        console.print(f"{len(names)} objects registered")
        timings["feast_apply"] = time.perf_counter() - started

        started = step(f"5. feast materialize → {choice.kind}")
        result = materialize_all(store, root)
        console.print(
            f"{sum(result.rows.values()):,} entity rows in {result.seconds:.1f} s "
            f"({result.rows_per_second:,.0f} rows/s)"
        )
        timings["materialize"] = time.perf_counter() - started

        step("6. one customer's online feature vector (feature service customer_context_v1)")
        customer_id = _most_active_customer(root)
        vector = online_customer_vector(store, customer_id)
    console.print(_vector_table(customer_id, vector))

    with user_errors():
        started = step("7. labelled examples from logged impressions (point-in-time features)")
        summary = _train_and_evaluate(root, epochs, seed, step)
        timings["train_and_evaluate"] = time.perf_counter() - started
    console.print(_results_table(summary))

    with user_errors():
        started = step("9. serve: Ray Serve graph over HTTP, real requests from all four apps")
        served = _serve_and_call(root)
        timings["serve"] = time.perf_counter() - started

        started = step("10. monitor: segments, drift, behaviour anomalies → dashboard")
        dashboard = _monitor(root, settings, choice)
        timings["monitor"] = time.perf_counter() - started
    layout = DataLayout(root)
    console.print(
        Panel.fit(
            "\n".join(
                [
                    f"raw tables          {layout.raw}",
                    f"clean tables        {layout.clean}",
                    f"quarantine          {layout.quarantine} "
                    f"({sum(t.rows_quarantined for t in report.tables.values()):,} rows refused)",
                    f"validation report   {layout.validation_report}",
                    f"offline features    {layout.features}",
                    f"feast registry      {settings.feast_registry_path}",
                    f"online store        {choice.kind}: {choice.location}",
                    f"example set         {summary.examples}",
                    f"trained model       {Path(summary.output_dir) / 'model'}",
                    f"evaluation report   {summary.report} (+ metrics.json, PNG plots)",
                    f"model registry      {root / 'registry'} (MLflow; version "
                    f"{summary.registered_version} serving rib, cib, nli, imobile)",
                    f"served responses    {served}",
                    f"live event log      {root / 'serving' / 'events'} (Parquet, from /v1/events)",
                    f"serve it yourself   persona serve --data-dir {root}  → http://127.0.0.1:8000/docs",
                    f"segments            {root / 'segmentation'} (profiles, stability, report.html)",
                    f"dashboard           {dashboard}",
                    f"timings (s)         {json.dumps({k: round(v, 1) for k, v in timings.items()})}",
                    "next                persona features show --customer-id "
                    f"{customer_id} --data-dir {root}",
                ]
            ),
            title="where to look",
        )
    )


def _train_and_evaluate(root: Path, epochs: int, seed: int, step: Callable[[str], float]) -> Any:
    from training.config import TrainConfig
    from training.pipeline import run_training
    from training.sets.impressions import build_impression_set

    examples = root / "examples"
    manifest = build_impression_set(
        root, examples, dataset="demo", max_len=20, valid_days=5, test_days=5, seed=seed
    )
    console.print(f"rows per split: {manifest.rows}; {manifest.notes[-1]}")
    step(f"8. train the transformer with Ray Train ({epochs} epochs), fit baselines, evaluate")
    config = TrainConfig(
        run_name="demo",
        examples=examples,
        output_dir=root / "runs" / "demo",
        architecture={"d_model": 32, "n_blocks": 1, "n_heads": 1, "dropout": 0.2},
        epochs=epochs,
        batch_size=256,
        learning_rate=0.002,
        lr_schedule="cosine",
        eval_protocol="candidates",
        test_protocols=["candidates"],
        seed=seed,
        registry={"root": root / "registry", "serve_apps": ["rib", "cib", "nli", "imobile"]},
    )
    return run_training(config, progress=False)


def _serve_and_call(root: Path) -> Path:
    """Start the graph, call it as the four apps would, print the answers; returns the JSON."""
    import socket
    import statistics

    import requests

    from persona.cli.serving import build_serving_priors, serving_args_for
    from serving.runner import start_serving, stop_serving
    from serving.settings import ServingArgs

    build_serving_priors(root)
    args = serving_args_for(root)
    assert isinstance(args, ServingArgs)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = start_serving(args, port=port, quiet=True)
    console.print(f"serving at {url} (OpenAPI at {url}/docs)")
    glob = parquet_glob(DataLayout(root).clean_table("customers"))
    with duckdb.connect() as con:
        retail = [
            r[0]
            for r in con.sql(
                f"SELECT customer_id FROM read_parquet('{glob}') WHERE customer_type = 'retail' "
                "AND consent_marketing ORDER BY customer_id LIMIT 200"
            ).fetchall()
        ]
        corporate = [
            r[0]
            for r in con.sql(
                f"SELECT customer_id FROM read_parquet('{glob}') WHERE customer_type = 'corporate' "
                "ORDER BY customer_id LIMIT 3"
            ).fetchall()
        ]
    retail = _one_per_arm(retail, args) or retail[:3]
    responses: list[dict[str, Any]] = []
    try:
        for app in ("rib", "cib", "nli", "imobile"):
            for customer_id in corporate if app == "cib" else retail:
                answer = requests.post(
                    f"{url}/v1/recommendations",
                    json={"customer_id": customer_id, "app": app, "context": {"device": "ios"}},
                    headers={"X-API-Key": f"demo-{app}-key"},
                    timeout=30,
                )
                answer.raise_for_status()
                responses.append({"customer_id": customer_id, "app": app, **answer.json()})
        console.print(_responses_table(responses))
        first = next(r for r in responses if r["items"])
        events = [
            {
                "customer_id": first["customer_id"],
                "app": first["app"],
                "event_type": kind,
                "product_id": first["items"][0]["product_id"],
                "request_id": first["request_id"],
            }
            for kind in ("impression", "click")
        ]
        ack = requests.post(
            f"{url}/v1/events",
            json={"events": events},
            headers={"X-API-Key": f"demo-{first['app']}-key"},
            timeout=30,
        ).json()
        console.print(
            f"events: {ack['accepted']} accepted, durable={ack['durable']}, "
            f"applied online={ack['online_applied']}"
        )
        latencies = []
        for i in range(100):
            t0 = time.perf_counter()
            requests.post(
                f"{url}/v1/recommendations",
                json={"customer_id": retail[i % len(retail)], "app": "rib"},
                headers={"X-API-Key": "demo-rib-key"},
                timeout=30,
            ).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1e3)
        quantiles = statistics.quantiles(latencies, n=100)
        console.print(
            f"100 sequential requests: p50 {quantiles[49]:.1f} ms, p99 {quantiles[98]:.1f} ms"
        )
    finally:
        stop_serving()
    out = root / "serving" / "demo_responses.json"
    out.write_text(json.dumps(responses, indent=1))
    return out


def _monitor(root: Path, settings: Any, choice: Any) -> Path:
    """Segment the customers (published to the feature store), measure drift since training,
    score behaviour anomalies, and write the dashboard; returns its path."""
    from monitoring.alerts import write_alerts
    from monitoring.behaviour_anomaly import behaviour_alerts, latest_behaviour, score_behaviour
    from monitoring.dashboard.build import DashboardInputs, build_dashboard
    from monitoring.drift import drift_report, write_drift_report
    from persona.pseudonym import configured_pseudonymiser
    from segmentation.pipeline import run_segmentation
    from training.examples import ExampleSet

    segments = run_segmentation(root, settings=settings, online_store=choice, progress=False)
    console.print(
        f"segments: {segments.k_total} ({segments.chosen_k}), version {segments.version}, "
        f"bootstrap ARI {segments.ari_overall_mean:.3f}"
        + ("" if segments.published else f" — not published: {segments.not_published_because}")
    )
    drift = drift_report(ExampleSet(root / "examples"), root)
    write_drift_report(drift, root / "monitoring" / "drift")
    alerting = sum(f.status == "alert" for f in drift.features)
    console.print(f"drift: {len(drift.features)} features, {alerting} over the alert threshold")
    pseudonym = configured_pseudonymiser(root)
    alerts = behaviour_alerts(score_behaviour(latest_behaviour(root)), pseudonym=pseudonym, top=20)
    alerts_file = root / "monitoring" / "alerts.jsonl"
    alerts_file.unlink(missing_ok=True)  # this run's alerts only (the file is append-only)
    write_alerts(alerts_file, alerts)
    console.print(f"behaviour anomalies: {len(alerts)} alerts")
    result = build_dashboard(DashboardInputs(root), root / "dashboard" / "index.html")
    console.print(f"dashboard: {result.path}")
    return result.path


def _one_per_arm(customer_ids: list[int], args: Any) -> list[int]:
    """A few customers covering every arm of rib's experiment, so the demo shows each arm."""
    from serving.config import load_apps, load_experiments
    from serving.experiments import assign

    apps = load_apps(args.apps_file)
    name = apps.apps["rib"].experiment
    if name is None:
        return []
    experiment = load_experiments(args.experiments_file, apps).experiments[name]
    chosen: dict[str, int] = {}
    for customer_id in customer_ids:
        chosen.setdefault(assign(customer_id, name, experiment).variant.name, customer_id)
    return sorted(chosen.values())


def _responses_table(responses: list[dict[str, Any]]) -> Table:
    table = Table(title="POST /v1/recommendations, as the four apps call it")
    for column in ("app", "customer", "variant → model", "items (score)", "ms"):
        table.add_column(column, overflow="fold")
    for r in responses:
        items = ", ".join(f"{i['product_id']} {i['score']:.2f}" for i in r["items"])
        model = r["model_version"] + (" [red](degraded)[/red]" if r["degraded"] else "")
        table.add_row(
            r["app"],
            str(r["customer_id"]),
            f"{r['variant']} → {model}",
            items or "(none eligible)",
            f"{r['latency_ms']:.0f}",
        )
    first = next((r for r in responses if r["items"]), None)
    if first is not None:
        top = first["items"][0]
        table.caption = (
            f"reasons for {first['app']} #1 {top['product_id']}: {', '.join(top['reasons'])}"
        )
    return table


def _results_table(summary: Any) -> Table:
    table = Table(title="held-out test requests: rank the clicked product among the eligible ones")
    for column in ("model", "NDCG@10", "HR@10", "MRR", "AUC"):
        table.add_column(column)
    for name, metrics in summary.test.items():
        cells = [
            f"{metrics[m]:.4f}" if metrics.get(m) is not None else "–"
            for m in ("ndcg@10", "hr@10", "mrr", "auc")
        ]
        table.add_row(name.split("/")[0], *cells)
    lift = summary.lift_vs_best_baseline.get("candidates")
    if lift is not None:
        table.caption = f"transformer vs {summary.best_baseline['candidates']}: NDCG@10 {lift:+.1%}"
    return table


def _most_active_customer(root: Path) -> int:
    """The customer with the most product interactions: the richest vector to show."""
    glob = parquet_glob(DataLayout(root).clean_table("events"))
    with duckdb.connect() as con:
        row = con.execute(
            f"SELECT customer_id FROM read_parquet('{glob}', hive_partitioning = false) "
            "WHERE event_type IN ('click', 'apply', 'purchase') "
            "GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT 1"
        ).fetchone()
    if row is None:
        raise ValueError(f"no product interactions in {glob}")
    return int(row[0])


def _vector_table(customer_id: int, vector: dict[str, object]) -> Table:
    table = Table(title=f"customer {customer_id}: online features", show_lines=False)
    table.add_column("feature")
    table.add_column("value", overflow="fold")
    for name, value in vector.items():
        text = str(value)
        table.add_row(name, text if len(text) <= 160 else text[:157] + "...")
    return table
