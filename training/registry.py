"""The model registry of Persona's rankers: which trained model exists, what it was trained on,
and which version each app serves. Backed by MLflow (SQLite store, local artifact folder).

Layout under ``root``::

    mlflow.db                          runs, params, metrics, tags, registered models, aliases
    artifacts/persona-<dataset>/<run_id>/artifacts/
        model/                         a copy of the ``model_dir`` given to ``register_run``
        config.json                    the training config, unflattened (params lose types)

One MLflow run per training (experiment ``persona-<dataset>``) and one registered-model version
per run. Serving is an alias per app, ``serving-<app>``: an alias points at exactly one version,
so "exactly one version serves an app" holds by construction and moving an app to a new version
is one atomic write.

Why an explicit :class:`MlflowClient` everywhere: ``mlflow.set_tracking_uri`` is process-global,
so two registries in one process (tests, a comparison script) would silently write into each
other. MLflow is imported lazily, in the constructor: importing it costs seconds and nothing
here should run at import time.

The store records absolute artifact locations, so a registry folder is not relocatable as is.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from pydantic import BaseModel, ConfigDict

from persona.domain import APPS

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

#: Alias prefix: ``serving-rib`` names the version the rib app serves.
SERVING_ALIAS_PREFIX: Final = "serving-"
#: Run artifact folder holding the copied ``model_dir``.
MODEL_ARTIFACT_PATH: Final = "model"
#: Run and version tags every registered model carries (lineage of the model).
LINEAGE_TAGS: Final[tuple[str, ...]] = (
    "feature_service",
    "feature_service_version",
    "data_snapshot",
    "seed",
)
RUN_TAGS: Final[tuple[str, ...]] = (*LINEAGE_TAGS, "dataset", "model_name")
#: MLflow loggers that report DB creation/migration at INFO on every new store.
_NOISY_LOGGERS: Final[tuple[str, ...]] = ("mlflow.store.db.utils", "alembic.runtime.migration")

# Names go into MLflow filter strings, aliases and folder names: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# MLflow's own rule for metric/param/tag keys (without the colon it refuses on Windows), checked
# here so bad input fails before a run exists. Note: no "@", so "ndcg@10" must be "ndcg_at_10".
_KEY = re.compile(r"^[/\w.\- ]{1,250}$")
_KEY_RULE = "letters, digits, '_', '-', '.', '/', ' ' (no '@': write 'ndcg_at_10')"
_MAX_PARAM_VALUE = 6000  # MLflow's MAX_PARAM_VAL_LENGTH
_BATCH = 100  # MLflow's MAX_PARAMS_TAGS_PER_BATCH


class RegisteredVersion(BaseModel):
    """One registered model version with its lineage and the apps it serves."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    version: int
    run_id: str
    artifact_path: Path
    dataset: str
    feature_service: str
    feature_service_version: str
    data_snapshot: str
    seed: int
    metrics: dict[str, float]
    created_at: datetime
    serving_apps: list[str]


#: How many versions back serving_history remembers per app.
SERVING_HISTORY_KEPT = 10


def serving_history_tag(app: str) -> str:
    """The registered-model tag listing the versions ``app`` served, most recent first."""
    _check_app(app)
    return f"serving_history.{app}"


