"""Typed configuration. Every value can be set with an environment variable ``PERSONA_<NAME>``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class PersonaSettings(BaseSettings):
    """Settings shared by the CLI, the feature repo, training and serving."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="forbid")

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data" / "demo",
        description="Data directory: raw/, clean/, quarantine/, features/ live under it.",
    )
    feature_repo: Path = Field(
        default=PROJECT_ROOT / "feature_repo", description="The Feast repository folder."
    )
    feast_project: str = Field(default="persona", pattern=r"^[a-z][a-z0-9_]*$")
    online_store: Literal["auto", "redis", "sqlite"] = Field(
        default="auto",
        description="auto = Redis when PERSONA_REDIS_URL answers, else embedded SQLite.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0")
    shared_data_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "data",
        description="Read-only real data sets (amazon_games, czech_bank, open_bandit).",
    )
    data_roots: list[Path] = Field(
        default_factory=lambda: [PROJECT_ROOT.parent / "shared" / "data", Path.cwd()],
        description="Loaders refuse input paths outside these folders.",
    )

    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Hex key of the customer-id pseudonyms in logs and alerts (default: a key "
        "file created under <data_dir>/secrets/).",
    )

    @property
    def feast_registry_path(self) -> Path:
        return self.data_dir / "feast" / "registry.db"

    @property
    def sqlite_online_path(self) -> Path:
        return self.data_dir / "feast" / "online_store.db"


@lru_cache(maxsize=1)
def get_settings() -> PersonaSettings:
    """Settings read once per process from the environment."""
    return PersonaSettings()
