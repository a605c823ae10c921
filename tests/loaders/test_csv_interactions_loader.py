"""The user-file loader on small crafted CSV/Parquet files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from persona.layout import DataLayout
from persona.loaders import ColumnMapping, LoadSummary, MissingColumnError, load_interactions_csv
from persona.loaders.errors import LoaderError
from persona.loaders.ids import stable_customer_id

MAPPING = ColumnMapping(
    user="uid",
    item="sku",
    timestamp="when",
    event_type="action",
    app="channel",
    position="rank",
    request_id="req",
)
GOOD_CSV = """uid,sku,when,action,channel,rank,req,extra
1,card_gold,2024-03-01 10:00:00,impression,rib,2,r1,x
1,card_gold,2024-03-01 10:00:05,click,rib,2,r1,y
2,loan_24m,2024-03-02T08:30:00+02:00,purchase,imobile,,,z
1,loan_24m,2024-03-03,apply,imobile,,,
"""


def write(tmp_path: Path, text: str, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path: Path, out: Path, mapping: ColumnMapping = MAPPING, **kwargs: object) -> LoadSummary:
    return load_interactions_csv(path, out, mapping, roots=[path.parent], **kwargs)  # type: ignore[arg-type]


def test_good_file_maps_every_row(
    tmp_path: Path,
    conforms: Callable[[Path, str], pa.Table],
    passes_validation: Callable[[Path], None],
) -> None:
    out = tmp_path / "out"
    summary = load(write(tmp_path, GOOD_CSV), out)
    assert summary.rows == {"customers": 2, "products": 2, "events": 4}
    assert "id_map" not in summary.extra_files
    assert (out / "load_summary.json").is_file()
    events = conforms(out, "events").sort_by("event_id")
    customers = conforms(out, "customers").sort_by("customer_id")
    products = conforms(out, "products")
    passes_validation(out)
    assert events.column("event_id").to_pylist() == ["events-1", "events-2", "events-3", "events-4"]
    assert events.column("customer_id").to_pylist() == [1, 1, 2, 1]
    assert events.column("event_type").to_pylist() == ["impression", "click", "purchase", "apply"]
    assert events.column("position").to_pylist() == [2, 2, None, None]
    assert events.column("request_id").to_pylist() == ["r1", "r1", None, None]
    assert events.column("event_timestamp").to_pylist() == [
        datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
        datetime(2024, 3, 1, 10, 0, 5, tzinfo=UTC),
        datetime(2024, 3, 2, 6, 30, tzinfo=UTC),  # +02:00 converted to UTC
        datetime(2024, 3, 3, tzinfo=UTC),
    ]
    assert customers.column("customer_id").to_pylist() == [1, 2]
    assert customers.column("apps_enrolled").to_pylist() == [["imobile", "rib"], ["imobile"]]
    assert customers.column("created_at").to_pylist()[0] == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert sorted(products.column("product_id").to_pylist()) == ["card_gold", "loan_24m"]
    assert set(products.column("category").to_pylist()) == {"other"}


def test_missing_mapped_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_CSV)
    mapping = MAPPING.model_copy(update={"timestamp": "event_time"})
    with pytest.raises(MissingColumnError, match="'event_time'") as caught:
        load(path, tmp_path / "out", mapping)
    assert caught.value.columns == ["event_time"]
    assert not (tmp_path / "out" / "raw").exists()


def test_string_user_ids_get_a_stable_id_map(
    tmp_path: Path, raw: Callable[[Path, str], pa.Table]
) -> None:
    text = GOOD_CSV.replace("\n1,", "\nalice,").replace("\n2,", "\n007,")
    out = tmp_path / "out"
    summary = load(write(tmp_path, text), out)
    map_path = DataLayout(out).root / "id_map" / "customers.parquet"
    assert summary.extra_files["id_map"] == map_path
    id_map = pq.read_table(map_path)
    mapping = dict(
        zip(
            id_map.column("external_id").to_pylist(),
            id_map.column("customer_id").to_pylist(),
            strict=True,
        )
    )
    # '007' keeps its leading zeros: it is an external id, not the integer 7.
    assert set(mapping) == {"alice", "007"}
    assert mapping["alice"] == stable_customer_id("alice") >= 1
    events = raw(out, "events").sort_by("event_id")
    assert events.column("customer_id").to_pylist() == [
        mapping["alice"],
        mapping["alice"],
        mapping["007"],
        mapping["alice"],
    ]
    # Loading again gives the same ids (deterministic, independent of the rest of the file).
    again = tmp_path / "again"
    load(write(tmp_path, text.replace("007", "bob"), "other.csv"), again)
    other = pq.read_table(DataLayout(again).root / "id_map" / "customers.parquet").to_pylist()
    assert {"external_id": "alice", "customer_id": mapping["alice"]} in other


def test_unknown_event_types_are_named_or_mapped(
    tmp_path: Path, raw: Callable[[Path, str], pa.Table]
) -> None:
    path = write(tmp_path, GOOD_CSV.replace("impression", "view").replace("apply", "wishlist"))
    with pytest.raises(LoaderError, match=r"'action'.*'view', 'wishlist'.*event_type_map"):
        load(path, tmp_path / "out")
    load(path, tmp_path / "out", event_type_map={"view": "impression", "wishlist": "click"})
    types = raw(tmp_path / "out", "events").sort_by("event_id").column("event_type").to_pylist()
    assert types == ["impression", "click", "purchase", "click"]
    with pytest.raises(LoaderError, match="event_type_map target 'like'"):
        load(path, tmp_path / "out", event_type_map={"view": "like"})


def test_app_must_be_mapped_or_defaulted(
    tmp_path: Path, raw: Callable[[Path, str], pa.Table]
) -> None:
    path = write(tmp_path, GOOD_CSV)
    no_app = MAPPING.model_copy(update={"app": None})
    with pytest.raises(LoaderError, match="default_app"):
        load(path, tmp_path / "out", no_app)
    load(path, tmp_path / "out", no_app, default_app="nli")
    assert set(raw(tmp_path / "out", "events").column("app").to_pylist()) == {"nli"}
    with pytest.raises(LoaderError, match=r"'web'"):
        load(write(tmp_path, GOOD_CSV.replace(",rib,", ",web,")), tmp_path / "out")
    with pytest.raises(LoaderError, match=r"default_app 'web'"):
        load(path, tmp_path / "out", no_app, default_app="web")


def test_empty_app_values_need_a_default(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_CSV.replace(",imobile,,,z", ",,,,z"))
    with pytest.raises(LoaderError, match=r"1 row\(s\) with an empty 'channel'"):
        load(path, tmp_path / "out")
    summary = load(path, tmp_path / "out", default_app="rib")
    assert any("1 empty 'channel'" in note for note in summary.notes)


def test_impressions_need_a_position(tmp_path: Path) -> None:
    no_position = MAPPING.model_copy(update={"position": None})
    with pytest.raises(LoaderError, match=r"1 impression\(s\) with no position column"):
        load(write(tmp_path, GOOD_CSV), tmp_path / "out", no_position)
    with pytest.raises(LoaderError, match=r"'rank' \(position\) are not SMALLINT.*'top'"):
        load(write(tmp_path, GOOD_CSV.replace(",2,r1,x", ",top,r1,x")), tmp_path / "out")


def test_event_type_must_be_mapped_or_defaulted(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_CSV)
    no_type = MAPPING.model_copy(update={"event_type": None})
    with pytest.raises(LoaderError, match="default_event_type"):
        load(path, tmp_path / "out", no_type)
    assert load(path, tmp_path / "out", no_type, default_event_type="purchase").rows["events"] == 4


def test_timestamp_formats(tmp_path: Path, raw: Callable[[Path, str], pa.Table]) -> None:
    text = "uid,sku,when\n5,a,01/02/2024 13:45\n6,b,31/12/2023 00:00\n"
    mapping = ColumnMapping(user="uid", item="sku", timestamp="when")
    kwargs = {"default_app": "rib", "default_event_type": "click"}

    path = write(tmp_path, text)
    with pytest.raises(LoaderError, match=r"2 value\(s\) of 'when' do not parse"):
        load(path, tmp_path / "out", mapping, **kwargs)
    load(path, tmp_path / "out", mapping, timestamp_format="%d/%m/%Y %H:%M", **kwargs)
    stamps = raw(tmp_path / "out", "events").sort_by("event_id").column("event_timestamp")
    assert stamps.to_pylist() == [
        datetime(2024, 2, 1, 13, 45, tzinfo=UTC),
        datetime(2023, 12, 31, tzinfo=UTC),
    ]
    epoch = write(tmp_path, "uid,sku,when\n5,a,1704067200\n", "epoch.csv")
    with pytest.raises(LoaderError, match="timestamp_format"):
        load(epoch, tmp_path / "out", mapping, **kwargs)
    load(epoch, tmp_path / "out", mapping, timestamp_format="epoch_s", **kwargs)
    assert raw(tmp_path / "out", "events").column("event_timestamp").to_pylist() == [
        datetime(2024, 1, 1, tzinfo=UTC)
    ]


def test_parquet_input_and_stale_tables(
    tmp_path: Path, conforms: Callable[[Path, str], pa.Table]
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "uid": pa.array([10, 11], pa.int64()),
                "sku": pa.array([7, 8], pa.int64()),
                "when": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 2)], pa.timestamp("ms")),
                "action": ["purchase", "txn"],
                "channel": ["cib", "rib"],
            }
        ),
        path,
    )
    out = tmp_path / "out"
    stale = DataLayout(out).raw_table("holdings")
    stale.mkdir(parents=True)
    (stale / "part-00000.parquet").write_bytes(b"left over")
    summary = load(path, out, MAPPING.model_copy(update={"position": None, "request_id": None}))
    assert not stale.exists()
    assert any("removed raw/holdings" in note for note in summary.notes)
    events = conforms(out, "events").sort_by("event_id")
    assert events.column("customer_id").to_pylist() == [10, 11]
    assert events.column("product_id").to_pylist() == ["7", "8"]


def test_empty_user_or_item_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"1 row\(s\) with an empty 'uid'"):
        load(write(tmp_path, GOOD_CSV.replace("\n2,", "\n,")), tmp_path / "out")
    with pytest.raises(LoaderError, match=r"1 row\(s\) with an empty 'sku'"):
        load(
            write(
                tmp_path,
                GOOD_CSV.replace("1,card_gold,2024-03-01 10:00:00", "1,,2024-03-01 10:00:00"),
            ),
            tmp_path / "out",
        )


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="unknown file type"):
        load(write(tmp_path, GOOD_CSV, "events.xlsx"), tmp_path / "out")
    with pytest.raises(LoaderError, match="does not exist"):
        load(tmp_path / "nope.csv", tmp_path / "out")
