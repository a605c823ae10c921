"""Serving configuration: typed, read from YAML, validated before anything starts.

Three files, each with its own owner and reload story:

* ``apps.yaml`` — per calling app: hashed API keys, allowed product categories, ``k`` limits,
  which experiment runs there (platform team; read at start).
* ``rules.yaml`` — business rules with a version (risk and compliance; hot-reloaded).
* ``experiments.yaml`` — experiments per app: salt, variants, split, holdout (product
  analytics; applied with ``reconfigure``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from persona import domain
from persona.settings import PROJECT_ROOT

DEFAULT_CONFIG_DIR = PROJECT_ROOT / "configs" / "serving"
_SHA256_HEX = r"^[0-9a-f]{64}$"


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The largest event batch /v1/events accepts (serving.api.MAX_EVENTS_PER_BATCH, repeated here
#: to keep this module free of the API's imports; a test checks they agree).
EVENT_BATCH_LIMIT = 1_000


class RateLimit(_Strict):
    """A token bucket: ``per_second`` sustained, ``burst`` at once."""

    per_second: float = Field(gt=0, le=1e6)
    burst: int = Field(ge=1, le=10_000_000)


class AppRateLimits(_Strict):
    """Per app and endpoint, enforced across all replicas (Redis token buckets)."""

    recommendations: RateLimit = Field(description="Requests.")
    events: RateLimit = Field(description="Events (a batch costs its size).")

    @model_validator(mode="after")
    def _a_full_batch_fits(self) -> AppRateLimits:
        if self.events.burst < EVENT_BATCH_LIMIT:
            raise ValueError(
                f"events.burst ({self.events.burst}) must be at least the largest batch "
                f"({EVENT_BATCH_LIMIT}), or a full batch could never be accepted"
            )
        return self


class AppConfig(_Strict):
    """What one calling app may do."""

    api_key_sha256: list[Annotated[str, Field(pattern=_SHA256_HEX)]] = Field(
        min_length=1, description="SHA-256 (hex) of each API key this app may use; never the key."
    )
    allowed_categories: list[Literal[domain.BANK_CATEGORIES]] = Field(min_length=1)  # type: ignore[valid-type]
    default_k: int = Field(default=5, ge=1, le=50)
    max_k: int = Field(default=20, ge=1, le=50)
    experiment: str | None = Field(default=None, description="Experiment running in this app.")
    rate_limit: AppRateLimits = Field(description="Requests and events this app may send.")

    @model_validator(mode="after")
    def _k_limits(self) -> AppConfig:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        return self


class AppsConfig(_Strict):
    apps: dict[str, AppConfig]

    @field_validator("apps")
    @classmethod
    def _known_apps(cls, apps: dict[str, AppConfig]) -> dict[str, AppConfig]:
        unknown = sorted(set(apps) - set(domain.APPS))
        if unknown:
            raise ValueError(f"unknown app(s) {unknown}; the bank's apps are {list(domain.APPS)}")
        return apps


class Variant(_Strict):
    """One arm: a registered model version (or the priors policy) and its exploration."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    weight: float = Field(gt=0.0, description="Relative share of assigned customers.")
    policy: Literal["model", "segment_priors"] = "model"
    model_name: str | None = Field(default=None, description="Registry model; default: serving's.")
    model_version: int | Literal["serving"] = Field(
        default="serving", description="A registry version, or the app's serving alias."
    )
    exploration: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Per slot, the chance of showing a uniformly drawn eligible item instead "
        "of the top one; makes every item's propensity positive for off-policy evaluation.",
    )


class Experiment(_Strict):
    salt: str = Field(min_length=4, description="Hashed with the customer id; change to reshuffle.")
    holdout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Share of customers served the holdout policy."
    )
    holdout_variant: Variant | None = None
    variants: list[Variant] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if self.holdout > 0 and self.holdout_variant is None:
            raise ValueError("holdout > 0 needs a holdout_variant")
        return self


class ExperimentsConfig(_Strict):
    experiments: dict[str, Experiment] = Field(default_factory=dict)


def read_yaml(path: Path, model: type[_Strict]) -> _Strict:
    """Parse ``path`` into ``model``; errors name the file and the bad field."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        payload = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{path}: {problems}") from error


def load_apps(path: Path) -> AppsConfig:
    config = read_yaml(path, AppsConfig)
    assert isinstance(config, AppsConfig)
    return config


def load_experiments(path: Path, apps: AppsConfig | None = None) -> ExperimentsConfig:
    config = read_yaml(path, ExperimentsConfig)
    assert isinstance(config, ExperimentsConfig)
    if apps is not None:
        for app, app_config in apps.apps.items():
            if app_config.experiment and app_config.experiment not in config.experiments:
                raise ConfigError(
                    f"{path}: app {app!r} runs experiment {app_config.experiment!r}, "
                    f"which is not defined (have {sorted(config.experiments)})"
                )
    return config
