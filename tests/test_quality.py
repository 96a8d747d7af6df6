"""The code stays ruff clean and ``mypy --strict`` clean, and its layout stays as designed: a
pure core, an application layer that knows no adapter, SQL only in storage, no package cycles
(function-level imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    pytest.importorskip("ruff")
    result = _run(sys.executable, "-m", "ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_whole_package() -> None:
    pytest.importorskip("mypy")
    result = _run(sys.executable, "-m", "mypy", "--strict", "src/drossel")
    assert result.returncode == 0, result.stdout + result.stderr


def _imports() -> dict[str, set[tuple[str, str]]]:
    """Top-level unit (package or module under drossel) -> units it imports, with the file;
    every import statement counts, also those inside functions, and module names handed to
    ``importlib.import_module``."""
    units: dict[str, set[tuple[str, str]]] = {}

    def unit(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else "drossel"

    src = ROOT / "src"
    paths = list((src / "drossel").rglob("*.py"))
    modules = {
        ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__") for p in paths
    }
    for path in paths:
        module = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        here = unit(module)
        text = path.read_text()
        # importlib.import_module("drossel.x.y"): a module name as a string counts as an import
        dynamic = "import_module" in text
        for node in ast.walk(ast.parse(text)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.level == 0, f"{path.name}: relative import (not checked for cycles)"
                names = [node.module]
            elif dynamic and isinstance(node, ast.Constant) and node.value in modules:
                names = [str(node.value)]
            for name in names:
                if name.startswith("drossel.") and unit(name) != here:
                    units.setdefault(here, set()).add((unit(name), path.name))
    return units


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every edge a -> b of ``graph`` from which a path leads back to a."""

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    return sorted((a, b) for a, bs in graph.items() for b in bs if reaches(b, a))


def test_no_package_cycles() -> None:
    graph = {k: {d for d, _ in v} for k, v in _imports().items()}
    cycles = _cycles(graph)
    assert cycles == [], cycles


def test_no_module_cycles() -> None:
    """Not even two modules of one package import each other (directly or round about), also
    through imports inside functions: a shared name lives in a module both can import."""
    src = ROOT / "src"
    paths = list((src / "drossel").rglob("*.py"))

    def name(path: Path) -> str:
        return ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")

    modules = {name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        text = path.read_text()
        wanted: set[str] = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                wanted |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                wanted |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif "import_module" in text and isinstance(node, ast.Constant):
                wanted.add(str(node.value))
        graph[name(path)] = (wanted & modules) - {name(path)}
    cycles = _cycles(graph)
    assert cycles == [], cycles


def test_layers_point_inwards() -> None:
    """The core imports nothing else of drossel; the application layer no adapter."""
    imports = _imports()
    assert {d for d, _ in imports.get("core", set())} <= {"data"}  # packaged data only
    adapters = {"storage", "milter", "gateway", "web", "notify", "cli", "serve", "demo", "runtime"}
    wrong = sorted((d, f) for d, f in imports.get("app", set()) if d in adapters)
    assert wrong == [], wrong


def test_sql_lives_in_storage() -> None:
    """Outside ``storage/`` nobody builds or runs SQL: no query constructors or tables from
    SQLAlchemy, no schema, no ``.execute``/``.begin``/``.connect`` on an engine."""
    constructs = {"select", "insert", "update", "delete", "text", "Table", "func", "MetaData"}
    base = ROOT / "src" / "drossel"
    for path in base.rglob("*.py"):
        if "storage" in path.relative_to(base).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(base)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                assert not {a.name for a in node.names} & constructs, where
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names]
                assert not any("drossel.storage.schema" in n for n in names), where
            if isinstance(node, ast.Attribute) and node.attr in {"execute", "connect", "begin"}:
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else ""
                assert name != "engine", where


def test_core_does_no_io() -> None:
    """The core is pure: no files, sockets, databases or clocks."""
    forbidden = (
        "import socket",
        "import sqlalchemy",
        "open(",
        "datetime.now",
        "time.time",
        "import asyncio",
        "from drossel.storage",
        "from drossel.app",
        "Path(",
    )
    for path in (ROOT / "src" / "drossel" / "core").glob("*.py"):
        text = path.read_text()
        for needle in forbidden:
            assert needle not in text, f"{path.name} uses {needle!r}"
