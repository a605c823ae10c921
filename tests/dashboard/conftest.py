"""A real headless browser for the dashboard tests: Debian's chromium, installed on first use."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _find() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; installs Debian's ``chromium`` package when it is missing (as root)."""
    found = _find()
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(
            "chromium is not installed and this user cannot apt-get it: apt-get install chromium"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    result = install()
    if result.returncode != 0:  # stale package lists: refresh once, then try again
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        result = install()
    found = _find()
    if not found:
        pytest.fail(f"could not install chromium: {result.stderr[-2000:]}")
    return found
