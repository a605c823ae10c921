"""Pseudonyms: stable per key, different across keys, never the raw id; the key file is made
once, privately, and agreed on by processes that start together."""

from __future__ import annotations

import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from persona.pseudonym import Pseudonymiser, key_file_for, load_or_create_key, pseudonymiser_for


def test_pseudonyms_are_stable_keyed_and_do_not_show_the_id() -> None:
    a, b = Pseudonymiser(b"a" * 32), Pseudonymiser(b"b" * 32)
    assert a(12345) == a(12345) == a("12345")
    assert a(12345) != b(12345) and a(12345) != a(12346)
    assert "12345" not in a(12345) and a(12345).startswith("c_") and len(a(12345)) == 18
    assert "a" * 16 not in repr(a)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymiser(b"short")


def test_the_key_file_is_private_and_reused(tmp_path: Path) -> None:
    first = pseudonymiser_for(tmp_path)
    path = key_file_for(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pseudonymiser_for(tmp_path)(7) == first(7)
    assert pseudonymiser_for(tmp_path, key_hex="ab" * 16)(7) != first(7)
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    path = key_file_for(tmp_path)
    with ProcessPoolExecutor(max_workers=4) as pool:
        keys = list(pool.map(load_or_create_key, [path] * 16))
    assert len(set(keys)) == 1 and len(keys[0]) == 32


def test_a_bad_key_is_named(tmp_path: Path) -> None:
    path = key_file_for(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("not hex")
    with pytest.raises(ValueError, match="not hex"):
        load_or_create_key(path)
    with pytest.raises(ValueError, match="PERSONA_PSEUDONYM_KEY"):
        pseudonymiser_for(tmp_path, key_hex="zz")
