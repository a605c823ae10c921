"""Customer segmentation on a small simulated bank: k chosen, stable, named, published to Feast.

One bank (600 customers, 45 days) is simulated, validated and turned into features once per
module; one full run (select → fit → stability → profile → publish → materialise into a
SQLite online store in the temp dir) is shared by the tests that read its outputs.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from persona.cli.segment import segment_app
from persona.features.build import feature_table_path
from persona.features.catalog import CUSTOMER_SEGMENT
from persona.features.store import OnlineStoreChoice, open_store
from persona.settings import PersonaSettings
from segmentation.features import (
    FEATURE_NAMES,
    RECENCY_CAP_DAYS,
    feature_spec,
    read_segmentation_matrix,
)
from segmentation.fit import fit_segmentation
from segmentation.params import SegmentationParams
from segmentation.pipeline import SegmentationSummary, load_run, run_segmentation
from segmentation.profile import TRAIT_MIN_Z, SegmentProfile, Trait, name_segments
from segmentation.publish import publish_segments
from segmentation.stability import bootstrap_ari
from tests.banks import featured_bank

CUSTOMERS = 600
DAYS = 45


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("segmentation_bank")
    featured_bank(root, customers=CUSTOMERS, days=DAYS, seed=3)
    return root


@dataclass(frozen=True)
class FittedRun:
    root: Path
    summary: SegmentationSummary
    settings: PersonaSettings
    choice: OnlineStoreChoice
    segments_before: pd.DataFrame


@pytest.fixture(scope="module")
def fitted(bank: Path) -> FittedRun:
    settings = PersonaSettings(
        data_dir=bank, online_store="sqlite", feast_project=f"seg_{uuid.uuid4().hex[:8]}"
    )
    choice = OnlineStoreChoice("sqlite", "test", str(settings.sqlite_online_path))
    before = pd.read_parquet(feature_table_path(bank, CUSTOMER_SEGMENT.name))
    summary = run_segmentation(
        bank, SegmentationParams(seed=0), settings=settings, online_store=choice, progress=False
    )
    return FittedRun(bank, summary, settings, choice, before)


def _assignments(run: FittedRun) -> pd.DataFrame:
    return pd.read_parquet(Path(run.summary.folder) / "assignments.parquet")


@pytest.mark.slow
def test_k_is_chosen_by_the_rule_and_reported(fitted: FittedRun) -> None:
    summary, selection, _, _ = load_run(Path(fitted.summary.folder))
    retail = selection.per_type["retail"]
    ks = [p.k for p in retail.curve]
    # k_min..k_max capped at 559 retail customers // 100 per segment.
    assert ks == [3, 4, 5], "every allowed k is on the reported curve"
    chosen = next(p for p in retail.curve if p.k == retail.chosen_k)
    best = max(p.silhouette for p in retail.curve)
    params = selection.params
    assert chosen.silhouette >= best - params.near_best_silhouette
    assert chosen.ari_mean >= params.min_ari + params.selection_margin
    assert all(np.isfinite(p.bic) for p in retail.curve)
    # 41 corporate customers are too few to split (cap = 41 // 100 = 0).
    assert selection.per_type["corporate"].chosen_k == 1
    assert summary.chosen_k == {"corporate": 1, "retail": retail.chosen_k}
    assert summary.k_total == 1 + retail.chosen_k
    assert summary.version.startswith(f"kmeans-k{summary.k_total}-")
    folder = Path(summary.folder)
    assert folder == fitted.root / "segmentation" / summary.version
    for name in ("selection.png", "segments.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "report.html").read_text()
    assert summary.version in page and "selection.png" in page


@pytest.mark.slow
def test_every_customer_gets_exactly_one_segment(fitted: FittedRun) -> None:
    assigned = _assignments(fitted)
    profile = pd.read_parquet(feature_table_path(fitted.root, "customer_profile"))
    assert assigned["customer_id"].is_unique
    assert sorted(assigned["customer_id"]) == sorted(profile["customer_id"])
    assert assigned["segment_id"].notna().all()
    ids = {s.segment_id for s in fitted.summary.segments}
    assert set(assigned["segment_id"]) == ids
    assert len(ids) == fitted.summary.k_total
    sizes = assigned["segment_id"].value_counts()
    assert {s.segment_id: s.customers for s in fitted.summary.segments} == sizes.to_dict()
    # A segment never mixes customer types.
    types = profile.set_index("customer_id")["customer_type"]
    for segment_id, rows in assigned.groupby("segment_id"):
        assert set(types[rows["customer_id"]]) == {segment_id.rsplit("-", 1)[0]}


@pytest.mark.slow
def test_names_are_unique_and_made_of_the_segments_traits(fitted: FittedRun) -> None:
    _, _, _, profiles = load_run(Path(fitted.summary.folder))
    names = [p.name for p in profiles]
    assert len(set(names)) == len(names)
    retail = [p for p in profiles if p.customer_type == "retail"]
    assert len(retail) >= 3
    for p in retail:
        type_word, *words = p.name.split(" · ")
        assert type_word == "retail" and words
        by_label = {t.label: t for t in p.traits if t.label}
        for word in words:
            trait = by_label[word]
            spec = feature_spec(trait.feature)
            assert abs(trait.z) >= TRAIT_MIN_Z
            assert word == (spec.high if trait.z > 0 else spec.low)
        # The strongest labelled trait leads the name.
        assert words[0] == p.named_traits()[0].label
        assert p.top_products_held and 0 < p.top_products_held[0].share <= 1
        assert abs(sum(p.app_mix.values()) - 1.0) < 1e-3
        assert 0.0 <= p.consent_marketing_share <= 1.0
    assert [p.name for p in profiles if p.customer_type == "corporate"] == ["corporate · all"]


def _profile(segment_id: str, traits: list[tuple[str, float]]) -> SegmentProfile:
    def trait(feature: str, z: float) -> Trait:
        spec = feature_spec(feature)
        return Trait(
            feature=feature,
            z=z,
            label=spec.high if z > 0 else spec.low,
            segment_mean=0.0,
            population_mean=0.0,
        )

    return SegmentProfile(
        segment_id=segment_id,
        name="",
        customer_type="retail",
        customers=10,
        share=0.5,
        share_of_type=0.5,
        traits=[trait(f, z) for f, z in traits],
        top_products_held=[],
        top_products_engaged=[],
        app_mix={},
        consent_marketing_share=0.5,
    )


def test_names_grow_by_the_next_trait_until_unique() -> None:
    shared = [("txn_count_90d", 1.2), ("held_card", 0.9), ("imobile_share_90d", 0.8)]
    a = _profile("retail-1", [*shared, ("held_loan", 0.5)])
    b = _profile("retail-2", [*shared, ("held_loan", -0.5)])
    c = _profile("retail-3", [("recency_days", 1.5), ("held_card", 0.1)])
    twin = _profile("retail-4", [("recency_days", 1.5)])
    names = name_segments([a, b, c, twin])
    assert names["retail-1"] == "retail · high-txn · card-heavy · mobile · loan-heavy"
    assert names["retail-2"] == "retail · high-txn · card-heavy · mobile · loan-light"
    # Same traits and nothing left to add: the segment number tells them apart.
    assert names["retail-3"] == "retail · dormant #3"
    assert names["retail-4"] == "retail · dormant #4"
    assert len(set(names.values())) == 4


@pytest.mark.slow
def test_segments_are_stable_across_bootstrap_refits(fitted: FittedRun) -> None:
    _, _, stability, _ = load_run(Path(fitted.summary.folder))
    assert stability.bootstraps == 10 and len(stability.per_type["retail"].ari) == 10
    assert stability.per_type["retail"].ari_mean >= 0.8
    assert stability.overall_mean >= 0.8
    assert stability.stable and fitted.summary.stable


def test_bootstrap_ari_is_low_for_structureless_data() -> None:
    """The stability check can fail: k-means on Gaussian noise does not reproduce itself."""
    rng = np.random.default_rng(5)
    noise = pd.DataFrame(rng.normal(size=(400, len(FEATURE_NAMES))) ** 2, columns=FEATURE_NAMES)
    params = SegmentationParams(components=6, n_init=3)
    from segmentation.fit import segmentation_pipeline

    reference = segmentation_pipeline(8, params, len(noise), 0).fit_predict(noise)
    ari = bootstrap_ari(noise, reference, 8, params, bootstraps=4)
    assert np.mean(ari) < 0.8


@pytest.mark.slow
def test_same_seed_gives_the_same_segments(fitted: FittedRun) -> None:
    matrix = read_segmentation_matrix(fitted.root, fitted.summary.snapshot_at)
    params = SegmentationParams(seed=0)
    again = fit_segmentation(matrix, fitted.summary.chosen_k, params)
    assert again.version == fitted.summary.version
    labels = again.assign(matrix)
    published = _assignments(fitted).set_index("customer_id")["segment_id"]
    assert (labels == published.loc[labels.index]).all()
    other_seed = fit_segmentation(matrix, fitted.summary.chosen_k, SegmentationParams(seed=1))
    assert other_seed.version != again.version


@pytest.mark.slow
def test_publish_appends_rows_and_feast_serves_them(fitted: FittedRun) -> None:
    table = pd.read_parquet(feature_table_path(fitted.root, CUSTOMER_SEGMENT.name))
    version = fitted.summary.version
    new = table[table["segment_version"] == version]
    old = table[table["segment_version"] != version]
    # The placeholder rows stay; one new row per customer at the snapshot time.
    pd.testing.assert_frame_equal(
        old.sort_values("customer_id").reset_index(drop=True),
        fitted.segments_before.sort_values("customer_id").reset_index(drop=True),
    )
    assert set(old["segment_version"]) == {"rules_v0"}
    assert len(new) == CUSTOMERS and new["customer_id"].is_unique
    assert (new["event_timestamp"] == pd.Timestamp(fitted.summary.snapshot_at)).all()
    assert fitted.summary.published is not None
    assert fitted.summary.published.rows_added == CUSTOMERS
    assert fitted.summary.materialized is not None

    expected = _assignments(fitted).set_index("customer_id")["segment_id"]
    customers = [1, 2, 3, 250, 600]
    store = open_store(fitted.settings, fitted.choice)
    online = store.get_online_features(
        features=["customer_segment:segment_id", "customer_segment:segment_version"],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict()
    assert online["segment_id"] == [expected[c] for c in customers]
    assert online["segment_version"] == [version] * len(customers)


@pytest.mark.slow
def test_point_in_time_before_the_snapshot_still_sees_the_old_rule(fitted: FittedRun) -> None:
    from training.sets.point_in_time import connect, join_point_in_time

    snapshot = pd.Timestamp(fitted.summary.snapshot_at)
    entities = pa.table(
        {
            "row_id": [0, 1],
            "customer_id": [1, 1],
            "event_timestamp": pa.array(
                [
                    (snapshot - timedelta(seconds=1)).tz_convert(None).to_datetime64(),
                    snapshot.tz_convert(None).to_datetime64(),
                ],
                type=pa.timestamp("us"),
            ),
        }
    )
    rows = join_point_in_time(connect(), entities, fitted.root, [CUSTOMER_SEGMENT])
    assert rows.column("segment_version").to_pylist() == ["rules_v0", fitted.summary.version]


@pytest.mark.slow
def test_serving_priors_use_the_published_segments(fitted: FittedRun) -> None:
    from serving.priors import build_priors

    priors = build_priors(fitted.root)
    assert set(priors.segment_scores) == {s.segment_id for s in fitted.summary.segments}
    scores, source = priors.scores_for(fitted.summary.segments[1].segment_id)
    assert source == "segment_prior" and scores


@pytest.mark.slow
def test_republishing_at_the_same_snapshot_replaces_rather_than_duplicates(
    fitted: FittedRun,
) -> None:
    path = feature_table_path(fitted.root, CUSTOMER_SEGMENT.name)
    before = pq.read_table(path).num_rows
    segment_ids = _assignments(fitted).set_index("customer_id")["segment_id"]
    result = publish_segments(
        fitted.root, segment_ids, fitted.summary.version, fitted.summary.snapshot_at
    )
    assert result.rows_replaced == CUSTOMERS
    assert result.replaced_versions == [fitted.summary.version]
    assert result.rows_total == before == pq.read_table(path).num_rows


@pytest.mark.slow
def test_cold_start_customers_get_a_segment_from_empty_behaviour(fitted: FittedRun) -> None:
    behaviour = pd.read_parquet(feature_table_path(fitted.root, "customer_behaviour"))
    early = behaviour["event_timestamp"].min() + timedelta(days=1)
    matrix = read_segmentation_matrix(fitted.root, early.to_pydatetime())
    seen = set(behaviour.loc[behaviour["event_timestamp"] <= early, "customer_id"])
    cold = [c for c in matrix.features.index if c not in seen]
    assert cold, "some customers have no behaviour yet at the first snapshot"
    rows = matrix.features.loc[cold]
    assert (rows["recency_days"] == RECENCY_CAP_DAYS).all()
    assert (rows["txn_count_90d"] == 0).all()
    model = fit_segmentation(
        read_segmentation_matrix(fitted.root), fitted.summary.chosen_k, SegmentationParams()
    )
    assert model.assign(matrix).loc[cold].notna().all()


def test_missing_feature_tables_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"customer_profile.*persona features build"):
        read_segmentation_matrix(tmp_path)


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match="k_max"):
        SegmentationParams(k_min=6, k_max=4)
    with pytest.raises(ValueError, match="min_ari"):
        SegmentationParams(min_ari=1.5)


@pytest.mark.slow
def test_cli_report_and_fit_without_publishing(fitted: FittedRun) -> None:
    runner = CliRunner()
    result = runner.invoke(segment_app, ["report", "--data-dir", str(fitted.root)])
    assert result.exit_code == 0, result.output
    assert fitted.summary.version in result.output
    assert "retail-1" in result.output
    rows_before = pq.read_table(feature_table_path(fitted.root, CUSTOMER_SEGMENT.name)).num_rows
    result = runner.invoke(
        segment_app,
        [
            "fit", "--data-dir", str(fitted.root), "--k-min", "3", "--k-max", "3",
            "--bootstraps", "2", "--min-ari", "0", "--no-publish",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "kmeans-k4-" in result.output
    rows_after = pq.read_table(feature_table_path(fitted.root, CUSTOMER_SEGMENT.name)).num_rows
    assert rows_after == rows_before, "--no-publish leaves the feature view alone"
    summary = json.loads(
        next((fitted.root / "segmentation").glob("kmeans-k4-*/summary.json")).read_text()
    )
    assert summary["published"] is None and summary["chosen_k"]["retail"] == 3


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["fit", "--k-min", "1"], "k_min"),
        (["fit", "--k-min", "6", "--k-max", "4"], "k_max"),
        (["fit", "--min-ari", "2"], "min_ari"),
        (["fit", "--components", "0"], "components"),
        (["report", "--version", "kmeans-k9-nothere"], "version"),
    ],
)
def test_cli_errors_name_the_bad_option(tmp_path: Path, args: list[str], named: str) -> None:
    result = CliRunner().invoke(segment_app, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert named in result.output
    assert "Traceback" not in result.output


def test_cli_fit_on_a_folder_without_features_says_what_to_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(segment_app, ["fit", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "persona features build" in result.output
