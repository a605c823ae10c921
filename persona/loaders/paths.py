"""Input paths: loaders only read below the configured data roots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from persona.loaders.errors import MissingSourceError, PathOutsideRootsError


def ensure_within_roots(path: Path, roots: Sequence[Path]) -> Path:
    """Return ``path`` fully resolved (symlinks and ``..`` followed) if it lies under a root.

    Roots are resolved the same way, so a root that is itself a symlink still works. Raises
    :class:`PathOutsideRootsError` (a ``ValueError``) naming the path and the allowed roots, or
    naming the path when it cannot be resolved (a symlink loop).
    """
    try:
        resolved = Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as error:  # a symlink loop (RuntimeError before 3.13)
        raise PathOutsideRootsError(
            f"input path {path} refused: cannot be resolved ({error})"
        ) from error
    resolved_roots = [Path(root).expanduser().resolve() for root in roots]
    if not resolved_roots:
        raise PathOutsideRootsError(f"input path {path} refused: no data roots are configured")
    for root in resolved_roots:
        if resolved.is_relative_to(root):
            return resolved
    allowed = ", ".join(str(root) for root in resolved_roots)
    raise PathOutsideRootsError(
        f"input path {path} (resolves to {resolved}) is outside the allowed data roots: "
        f"{allowed}; add its folder to PERSONA_DATA_ROOTS (a JSON list) to allow it"
    )


def checked_input(path: Path, roots: Sequence[Path] | None) -> Path:
    """Resolve an input path against ``roots`` (default: ``PersonaSettings.data_roots``)."""
    if roots is None:
        from persona.settings import get_settings

        roots = get_settings().data_roots
    return ensure_within_roots(path, roots)


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is an existing file, else :class:`MissingSourceError` saying what it is."""
    if not path.is_file():
        raise MissingSourceError(f"{what}: file {path} does not exist")
    return path


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is an existing folder, else :class:`MissingSourceError`."""
    if not path.is_dir():
        raise MissingSourceError(f"{what}: folder {path} does not exist")
    return path
