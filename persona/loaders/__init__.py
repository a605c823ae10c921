"""Loaders that map real data sets and users' own files into the canonical tables (``raw/``)."""

from persona.loaders.amazon_games import load_amazon_games
from persona.loaders.csv_interactions import ColumnMapping, load_interactions_csv
from persona.loaders.czech_bank import load_czech_bank
from persona.loaders.errors import (
    LoaderError,
    MissingColumnError,
    MissingSourceError,
    PathOutsideRootsError,
)
from persona.loaders.open_bandit import load_open_bandit
from persona.loaders.paths import ensure_within_roots
from persona.loaders.summary import LoadSummary

__all__ = [
    "ColumnMapping",
    "LoadSummary",
    "LoaderError",
    "MissingColumnError",
    "MissingSourceError",
    "PathOutsideRootsError",
    "ensure_within_roots",
    "load_amazon_games",
    "load_czech_bank",
    "load_interactions_csv",
    "load_open_bandit",
]
