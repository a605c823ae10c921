"""Errors raised by the loaders. All are ``ValueError``s so the CLI reports them as bad input."""

from __future__ import annotations


class LoaderError(ValueError):
    """A source cannot be mapped to the canonical tables; the message names what and where."""


class MissingSourceError(LoaderError):
    """A source file (or folder) the loader needs does not exist."""


class MissingColumnError(LoaderError):
    """A source file lacks a column the loader (or the user's column mapping) needs."""

    def __init__(self, path: object, columns: list[str], available: list[str]) -> None:
        self.columns = columns
        super().__init__(
            f"{path}: missing column(s) {', '.join(repr(c) for c in columns)}; "
            f"the file has {', '.join(repr(c) for c in available)}"
        )


class PathOutsideRootsError(LoaderError):
    """An input path lies outside the configured data roots (``PERSONA_DATA_ROOTS``)."""
