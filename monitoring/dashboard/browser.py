"""Load a page in headless chromium: the DOM after scripts ran, console messages, a screenshot."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)$")
_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0")


@dataclass(frozen=True)
class PageLoad:
    dom: str
    console: list[str]  # every console message and uncaught error the page produced


def load_page(chromium: str, page: Path, timeout_s: float = 120.0) -> PageLoad:
    """The page's DOM once its scripts ran, and what it wrote to the console."""
    run = subprocess.run(
        [chromium, *_FLAGS, "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    console = [m.group(1) for line in run.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return PageLoad(run.stdout, console)


def screenshot(chromium: str, page: Path, out: Path, width: int = 1400, height: int = 5200) -> Path:
    """A PNG of the page as a person would see it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            chromium,
            *_FLAGS,
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",
            f"--screenshot={out.resolve()}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out
