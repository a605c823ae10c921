"""Amazon Games (SASRec) loader on the real file: counts, schema, references, per-user order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from persona.loaders import LoadSummary, MissingSourceError, load_amazon_games
from persona.loaders.amazon_games import BASE_TIME
from persona.loaders.errors import LoaderError

pytestmark = pytest.mark.slow

#: Facts from shared/data/README.md.
INTERACTIONS, USERS, ITEMS = 287_107, 31_013, 23_715


@pytest.fixture(scope="module")
def loaded(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoadSummary]:
    out = tmp_path_factory.mktemp("amazon")
    return out, load_amazon_games(shared_data / "amazon_games", out, roots=[shared_data])


def test_row_counts_match_the_published_data(loaded: tuple[Path, LoadSummary]) -> None:
    _, summary = loaded
    assert summary.rows == {"customers": USERS, "products": ITEMS, "events": INTERACTIONS}
    assert summary.source == "amazon_games"
    assert any("+ n hours" in note for note in summary.notes)


def test_tables_conform_and_reference_each_other(
    loaded: tuple[Path, LoadSummary],
    conforms: Callable[[Path, str], pa.Table],
    passes_validation: Callable[[Path], None],
) -> None:
    out, _ = loaded
    customers = conforms(out, "customers")
    products = conforms(out, "products")
    conforms(out, "events")
    passes_validation(out)
    # Ids are kept as in the file (SASRec protocol): users 1..31013, items "1".."23715".
    assert sorted(customers.column("customer_id").to_pylist()) == list(range(1, USERS + 1))
    assert sorted(int(p) for p in products.column("product_id").to_pylist()) == list(
        range(1, ITEMS + 1)
    )


def test_each_users_order_is_preserved(
    loaded: tuple[Path, LoadSummary], shared_data: Path, raw: Callable[[Path, str], pa.Table]
) -> None:
    out, _ = loaded
    pairs = np.loadtxt(shared_data / "amazon_games" / "Video.txt", dtype=np.int64)
    by_user = np.argsort(pairs[:, 0], kind="stable")  # file order within each user
    events = raw(out, "events").sort_by(
        [("customer_id", "ascending"), ("event_timestamp", "ascending")]
    )
    assert np.array_equal(events.column("customer_id").to_numpy(), pairs[by_user, 0])
    assert np.array_equal(
        events.column("product_id").to_numpy(zero_copy_only=False).astype(np.int64),
        pairs[by_user, 1],
    )
    # Timestamps are BASE_TIME + position hours: strictly increasing within a user.
    stamps = events.column("event_timestamp").cast(pa.int64()).to_numpy()
    users = events.column("customer_id").to_numpy()
    same_user = users[1:] == users[:-1]
    assert np.all(np.diff(stamps)[same_user] == 3_600_000_000)
    first = stamps[np.r_[True, ~same_user]]
    assert np.all(first == int(BASE_TIME.timestamp() * 1_000_000))
    assert set(events.column("event_type").to_pylist()) == {"purchase"}
    assert set(events.column("app").to_pylist()) == {"rib"}


def test_last_item_per_user_is_the_files_last(
    loaded: tuple[Path, LoadSummary], shared_data: Path, raw: Callable[[Path, str], pa.Table]
) -> None:
    """The latest event of user 1 is its last line in the file (its leave-one-out test item)."""
    out, _ = loaded
    lines = (shared_data / "amazon_games" / "Video.txt").read_text().splitlines()
    user_one = [line.split()[1] for line in lines if line.split()[0] == "1"]
    events = raw(out, "events")
    mine = events.filter(pc.equal(events.column("customer_id"), 1))
    last = mine.sort_by([("event_timestamp", "descending")]).slice(0, 1).to_pylist()[0]
    assert mine.num_rows == len(user_one)
    assert last["product_id"] == user_one[-1]
    assert last["event_timestamp"] == BASE_TIME + timedelta(hours=len(user_one) - 1)
    assert last["event_timestamp"] < datetime.now(UTC)


def test_malformed_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MissingSourceError, match=r"Video\.txt"):
        load_amazon_games(tmp_path, tmp_path / "out", roots=[tmp_path])
    bad = tmp_path / "Video.txt"
    bad.write_text("1 2\n1 x\n")
    with pytest.raises(LoaderError, match=r"Video\.txt"):
        load_amazon_games(bad, tmp_path / "out", roots=[tmp_path])
    bad.write_text("1 2\n0 3\n")
    with pytest.raises(LoaderError, match="user_id < 1"):
        load_amazon_games(bad, tmp_path / "out", roots=[tmp_path])
