"""The MLflow-backed model registry and the data-snapshot hash."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from training import snapshot
from training.registry import ModelRegistry, RegisteredVersion, flatten_config
from training.snapshot import data_snapshot_hash, file_sha256

CONFIG = {
    "model": "sasrec",
    "optimizer": {"lr": 0.001, "schedule": {"warmup": 100}},
    "layers": [64, 32],
    "use_bias": True,
    "dropout": None,
}


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly migrated, empty registry DB; copying it saves ~1.5 s of migrations per test."""
    root = tmp_path_factory.mktemp("template")
    ModelRegistry(root)
    return root / "mlflow.db"


@pytest.fixture
def registry(tmp_path: Path, template_db: Path) -> ModelRegistry:
    root = tmp_path / "registry"
    root.mkdir()
    shutil.copyfile(template_db, root / "mlflow.db")
    return ModelRegistry(root)


def make_model_dir(path: Path, payload: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(payload)
    (path / "meta").mkdir()
    (path / "meta" / "vocab.json").write_text(json.dumps({"n_items": 3}))
    return path


def register(
    registry: ModelRegistry, tmp_path: Path, payload: bytes, **overrides: object
) -> RegisteredVersion:
    name = f"model-{hashlib.sha256(payload).hexdigest()[:8]}-{len(list(tmp_path.iterdir()))}"
    arguments: dict[str, object] = {
        "model_name": "sasrec",
        "model_dir": make_model_dir(tmp_path / name, payload),
        "config": CONFIG,
        "metrics": {"ndcg_at_10": 0.25, "hit_at_10": 0.5},
        "feature_service": "ranker_v1",
        "feature_service_version": "3",
        "data_snapshot": "abc123",
        "seed": 7,
        "dataset": "bank",
    }
    arguments.update(overrides)
    return registry.register_run(**arguments)  # type: ignore[arg-type]


# --- registering --------------------------------------------------------------------------


def test_register_run_returns_lineage_metrics_and_increasing_versions(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    before = datetime.now(UTC)
    first = register(registry, tmp_path, b"v1")
    second = register(registry, tmp_path, b"v2", seed=8, metrics={"ndcg_at_10": 0.3})

    assert (first.version, second.version) == (1, 2)
    assert first.model_name == "sasrec"
    assert first.feature_service == "ranker_v1"
    assert first.feature_service_version == "3"
    assert first.data_snapshot == "abc123"
    assert (first.seed, second.seed) == (7, 8)
    assert first.dataset == "bank"
    assert first.metrics == {"ndcg_at_10": 0.25, "hit_at_10": 0.5}
    assert second.metrics == {"ndcg_at_10": 0.3}
    assert first.serving_apps == []
    assert first.run_id != second.run_id
    assert before.timestamp() - 1 <= first.created_at.timestamp() <= second.created_at.timestamp()
    assert first.created_at.tzinfo is not None
    assert (first.artifact_path / "weights.bin").read_bytes() == b"v1"
    assert first.artifact_path.is_relative_to(registry.root / "artifacts" / "persona-bank")
    assert [v.version for v in registry.versions("sasrec")] == [1, 2]
    assert registry.models() == ["sasrec"]


def test_params_metrics_tags_and_config_are_stored_in_mlflow(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    registered = register(registry, tmp_path, b"w", tags={"owner": "ranking-team"})
    run = registry.client.get_run(registered.run_id)

    assert run.info.status == "FINISHED"
    experiment = registry.client.get_experiment(run.info.experiment_id)
    assert experiment.name == "persona-bank"
    assert run.data.params == {
        "model": "sasrec",
        "optimizer.lr": "0.001",
        "optimizer.schedule.warmup": "100",
        "layers": "[64, 32]",
        "use_bias": "true",
        "dropout": "null",
    }
    assert run.data.metrics == {"ndcg_at_10": 0.25, "hit_at_10": 0.5}
    lineage = {
        "feature_service": "ranker_v1",
        "feature_service_version": "3",
        "data_snapshot": "abc123",
        "seed": "7",
    }
    assert (
        run.data.tags.items()
        >= {
            **lineage,
            "dataset": "bank",
            "model_name": "sasrec",
            "owner": "ranking-team",
        }.items()
    )
    model_version = registry.client.get_model_version("sasrec", "1")
    assert model_version.tags == {**lineage, "owner": "ranking-team"}
    assert model_version.run_id == registered.run_id

    config_path = registry.client.download_artifacts(
        registered.run_id, "config.json", str(tmp_path)
    )
    assert json.loads(Path(config_path).read_text()) == CONFIG


def test_flatten_config_refuses_keys_that_collide() -> None:
    assert flatten_config({"a": {"b": 1}, "c": "x"}) == {"a.b": "1", "c": "x"}
    with pytest.raises(ValueError, match=r"^config: key 'a.b' appears twice"):
        flatten_config({"a": {"b": 1}, "a.b": 2})


# --- serving ------------------------------------------------------------------------------


def test_serving_aliases_move_between_versions(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path, b"v1")
    register(registry, tmp_path, b"v2")
    assert registry.serving_version("sasrec", "rib") is None

    assert registry.mark_serving("sasrec", 1, "rib").serving_apps == ["rib"]
    registry.mark_serving("sasrec", 2, "imobile")
    assert registry.serving_version("sasrec", "rib").version == 1  # type: ignore[union-attr]
    assert registry.serving_version("sasrec", "imobile").version == 2  # type: ignore[union-attr]
    assert registry.serving_version("sasrec", "cib") is None
    assert {v.version: v.serving_apps for v in registry.versions("sasrec")} == {
        1: ["rib"],
        2: ["imobile"],
    }

    moved = registry.mark_serving("sasrec", 2, "rib")
    assert moved.serving_apps == ["rib", "imobile"]  # ordered as persona.domain.APPS
    assert registry.serving_version("sasrec", "rib").version == 2  # type: ignore[union-attr]
    assert {v.version: v.serving_apps for v in registry.versions("sasrec")} == {
        1: [],
        2: ["rib", "imobile"],
    }
    # Marking again is idempotent.
    registry.mark_serving("sasrec", 2, "rib")
    assert registry.version("sasrec", 1).serving_apps == []


def test_serving_history_remembers_what_each_app_served_most_recent_first(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    for payload in (b"v1", b"v2", b"v3"):
        register(registry, tmp_path, payload)
    for version in (1, 2, 3):
        registry.mark_serving("sasrec", version, "rib")
    registry.mark_serving("sasrec", 2, "imobile")
    assert registry.serving_history("sasrec", "rib") == [3, 2, 1]
    registry.mark_serving("sasrec", 1, "rib")  # a rollback moves 1 to the front, once
    assert registry.serving_history("sasrec", "rib") == [1, 3, 2]
    assert registry.serving_history("sasrec", "imobile") == [2]
    assert registry.serving_history("sasrec", "cib") == []


def test_a_fresh_model_book_skips_a_refused_serving_version_for_the_previous_one(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a replica starting after a bad promotion does: the alias names a version it must
    refuse, so it serves the version the app served before, and says why."""
    import serving.engines as engines
    from serving.ranking import ModelRefused

    class CheckedModel:  # ServedModel's refusal contract, on the registry's real artifacts
        def __init__(self, folder: Path, name: str, version: int):
            if (Path(folder) / "weights.bin").read_bytes() == b"incompatible":
                raise ModelRefused(f"{name}@v{version}: trained on another feature service")
            self.version = version

    monkeypatch.setattr(engines, "ServedModel", CheckedModel)
    register(registry, tmp_path, b"good")
    register(registry, tmp_path, b"incompatible")
    for app in ("rib", "imobile"):
        registry.mark_serving("sasrec", 1, app)
    registry.mark_serving("sasrec", 2, "rib")
    book = engines.ModelBook()
    book.load(registry.root, "sasrec", pinned=set())
    assert book.by_app == {"rib": "sasrec@v1", "imobile": "sasrec@v1"}
    assert "another feature service" in book.errors["sasrec@v2"]
    # A replica already serving keeps its version when the alias moves to a refused one.
    registry.mark_serving("sasrec", 2, "imobile")
    book.load(registry.root, "sasrec", pinned=set())
    assert book.by_app["imobile"] == "sasrec@v1"


def test_serving_is_per_model(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path, b"a", model_name="sasrec")
    register(registry, tmp_path, b"b", model_name="lightgbm")
    registry.mark_serving("sasrec", 1, "rib")
    assert registry.serving_version("lightgbm", "rib") is None
    assert registry.serving_version("sasrec", "rib").model_name == "sasrec"  # type: ignore[union-attr]
    assert registry.models() == ["lightgbm", "sasrec"]


# --- artifacts ----------------------------------------------------------------------------


def test_artifacts_round_trip_byte_identical(registry: ModelRegistry, tmp_path: Path) -> None:
    payload_1 = bytes(range(256)) * 4099  # ~1 MB, every byte value
    payload_2 = payload_1[::-1]
    register(registry, tmp_path, payload_1)
    register(registry, tmp_path, payload_2)

    loaded_1 = registry.load_dir("sasrec", 1)
    loaded_2 = registry.load_dir("sasrec", 2)
    assert loaded_1 != loaded_2
    assert (loaded_1 / "weights.bin").read_bytes() == payload_1
    assert (loaded_2 / "weights.bin").read_bytes() == payload_2
    assert json.loads((loaded_1 / "meta" / "vocab.json").read_text()) == {"n_items": 3}
    assert sorted(p.relative_to(loaded_1).as_posix() for p in loaded_1.rglob("*")) == [
        "meta",
        "meta/vocab.json",
        "weights.bin",
    ]
    assert loaded_1 == registry.version("sasrec", 1).artifact_path


def test_model_dir_is_copied_not_referenced(registry: ModelRegistry, tmp_path: Path) -> None:
    registered = register(registry, tmp_path, b"original")
    [source] = [p for p in tmp_path.iterdir() if p.name.startswith("model-")]
    shutil.rmtree(source)
    assert (registry.load_dir("sasrec", registered.version) / "weights.bin").read_bytes() == (
        b"original"
    )


# --- isolation ----------------------------------------------------------------------------


def test_two_registries_are_independent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    tracking_before = mlflow.get_tracking_uri()
    first = ModelRegistry(tmp_path / "a")  # fresh stores: exercises DB creation as well
    second = ModelRegistry(tmp_path / "b")
    (tmp_path / "models").mkdir()

    register(first, tmp_path / "models", b"in-a")
    register(first, tmp_path / "models", b"in-a-2")
    with pytest.raises(ValueError, match=r"^model_name: "):
        second.versions("sasrec")

    in_b = register(second, tmp_path / "models", b"in-b", seed=99)
    second.mark_serving("sasrec", 1, "nli")
    assert in_b.version == 1
    assert [v.version for v in first.versions("sasrec")] == [1, 2]
    assert first.serving_version("sasrec", "nli") is None
    assert (second.load_dir("sasrec", 1) / "weights.bin").read_bytes() == b"in-b"
    assert (first.load_dir("sasrec", 1) / "weights.bin").read_bytes() == b"in-a"
    assert first.version("sasrec", 1).seed == 7

    # Nothing leaked into global MLflow state or the working directory.
    assert mlflow.get_tracking_uri() == tracking_before
    assert str(tmp_path / "a") not in tracking_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "models"]
    assert logging.getLogger("mlflow.store.db.utils").level == logging.WARNING


# --- refusals -----------------------------------------------------------------------------


def test_unknown_app_version_and_model_are_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path, b"v1")

    with pytest.raises(ValueError, match=r"^app: 'web' is not one of rib, cib, nli, imobile"):
        registry.mark_serving("sasrec", 1, "web")
    with pytest.raises(ValueError, match=r"^app: "):
        registry.serving_version("sasrec", "web")

    with pytest.raises(
        ValueError, match=r"^version: model 'sasrec' has no version 5 \(has \[1\]\)"
    ):
        registry.mark_serving("sasrec", 5, "rib")
    with pytest.raises(ValueError, match=r"^version: "):
        registry.load_dir("sasrec", 2)
    with pytest.raises(ValueError, match=r"^version: must be a positive integer"):
        registry.version("sasrec", 0)
    with pytest.raises(ValueError, match=r"^version: must be a positive integer"):
        registry.version("sasrec", True)

    for call in (
        lambda: registry.versions("nope"),
        lambda: registry.version("nope", 1),
        lambda: registry.load_dir("nope", 1),
        lambda: registry.mark_serving("nope", 1, "rib"),
        lambda: registry.serving_version("nope", "rib"),
    ):
        with pytest.raises(ValueError, match=r"^model_name: no registered model 'nope'"):
            call()
    with pytest.raises(ValueError, match=r"^model_name: "):
        registry.versions("bad'name")

    # A refused alias never got written.
    assert registry.serving_version("sasrec", "rib") is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metrics": {"ndcg_at_10": float("nan")}}, "metrics"),
        ({"metrics": {"ndcg": "high"}}, "metrics"),
        ({"metrics": {"ndcg@10": 0.5}}, "metrics"),  # MLflow refuses '@' in names
        ({"metrics": {"a/../b": 0.5}}, "metrics"),
        ({"tags": {"seed": "1"}}, "tags"),
        ({"tags": {"owner": 3}}, "tags"),
        ({"seed": "7"}, "seed"),
        ({"feature_service": ""}, "feature_service"),
        ({"data_snapshot": " "}, "data_snapshot"),
        ({"dataset": "bank/2024"}, "dataset"),
        ({"model_name": ""}, "model_name"),
        ({"config": {"a": {"b": 1}, "a.b": 2}}, "config"),
        ({"config": {"x": "y" * 7000}}, "config"),
    ],
)
def test_bad_registration_input_is_refused_before_writing(
    registry: ModelRegistry, tmp_path: Path, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        register(registry, tmp_path, b"w", **overrides)
    assert registry.models() == []
    assert registry.client.get_experiment_by_name("persona-bank") is None


def test_missing_or_empty_model_dir_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    arguments = {
        "model_name": "sasrec",
        "config": {},
        "metrics": {},
        "feature_service": "fs",
        "feature_service_version": "1",
        "data_snapshot": "h",
        "seed": 0,
        "dataset": "bank",
    }
    with pytest.raises(ValueError, match=r"^model_dir: .* is not a folder"):
        registry.register_run(model_dir=tmp_path / "missing", **arguments)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^model_dir: .* contains no files"):
        registry.register_run(model_dir=tmp_path / "empty", **arguments)  # type: ignore[arg-type]


# --- data snapshot hash -------------------------------------------------------------------


def write_snapshot(root: Path) -> Path:
    (root / "events" / "event_date=2024-01-01").mkdir(parents=True)
    (root / "events" / "event_date=2024-01-02").mkdir(parents=True)
    (root / "events" / "event_date=2024-01-01" / "part-0.parquet").write_bytes(b"day one" * 100)
    (root / "events" / "event_date=2024-01-02" / "part-0.parquet").write_bytes(b"day two" * 100)
    (root / "customers.parquet").write_bytes(b"customers")
    return root


def test_snapshot_hash_matches_the_documented_format(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(b"abc")
    content = hashlib.sha256(b"abc").hexdigest()
    assert content == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    expected = hashlib.sha256(f"a.parquet\0{3}\0{content}\n".encode()).hexdigest()
    assert data_snapshot_hash([tmp_path / "a.parquet"]) == expected


def test_snapshot_hash_is_stable_and_location_independent(tmp_path: Path) -> None:
    original = write_snapshot(tmp_path / "one")
    first = data_snapshot_hash([original])
    assert first == data_snapshot_hash([original])
    assert len(first) == 64

    copy = tmp_path / "elsewhere" / "deeper" / "copy"
    shutil.copytree(original, copy)
    assert data_snapshot_hash([copy]) == first

    # The same files listed one by one, in any order, hash as the folder does.
    files = sorted(p for p in original.rglob("*") if p.is_file())
    assert data_snapshot_hash(files[::-1], root=original) == first
    assert data_snapshot_hash([*files, original]) == first  # duplicates count once


def test_snapshot_hash_changes_with_one_byte_or_a_rename(tmp_path: Path) -> None:
    root = write_snapshot(tmp_path / "snap")
    before = data_snapshot_hash([root])
    target = root / "events" / "event_date=2024-01-02" / "part-0.parquet"
    data = bytearray(target.read_bytes())
    data[350] ^= 0x01  # same size, one bit different
    target.write_bytes(bytes(data))
    after_byte = data_snapshot_hash([root])
    assert after_byte != before

    target.rename(target.with_name("part-1.parquet"))
    assert data_snapshot_hash([root]) not in (before, after_byte)


def test_file_hash_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = bytes(range(256)) * 10 + b"tail"
    (tmp_path / "f.parquet").write_bytes(payload)
    monkeypatch.setattr(snapshot, "CHUNK_BYTES", 7)  # many partial chunks, a short last one
    assert file_sha256(tmp_path / "f.parquet") == hashlib.sha256(payload).hexdigest()


def test_snapshot_hash_refuses_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"^paths: at least one"):
        data_snapshot_hash([])
    with pytest.raises(ValueError, match=r"^paths: .* does not exist"):
        data_snapshot_hash([tmp_path / "missing.parquet"])
    with pytest.raises(ValueError, match=r"^paths: the given folders contain no files"):
        data_snapshot_hash([tmp_path / "empty"])
    with pytest.raises(ValueError, match=r"^paths: .* is not under root"):
        data_snapshot_hash([tmp_path / "other"], root=tmp_path / "empty")
    with pytest.raises(ValueError, match=r"^paths: expected a list"):
        data_snapshot_hash(tmp_path / "other")  # type: ignore[arg-type]
