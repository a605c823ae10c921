"""Open Bandit loader on the real logs: impressions, clicks, propensities, stable customer ids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from persona.loaders import LoadSummary, MissingColumnError, MissingSourceError, load_open_bandit
from persona.loaders.errors import LoaderError
from persona.loaders.ids import stable_customer_id
from persona.schemas import TIMESTAMP

IMPRESSIONS = 10_000  # per log, shared/data/README.md
CLICK_RATES = {"random": 0.0038, "bts": 0.0042}  # campaign 'all', shared/data/README.md


@pytest.fixture(scope="module")
def loads(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, LoadSummary]]:
    result = {}
    for policy in ("random", "bts"):
        out = tmp_path_factory.mktemp(f"obd_{policy}")
        summary = load_open_bandit(
            shared_data / "open_bandit",
            out,
            policy=policy,
            roots=[shared_data],  # type: ignore[arg-type]
        )
        result[policy] = (out, summary)
    return result


@pytest.mark.parametrize("policy", ["random", "bts"])
def test_impressions_clicks_and_click_rate(
    loads: dict[str, tuple[Path, LoadSummary]],
    policy: str,
    conforms: Callable[[Path, str], pa.Table],
    passes_validation: Callable[[Path], None],
) -> None:
    out, summary = loads[policy]
    events = conforms(out, "events")
    conforms(out, "customers")
    products = conforms(out, "products")
    passes_validation(out)
    types = events.column("event_type")
    impressions = events.filter(pc.equal(types, "impression"))
    clicks = events.filter(pc.equal(types, "click"))
    assert impressions.num_rows == IMPRESSIONS
    assert clicks.num_rows / impressions.num_rows == pytest.approx(CLICK_RATES[policy], abs=1e-9)
    assert summary.rows["events"] == IMPRESSIONS + clicks.num_rows
    assert products.num_rows == 80
    assert set(events.column("model_version").to_pylist()) == {policy}
    assert set(events.column("variant").to_pylist()) == {policy}
    assert impressions.column("request_id").null_count == 0
    assert len(pc.unique(impressions.column("request_id"))) == IMPRESSIONS
    assert clicks.column("propensity").null_count == clicks.num_rows


def test_random_policy_propensity_is_uniform(loads: dict[str, tuple[Path, LoadSummary]]) -> None:
    out, _ = loads["random"]
    events = pq.read_table(out / "raw" / "events", partitioning=None)
    propensity = events.filter(pc.equal(events.column("event_type"), "impression")).column(
        "propensity"
    )
    assert pc.min(propensity).as_py() == pc.max(propensity).as_py() == 1 / 80


def test_impressions_keep_the_logged_values(
    loads: dict[str, tuple[Path, LoadSummary]], shared_data: Path
) -> None:
    out, _ = loads["random"]
    log = pcsv.read_csv(
        shared_data / "open_bandit" / "random" / "all" / "all.csv",
        convert_options=pcsv.ConvertOptions(column_types={"timestamp": TIMESTAMP}),
    )
    events = pq.read_table(out / "raw" / "events", partitioning=None)
    impressions = events.filter(pc.equal(events.column("event_type"), "impression"))
    row = pc.cast(
        pc.utf8_slice_codeunits(impressions.column("request_id"), len("open_bandit-random-all-")),
        pa.int64(),
    )
    impressions = impressions.append_column("row", row).sort_by("row")
    assert impressions.column("event_timestamp").equals(log.column("timestamp"))
    assert impressions.column("position").cast(pa.int64()).equals(log.column("position"))
    assert impressions.column("product_id").to_pylist() == [
        f"obd_{i}" for i in log.column("item_id").to_pylist()
    ]
    keys = [
        "|".join(parts)
        for parts in zip(
            *(log.column(f"user_feature_{i}").to_pylist() for i in range(4)), strict=True
        )
    ]
    assert impressions.column("customer_id").to_pylist() == [stable_customer_id(k) for k in keys]


def test_clicks_follow_their_impression(loads: dict[str, tuple[Path, LoadSummary]]) -> None:
    out, _ = loads["random"]
    events = pq.read_table(out / "raw" / "events", partitioning=None)
    by_request = {}
    for event in events.to_pylist():
        by_request.setdefault(event["request_id"], {})[event["event_type"]] = event
    clicked = [pair for pair in by_request.values() if "click" in pair]
    assert len(clicked) == 38
    for pair in clicked:
        shown, click = pair["impression"], pair["click"]
        assert click["event_timestamp"] - shown["event_timestamp"] == timedelta(seconds=1)
        for field in ("customer_id", "product_id", "position", "app"):
            assert click[field] == shown[field]


def test_customer_ids_are_stable_across_logs(loads: dict[str, tuple[Path, LoadSummary]]) -> None:
    maps = {
        policy: pq.read_table(summary.extra_files["id_map"]).to_pylist()
        for policy, (_, summary) in loads.items()
    }
    assert len(maps["random"]) == loads["random"][1].rows["customers"] == 240
    random_ids = {m["external_id"]: m["customer_id"] for m in maps["random"]}
    bts_ids = {m["external_id"]: m["customer_id"] for m in maps["bts"]}
    shared = set(random_ids) & set(bts_ids)
    assert shared, "the two logs share user-feature combinations"
    assert all(random_ids[k] == bts_ids[k] for k in shared)
    first = maps["random"][0]
    assert first["external_id"] == "|".join(first[f"user_feature_{i}"] for i in range(4))


def test_deterministic(shared_data: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        load_open_bandit(
            shared_data / "open_bandit", tmp_path / name, campaign="men", roots=[shared_data]
        )
    first = sorted((tmp_path / "a").rglob("*.parquet"))
    second = sorted((tmp_path / "b").rglob("*.parquet"))
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in second
    ]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_bad_arguments_and_missing_inputs(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="policy 'greedy'"):
        load_open_bandit(
            shared_data / "open_bandit", tmp_path, policy="greedy", roots=[shared_data]
        )  # type: ignore[arg-type]
    with pytest.raises(MissingSourceError, match=r"all\.csv"):
        load_open_bandit(tmp_path, tmp_path / "out", roots=[tmp_path])
    folder = tmp_path / "obd" / "random" / "all"
    folder.mkdir(parents=True)
    source = shared_data / "open_bandit" / "random" / "all"
    (folder / "item_context.csv").write_bytes((source / "item_context.csv").read_bytes())
    lines = (source / "all.csv").read_text().splitlines()[:5]
    (folder / "all.csv").write_text("\n".join(lines).replace("propensity_score", "pscore") + "\n")
    with pytest.raises(MissingColumnError, match="'propensity_score'"):
        load_open_bandit(tmp_path / "obd", tmp_path / "out", roots=[tmp_path])
