"""Which online store the platform uses: Redis when it answers, the embedded SQLite otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.features.store import choose_online_store, feast_redis_connection_string
from persona.settings import PersonaSettings

LIVE_REDIS = "redis://127.0.0.1:6379/0"
#: Port 1 on loopback: nothing listens there, so the connection is refused at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"


def test_auto_uses_redis_when_it_answers(tmp_path: Path) -> None:
    choice = choose_online_store(PersonaSettings(data_dir=tmp_path, redis_url=LIVE_REDIS))
    assert choice.kind == "redis"
    assert "answered" in choice.reason


def test_auto_falls_back_to_sqlite_and_says_why(tmp_path: Path) -> None:
    settings = PersonaSettings(data_dir=tmp_path, redis_url=DEAD_REDIS)
    choice = choose_online_store(settings)
    assert choice.kind == "sqlite"
    assert DEAD_REDIS in choice.reason
    assert choice.location == str(settings.sqlite_online_path)


def test_forced_redis_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    settings = PersonaSettings(data_dir=tmp_path, redis_url=DEAD_REDIS, online_store="redis")
    with pytest.raises(ConnectionError, match="does not answer"):
        choose_online_store(settings)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://:s3cret@cache.internal:6380/2", "cache.internal:6380,db=2,password=s3cret"),
        ("rediss://cache:6379", "cache:6379,db=0,ssl=true"),
    ],
)
def test_redis_url_becomes_feast_connection_string(url: str, expected: str) -> None:
    assert feast_redis_connection_string(url) == expected


def test_unknown_redis_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        feast_redis_connection_string("http://127.0.0.1:6379")
