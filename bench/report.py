"""The performance table from ``bench/results/*.json``: printed, written to
``bench/results/performance.md``, and put into README.md between the ``bench:table`` markers.

Every row gives the target, what was measured and the reference measured in the same run.
A missing result file leaves its row saying how to produce it.

    python bench/report.py
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH.parent / "README.md"
START, END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"

Row = tuple[str, str, str, str, str]  # what, target, measured, reference, ratio


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def missing(what: str, target: str, command: str) -> Row:
    return (what, target, f"not measured yet: `{command}`", "", "")


def serving_rows() -> list[Row]:
    data = load("serving_throughput")
    what = "full graph `POST /v1/recommendations`"
    target = "≥ 300 req/s at p99 ≤ 50 ms; never < 120 req/s at p99 ≤ 100 ms"
    if data is None:
        return [missing(what, target, "make bench-serving")]
    s = data["summary"]
    prod = s["production"]
    levels = data["runs"]["production"]["levels"]
    by_clients = ", ".join(
        f"c={lv['clients']}: {lv['req_per_s']:.0f} req/s p99 {lv['p99_ms']:.0f} ms" for lv in levels
    )
    refs = []
    for ref, label in (("naive_serve", "naive Serve graph"), ("single_process", "one uvicorn")):
        if ref in s:
            refs.append(
                f"{label}: {s[ref]['best_req_per_s_p99_le_100ms']:.0f} req/s (p99 ≤ 100 ms), "
                f"{s[ref]['best_req_per_s_p99_le_50ms']:.0f} (p99 ≤ 50 ms)"
            )
    ratios = []
    for ref, label in (("naive_serve", "naive Serve"), ("single_process", "one uvicorn")):
        per_level = prod.get(f"ratio_vs_{ref}_by_clients", {})
        if per_level:
            ratios.append(
                f"vs {label}: " + ", ".join(f"{r}× at c={c}" for c, r in per_level.items())
            )
    measured = (
        f"**{prod['best_req_per_s_p99_le_50ms']:.0f} req/s at p99 ≤ 50 ms**, "
        f"{prod['best_req_per_s_p99_le_100ms']:.0f} at p99 ≤ 100 ms ({by_clients}); "
        f"{data['catalogue_items']} products, "
        f"{data['runs']['production']['candidates_per_app']['rib']} candidates (rib)"
    )
    rows = [(what, target, measured, "; ".join(refs), "; ".join(ratios))]
    if "fused" in s:
        rows.append(
            (
                "same, model in its own deployment (`fused`)",
                "—",
                f"{s['fused']['best_req_per_s_p99_le_100ms']:.0f} req/s at p99 ≤ 100 ms",
                "the shipped `colocated` above",
                f"{s['fused']['best_req_per_s_p99_le_100ms'] / max(prod['best_req_per_s_p99_le_100ms'], 1e-9):.2f}×",
            )
        )
    return rows


def feature_rows() -> list[Row]:
    data = load("feature_store")
    rows: list[Row] = []
    reads = (data or {}).get("online_read", {})
    for key, what, target in (
        ("1_customer", "online features, 1 customer (all views + sequence)", "p99 ≤ 2 ms"),
        ("100_customers", "online features, 100 customers", "p99 ≤ 10 ms"),
    ):
        got = reads.get(key)
        if not got:
            rows.append(missing(what, target, "make bench-features"))
            continue
        ours, sdk = got["fast_reader_sync"], got["feast_sdk"]
        rows.append(
            (
                what,
                target,
                f"p50 {ours['p50_ms']:.2f} ms, p99 {ours['p99_ms']:.2f} ms "
                f"(answers equal to the SDK's: {got['answers_compared'] - got['answers_differing']}"
                f"/{got['answers_compared']})",
                f"Feast SDK p50 {sdk['p50_ms']:.2f} ms, p99 {sdk['p99_ms']:.2f} ms",
                f"{sdk['p50_ms'] / ours['p50_ms']:.1f}× p50, {sdk['p99_ms'] / ours['p99_ms']:.1f}× p99",
            )
        )
    mat = (data or {}).get("materialize", {})
    big, same = mat.get("bulk_1000000_customers"), mat.get("stock_vs_bulk_same_window")
    what, target = "materialisation of 1M customers into Redis", "≥ 50k rows/s"
    if not big or not same:
        rows.append(missing(what, target, "make bench-features"))
    else:
        rows.append(
            (
                what,
                target,
                f"{big['rows_per_second']:,} rows/s ({big['entity_rows_total']:,} rows in "
                f"{big['seconds']:.0f} s, peak RSS {big['peak_rss_mb']:,} MB)",
                f"`feast materialize` {same['feast_stock']['rows_per_second']:,} rows/s "
                f"({same['window']}; Redis contents byte-identical: "
                f"{same['redis_contents_byte_identical']})",
                f"{big['rows_per_second'] / same['feast_stock']['rows_per_second']:.1f}×",
            )
        )
    return rows


def events_rows() -> list[Row]:
    data = load("events_ingest")
    what, target = "`POST /v1/events` durable ingestion", "≥ 5k events/s, zero lost"
    if data is None:
        return [missing(what, target, "make bench-events")]
    http = data["http"]
    levels = ", ".join(
        f"{lv['events_per_s']:,.0f} events/s at {lv['batch']} a request" for lv in http["levels"]
    )
    return [
        (
            what,
            target,
            f"{levels}; acked {http['acked']:,}, stored {http['stored']:,}, lost {http['lost']}, "
            f"duplicates {http['duplicates']}",
            "count of the Parquet event log after the run",
            f"stored / acked = {http['stored'] / max(http['acked'], 1):.3f}",
        )
    ]


def training_rows() -> list[Row]:
    data = load("training_throughput")
    what = "Ray Train, transformer on CPU (Amazon Games)"
    target = "samples/s and time to target NDCG@10"
    if data is None:
        return [missing(what, target, "make bench-training-throughput")]
    summary = data.get("summary", data)
    return [
        (
            what,
            target,
            str(summary.get("ray", ""))[:400],
            str(summary.get("torch", ""))[:400],
            str(summary.get("ratios", ""))[:200],
        )
    ]


def memory_rows() -> list[Row]:
    rows: list[Row] = []
    serving = load("serving_throughput")
    if serving is not None:
        rss = serving["runs"]["production"].get("rss_mb", {})
        rows.append(
            (
                "peak memory: serving (after the run)",
                "—",
                ", ".join(f"{k} {v:,.0f} MB" for k, v in rss.items()),
                "one uvicorn process: "
                + ", ".join(
                    f"{v:,.0f} MB"
                    for v in serving["runs"].get("single_process", {}).get("rss_mb", {}).values()
                ),
                "",
            )
        )
    throughput = load("training_throughput")
    if throughput is None:
        rows.append(
            missing("peak memory: training, simulator", "—", "make bench-training-throughput")
        )
        return rows
    memory = throughput["summary"]["peak_memory_mb"]
    rows.append(
        (
            "peak memory: training (Ray Train, Amazon Games transformer)",
            "—",
            f"train worker {memory['training_ray_train_worker']:,.0f} MB; all Ray processes "
            f"RSS {memory['training_ray_all_processes_rss']:,.0f} MB "
            f"(PSS {memory['training_ray_all_processes_pss']:,.0f} MB)",
            f"one torch process: {memory['training_torch_process']:,.0f} MB",
            f"{memory['training_ray_all_processes_rss'] / memory['training_torch_process']:.1f}× "
            "all processes",
        )
    )
    if memory["simulator"]:
        rows.append(
            (
                "peak memory: simulator (all processes)",
                "—",
                "; ".join(f"{size}: {mb:,.0f} MB" for size, mb in memory["simulator"].items()),
                "; ".join(
                    f"{size}: {mb:,.0f} MB (`make bench-simulator`)"
                    for size, mb in memory["simulator_reference"].items()
                ),
                "",
            )
        )
    return rows


SECTIONS: tuple[Callable[[], list[Row]], ...] = (
    serving_rows,
    feature_rows,
    events_rows,
    training_rows,
    memory_rows,
)


def table() -> str:
    lines = [
        "| what | target (this 2-core machine) | measured | reference, same run | ratio |",
        "|---|---|---|---|---|",
    ]
    for section in SECTIONS:
        for row in section():
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def main() -> None:
    text = table()
    (RESULTS / "performance.md").write_text(text + "\n")
    readme = README.read_text()
    if START in readme and END in readme:
        block = f"{START}\n{text}\n{END}"
        readme = re.sub(
            re.escape(START) + r".*?" + re.escape(END), lambda _: block, readme, flags=re.S
        )
        README.write_text(readme)
    print(text)


if __name__ == "__main__":
    main()