def serving_alias(app: str) -> str:
    """The registered-model alias naming the version ``app`` serves."""
    _check_app(app)
    return f"{SERVING_ALIAS_PREFIX}{app}"


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": value}`` MLflow params. Strings stay as they are, everything
    else is JSON (``true``, ``null``, ``[1, 2]``), so a param reads back unambiguously."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"config: keys must be non-empty strings, got {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items = flatten_config(value, prefix=f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            items = {name: text}
        for item_key, item_value in items.items():
            if item_key in flat:
                raise ValueError(f"config: key {item_key!r} appears twice after flattening")
            flat[item_key] = item_value
    return flat


def _check_app(app: str) -> None:
    if app not in APPS:
        raise ValueError(f"app: {app!r} is not one of {', '.join(APPS)}")


def _check_name(field: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{field}: {value!r} must be 1-128 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )


def _valid_key(key: object) -> bool:
    """MLflow's key rule: allowed characters, and a path that normalises to itself."""
    return (
        isinstance(key, str)
        and bool(_KEY.match(key))
        and posixpath.normpath(key) == key
        and key not in (".", "..")
        and not key.startswith(("/", "../"))
    )


def _check_version(version: int) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: must be a positive integer, got {version!r}")


def _check_text(field: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: must be a non-empty string")


def _local_path(uri: str) -> Path:
    """Local folder of a ``file://`` artifact URI (this registry only writes local artifacts)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise ValueError(f"artifact_path: {uri} is not a local file URI")
    return Path(url2pathname(unquote(parsed.path)))


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", ""))


class ModelRegistry:
    """Persona's model registry in the folder ``root`` (created if missing)."""

    def __init__(self, root: Path):
        from mlflow.tracking import MlflowClient

        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifact_root = self.root / "artifacts"
        self.tracking_uri = f"sqlite:///{self.root / 'mlflow.db'}"
        # Store creation logs "Creating initial MLflow database tables..." at INFO every time a
        # fresh registry opens; quiet those loggers only, and only if nobody configured them.
        for name in _NOISY_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
        self.client: MlflowClient = MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
        )

    # --- registering -----------------------------------------------------------------------

    def register_run(
        self,
        *,
        model_name: str,
        model_dir: Path,
        config: dict[str, Any],
        metrics: dict[str, float],
        feature_service: str,
        feature_service_version: str,
        data_snapshot: str,
        seed: int,
        dataset: str,
        tags: dict[str, str] | None = None,
    ) -> RegisteredVersion:
        """Log one training as an MLflow run (params = flattened ``config``, ``metrics``, lineage
        tags, ``model_dir`` copied as artifacts) and register it as a new version of
        ``model_name``. ``tags`` go on both the run and the version; they may not override the
        lineage tags. Input is validated before anything is written; a failure while logging
        marks the run FAILED and registers nothing."""
        from mlflow.entities import Metric, Param

        _check_name("model_name", model_name)
        _check_name("dataset", dataset)
        for field, value in (
            ("feature_service", feature_service),
            ("feature_service_version", feature_service_version),
            ("data_snapshot", data_snapshot),
        ):
            _check_text(field, value)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an integer, got {seed!r}")
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ValueError(f"model_dir: {model_dir} is not a folder")
        if not any(p.is_file() for p in model_dir.rglob("*")):
            raise ValueError(f"model_dir: {model_dir} contains no files")
        if not isinstance(config, dict):
            raise ValueError("config: must be a dict")
        params = flatten_config(config)
        config_json = json.dumps(config, indent=2, sort_keys=True, default=str)
        for key, value in params.items():
            if not _valid_key(key):
                raise ValueError(
                    f"config: key {key!r} is not a valid MLflow param name: {_KEY_RULE}"
                )
            if len(value) > _MAX_PARAM_VALUE:
                raise ValueError(f"config: value of {key!r} is longer than {_MAX_PARAM_VALUE}")
        if not isinstance(metrics, dict):
            raise ValueError("metrics: must be a dict of name -> number")
        clean_metrics: dict[str, float] = {}
        for key, value in metrics.items():
            if not _valid_key(key):
                raise ValueError(f"metrics: {key!r} is not a valid MLflow metric name: {_KEY_RULE}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"metrics: {key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"metrics: {key} is {value}; only finite values compare")
            clean_metrics[key] = float(value)
        if tags is not None and not isinstance(tags, dict):
            raise ValueError("tags: must be a dict of name -> string")
        extra = dict(tags or {})
        for key, value in extra.items():
            if not _valid_key(key) or not isinstance(value, str):
                raise ValueError(f"tags: {key!r} must be a valid name with a string value")
            if key in RUN_TAGS or key.startswith("mlflow."):
                raise ValueError(f"tags: {key!r} is reserved")

        lineage = {
            "feature_service": feature_service,
            "feature_service_version": feature_service_version,
            "data_snapshot": data_snapshot,
            "seed": str(seed),
        }
        experiment_id = self._experiment_id(f"persona-{dataset}")
        run = self.client.create_run(
            experiment_id, tags={**extra, **lineage, "dataset": dataset, "model_name": model_name}
        )
        run_id = run.info.run_id
        try:
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            param_list = [Param(k, v) for k, v in sorted(params.items())]
            for start in range(0, len(param_list), _BATCH):
                self.client.log_batch(run_id, params=param_list[start : start + _BATCH])
            metric_list = [Metric(k, v, now_ms, 0) for k, v in sorted(clean_metrics.items())]
            if metric_list:
                self.client.log_batch(run_id, metrics=metric_list)
            self.client.log_text(run_id, config_json, "config.json")
            self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

        self._ensure_registered_model(model_name)
        model_version = self.client.create_model_version(
            model_name,
            source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
            run_id=run_id,
            tags={**extra, **lineage},
        )
        return self.version(model_name, int(model_version.version))

    def _experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(
                name, artifact_location=(self.artifact_root / name).as_uri()
            )
        except MlflowException as error:  # created concurrently by another process
            if _error_code(error) != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def _ensure_registered_model(self, model_name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(model_name)
        except MlflowException as error:
            if _error_code(error) != "RESOURCE_ALREADY_EXISTS":
                raise

    # --- serving ---------------------------------------------------------------------------

    def mark_serving(self, model_name: str, version: int, app: str) -> RegisteredVersion:
        """Make ``version`` the one version of ``model_name`` that ``app`` serves (moves the
        app's alias off whichever version had it)."""
        alias = serving_alias(app)
        self.version(model_name, version)  # refuses unknown model or version
        history = [v for v in self.serving_history(model_name, app) if v != version]
        self.client.set_registered_model_alias(model_name, alias, str(version))
        # Most recent first, capped: where serving falls back when this version is refused.
        recent = [version, *history][:SERVING_HISTORY_KEPT]
        self.client.set_registered_model_tag(
            model_name, serving_history_tag(app), ",".join(str(v) for v in recent)
        )
        return self.version(model_name, version)

    def serving_history(self, model_name: str, app: str) -> list[int]:
        """Versions ``app`` has served, most recent first (the current one included)."""
        tag = serving_history_tag(app)
        _check_name("model_name", model_name)
        registered = self.client.get_registered_model(model_name)
        text = registered.tags.get(tag, "")
        return [int(v) for v in text.split(",") if v.strip().isdigit()]

    def serving_version(self, model_name: str, app: str) -> RegisteredVersion | None:
        """The version ``app`` serves, or None if no version of ``model_name`` serves it."""
        alias = serving_alias(app)
        version = self._aliases(model_name).get(alias)
        return None if version is None else self.version(model_name, int(version))

    # --- reading ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the registered models, sorted."""
        names: list[str] = []
        page_token = None
        while True:
            page = self.client.search_registered_models(page_token=page_token)
            names.extend(model.name for model in page)
            page_token = page.token
            if not page_token:
                return sorted(names)

    def versions(self, model_name: str) -> list[RegisteredVersion]:
        """Every version of ``model_name``, oldest first, with the apps each serves."""
        aliases = self._aliases(model_name)
        found: list[ModelVersion] = []
        page_token = None
        while True:
            page = self.client.search_model_versions(f"name='{model_name}'", page_token=page_token)
            found.extend(page)
            page_token = page.token
            if not page_token:
                break
        found.sort(key=lambda mv: int(mv.version))
        return [self._describe(mv, aliases) for mv in found]

    def version(self, model_name: str, version: int) -> RegisteredVersion:
        """One version of ``model_name``; ValueError naming ``model_name`` or ``version`` if
        either does not exist."""
        _check_version(version)
        aliases = self._aliases(model_name)
        from mlflow.exceptions import MlflowException

        try:
            model_version = self.client.get_model_version(model_name, str(version))
        except MlflowException as error:
            if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
                raise
            known = sorted(int(mv.version) for mv in self._search_versions(model_name))
            raise ValueError(
                f"version: model {model_name!r} has no version {version} (has {known or 'none'})"
            ) from error
        return self._describe(model_version, aliases)

    def load_dir(self, model_name: str, version: int) -> Path:
        """The local folder holding the files of ``model_dir`` as registered. With this local
        store it is the artifact folder itself, not a copy: read it, never write into it."""
        import mlflow.artifacts

        self.version(model_name, version)  # refuses unknown model or version
        uri = self.client.get_model_version_download_uri(model_name, str(version))
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
        )
        return Path(local)

    def _search_versions(self, model_name: str) -> list[ModelVersion]:
        return list(self.client.search_model_versions(f"name='{model_name}'"))

    def _aliases(self, model_name: str) -> dict[str, str]:
        """Alias -> version of ``model_name``; ValueError naming ``model_name`` if unknown."""
        _check_name("model_name", model_name)
        from mlflow.exceptions import MlflowException

        try:
            registered = self.client.get_registered_model(model_name)
        except MlflowException as error:
            if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise ValueError(f"model_name: no registered model {model_name!r}") from error
        return {alias: str(version) for alias, version in registered.aliases.items()}

    def _describe(self, model_version: ModelVersion, aliases: dict[str, str]) -> RegisteredVersion:
        run = self.client.get_run(model_version.run_id)
        tags = model_version.tags
        missing = [tag for tag in LINEAGE_TAGS if tag not in tags]
        if missing:
            raise ValueError(
                f"version: {model_version.name} v{model_version.version} lacks lineage tags "
                f"{missing} (not registered through ModelRegistry)"
            )
        serving = {
            alias.removeprefix(SERVING_ALIAS_PREFIX)
            for alias, version in aliases.items()
            if alias.startswith(SERVING_ALIAS_PREFIX) and version == str(model_version.version)
        }
        return RegisteredVersion(
            model_name=model_version.name,
            version=int(model_version.version),
            run_id=model_version.run_id,
            artifact_path=_local_path(model_version.source),
            dataset=run.data.tags.get("dataset", ""),
            feature_service=tags["feature_service"],
            feature_service_version=tags["feature_service_version"],
            data_snapshot=tags["data_snapshot"],
            seed=int(tags["seed"]),
            metrics=dict(run.data.metrics),
            created_at=datetime.fromtimestamp(model_version.creation_timestamp / 1000, tz=UTC),
            serving_apps=[app for app in APPS if app in serving],
        )
