"""Models may learn preferences only from logged behaviour: no module under ``training/`` or
``serving/`` may import the simulator's hidden ground truth, directly or through other modules.

Two independent checks:

* static: parse every ``.py`` with :mod:`ast`, follow imports of project modules recursively
  (including package ``__init__`` files that an import runs), and look for
  ``persona.simulator.ground_truth`` (also a module name passed as a string to a call, as ``importlib.import_module`` takes it);
* dynamic: import every module of the packages in a fresh interpreter and look in
  ``sys.modules``.

Both are shown to catch an import planted in a throw-away package.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import pytest

FORBIDDEN = "persona.simulator.ground_truth"
REPO_ROOT = Path(__file__).resolve().parents[2]
GUARDED_PACKAGES = ("training", "serving", "segmentation", "feature_repo")


# -- static check ------------------------------------------------------------------------------


def _module_file(name: str, roots: list[Path]) -> Path | None:
    """The source file of project module ``name`` under ``roots`` (None: not a project module)."""
    rel = Path(*name.split("."))
    for root in roots:
        package = root / rel / "__init__.py"
        if package.is_file():
            return package
        module = (root / rel).with_suffix(".py")
        if module.is_file():
            return module
    return None


def _with_parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imports_of(path: Path, module: str) -> set[str]:
    """Every module name an import statement in ``path`` may load (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.update(_with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.update(_with_parents(base))
            # ``from pkg import name`` may import the submodule pkg.name.
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call):
            # importlib.import_module("...") / __import__("..."): a module name as a string
            # argument of any call counts (docstrings and comments do not).
            for arg in node.args:
                if (
                    isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and arg.value.startswith("persona.simulator")
                ):
                    names.update(_with_parents(arg.value))
    return names


def _package_modules(package: str, roots: list[Path]) -> list[str]:
    init = _module_file(package, roots)
    if init is None:
        raise FileNotFoundError(f"package {package!r} not found under {roots}")
    folder = init.parent
    modules = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules.append(".".join(parts))
    return modules


def static_violations(packages: tuple[str, ...], roots: list[Path]) -> dict[str, list[str]]:
    """For each module of ``packages`` that reaches FORBIDDEN, the import chain that does."""
    violations: dict[str, list[str]] = {}
    imports_cache: dict[str, set[str]] = {}

    def imports(name: str) -> set[str]:
        if name not in imports_cache:
            path = _module_file(name, roots)
            imports_cache[name] = set() if path is None else _imports_of(path, name)
        return imports_cache[name]

    for package in packages:
        for start in _package_modules(package, roots):
            parent: dict[str, str | None] = {name: None for name in _with_parents(start)}
            queue = deque(parent)
            while queue:
                current = queue.popleft()
                if current == FORBIDDEN:
                    chain = [current]
                    while (previous := parent[chain[-1]]) is not None:
                        chain.append(previous)
                    violations[start] = chain[::-1]
                    break
                for name in sorted(imports(current)):
                    if name not in parent and (
                        name == FORBIDDEN or _module_file(name, roots) is not None
                    ):
                        parent[name] = current
                        queue.append(name)
    return violations


# -- dynamic check -----------------------------------------------------------------------------

_IMPORT_ALL = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, traceback
    forbidden, packages = sys.argv[1], sys.argv[2:]
    first_loader, errors, modules = None, {}, []
    for package in packages:
        names = [package]
        pkg = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".",
                                                       onerror=lambda name: None)]
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:
                errors[name] = traceback.format_exc(limit=3)
            modules.append(name)
            if first_loader is None and forbidden in sys.modules:
                first_loader = name
    print(json.dumps({"loaded": forbidden in sys.modules, "first_loader": first_loader,
                      "errors": errors, "modules": modules}))
    """
)


def dynamic_check(packages: tuple[str, ...], roots: list[Path]) -> dict[str, object]:
    """Import every module of ``packages`` in a fresh interpreter; report what got loaded."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(r) for r in roots)}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, FORBIDDEN, *packages],
        cwd=roots[0],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the real packages -------------------------------------------------------------------------


def test_training_and_serving_never_reach_ground_truth_statically() -> None:
    violations = static_violations(GUARDED_PACKAGES, [REPO_ROOT])
    assert violations == {}, "\n".join(" -> ".join(c) for c in violations.values())


def test_training_and_serving_never_load_ground_truth() -> None:
    report = dynamic_check(GUARDED_PACKAGES, [REPO_ROOT])
    assert set(GUARDED_PACKAGES) <= set(report["modules"])  # type: ignore[arg-type]
    assert report["errors"] == {}, report["errors"]
    assert report["loaded"] is False, f"{report['first_loader']} loads {FORBIDDEN}"


# -- the checkers catch a planted import ---------------------------------------------------------


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A throw-away project: ``leaky`` imports ground truth directly, through a helper, by a
    relative import of a package that re-exports it, and via importlib; ``clean`` does not."""
    files = {
        "leaky/__init__.py": "",
        "leaky/direct.py": "from persona.simulator import ground_truth\n",
        "leaky/helper.py": "def f():\n    import persona.simulator.ground_truth as gt\n    return gt\n",
        "leaky/indirect.py": "from . import helper\nhelper.f()\n",
        "leaky/via_package.py": "from persona.simulator import SimulationConfig\n",
        "leaky/sneaky.py": (
            "import importlib\nimportlib.import_module('persona.simulator.ground_truth')\n"
        ),
        "clean/__init__.py": "",
        "clean/model.py": "import numpy\nfrom persona import schemas\nfrom . import util\n",
        "clean/util.py": "from persona.layout import DataLayout\n",
    }
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_static_check_catches_planted_imports(planted: Path) -> None:
    violations = static_violations(("leaky", "clean"), [planted, REPO_ROOT])
    assert set(violations) == {
        "leaky.direct",
        "leaky.helper",
        "leaky.indirect",
        "leaky.via_package",
        "leaky.sneaky",
    }
    assert violations["leaky.indirect"] == ["leaky.indirect", "leaky.helper", FORBIDDEN]
    assert violations["leaky.via_package"][-1] == FORBIDDEN
    assert "persona.simulator" in violations["leaky.via_package"]


def test_dynamic_check_catches_planted_imports(planted: Path) -> None:
    assert dynamic_check(("clean",), [planted, REPO_ROOT])["loaded"] is False
    report = dynamic_check(("leaky",), [planted, REPO_ROOT])
    assert report["loaded"] is True
    assert report["first_loader"] == "leaky.direct"
