"""Input paths outside the configured data roots are refused, however they are spelt."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.loaders import (
    ColumnMapping,
    PathOutsideRootsError,
    ensure_within_roots,
    load_amazon_games,
    load_interactions_csv,
)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): an allowed root with a file, and a folder beside it with a file."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "ok.csv").write_text("user,item,ts\n1,a,2024-01-01\n")
    (outside / "secret.csv").write_text("user,item,ts\n1,a,2024-01-01\n")
    return root, outside


def test_path_inside_root_is_returned_resolved(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert (
        ensure_within_roots(root / "sub" / "." / "ok.csv", [root])
        == (root / "sub" / "ok.csv").resolve()
    )
    assert ensure_within_roots(root, [root]) == root.resolve()


def test_dotdot_escape_is_refused_naming_path_and_roots(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    escaping = root / "sub" / ".." / ".." / "outside" / "secret.csv"
    with pytest.raises(PathOutsideRootsError) as caught:
        ensure_within_roots(escaping, [root])
    assert isinstance(caught.value, ValueError)
    assert str(escaping) in str(caught.value)
    assert str(root.resolve()) in str(caught.value)


def test_sibling_with_common_prefix_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    sibling = tmp_path / "data_other"
    root.mkdir()
    sibling.mkdir()
    with pytest.raises(PathOutsideRootsError):
        ensure_within_roots(sibling / "x.csv", [root])


def test_symlink_leaving_the_root_is_refused(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "link.csv").symlink_to(outside / "secret.csv")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathOutsideRootsError):
        ensure_within_roots(root / "link.csv", [root])
    with pytest.raises(PathOutsideRootsError):
        ensure_within_roots(root / "linkdir" / "secret.csv", [root])


def test_symlink_staying_inside_and_symlinked_root_are_allowed(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "alias.csv").symlink_to(root / "sub" / "ok.csv")
    assert ensure_within_roots(root / "alias.csv", [root]) == (root / "sub" / "ok.csv").resolve()
    root_link = root.parent / "root_link"
    root_link.symlink_to(root, target_is_directory=True)
    assert ensure_within_roots(root / "sub" / "ok.csv", [root_link]).name == "ok.csv"


def test_no_roots_refuses_everything(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(PathOutsideRootsError, match="no data roots"):
        ensure_within_roots(root, [])


def test_loaders_check_their_roots(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    mapping = ColumnMapping(user="user", item="item", timestamp="ts")
    with pytest.raises(PathOutsideRootsError):
        load_interactions_csv(
            root / ".." / "outside" / "secret.csv",
            root / "out",
            mapping,
            default_app="rib",
            default_event_type="click",
            roots=[root],
        )
    with pytest.raises(PathOutsideRootsError):
        load_amazon_games(outside, root / "out", roots=[root])
    assert not (root / "out").exists(), "a refused load must write nothing"
