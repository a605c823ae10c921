"""The Dockerfile builds the image serving and training share: a structural read, no docker build."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
# What the image cannot run without: the code, the Feast repo, the pins and the Serve config.
REQUIRED_COPIES = {
    "persona",
    "training",
    "serving",
    "feature_repo",
    "pyproject.toml",
    "serve_config.yaml",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    pairs = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def arguments_of(keyword: str) -> list[str]:
    return [args for kw, args in instructions(DOCKERFILE.read_text()) if kw == keyword]


def pinned_torch_version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(r"torch\s*==", d)]
    return pin.split("==", 1)[1].strip()


def copied_sources() -> list[str]:
    """Build-context paths the COPY instructions read (not those copied from another stage)."""
    sources = []
    for args in arguments_of("COPY"):
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        *srcs, _destination = [w for w in words if not w.startswith("--")]
        sources.extend(s.rstrip("/") for s in srcs)
    return sources


def test_base_image_is_python_3_11() -> None:
    (base,) = arguments_of("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?(-[\w.-]+)?", base.split()[0]), base


def test_torch_is_pinned_as_in_pyproject_and_comes_from_the_cpu_index() -> None:
    version = pinned_torch_version()
    runs = " ".join(arguments_of("RUN"))
    pins = set(re.findall(r"torch==([\w.+]+)", runs))
    assert pins == {version}, f"Dockerfile pins torch {pins}, pyproject.toml {version}"
    (index_arg,) = [a for a in arguments_of("ARG") if a.startswith("TORCH_INDEX_URL=")]
    assert index_arg.endswith("download.pytorch.org/whl/cpu")


def test_runs_as_a_non_root_user() -> None:
    users = arguments_of("USER")
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


@pytest.mark.parametrize("source", sorted(REQUIRED_COPIES))
def test_required_paths_are_copied_and_exist(source: str) -> None:
    assert source in copied_sources(), f"the Dockerfile does not COPY {source}"
    assert (REPO_ROOT / source).exists(), f"the Dockerfile copies {source}, missing in the repo"


def test_every_copied_path_exists() -> None:
    missing = [s for s in copied_sources() if not (REPO_ROOT / s).exists()]
    assert not missing, f"COPY sources missing from the repo: {missing}"


def test_serves_on_8000_by_default() -> None:
    assert "8000" in " ".join(arguments_of("EXPOSE")).split()
    (command,) = arguments_of("CMD")
    assert command == '["serve", "run", "serve_config.yaml"]'


def test_build_context_leaves_out_data_and_environments() -> None:
    ignored = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    assert {"data", ".venv", ".git"} <= ignored
