"""The import arrows point down: records and rules never import the engine, the engine never
imports the lifecycle that drives it, and the factories never import the daemon."""

from __future__ import annotations

import ast
import pathlib

import collector

ROOT = pathlib.Path(collector.__file__).parent

#: module -> collector modules it must not import (directly)
FORBIDDEN = {
    "models": {"runner", "daemon", "wiring", "jobs", "store", "writer", "graph"},
    "records": {"runner", "daemon", "wiring", "jobs", "store", "writer", "graph"},
    "plan": {"runner", "daemon", "wiring", "jobs"},
    "stories": {"runner", "daemon", "wiring", "jobs", "scheduler"},
    "scheduler": {"runner", "daemon", "wiring", "jobs", "store", "graph"},
    "parse": {"runner", "daemon", "wiring", "jobs", "store"},
    "jobs": {"runner", "daemon", "wiring", "store", "writer"},
    "store": {"runner", "daemon", "wiring", "jobs", "writer"},
    "writer": {"runner", "daemon", "wiring", "jobs"},
    "runner": {"daemon", "wiring", "cli"},
    "wiring": {"daemon", "cli", "checks"},
    "checks": {"daemon"},
}


def _imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "collector":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("collector."):
            found.add((node.module or "").split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("collector.")
            }
    return found


def test_the_arrows_point_down() -> None:
    wrong = {
        module: sorted(_imports(module) & forbidden)
        for module, forbidden in FORBIDDEN.items()
        if _imports(module) & forbidden
    }
    assert wrong == {}


def test_the_one_shot_pass_has_no_module_of_its_own() -> None:
    assert not (ROOT / "collection.py").exists()
