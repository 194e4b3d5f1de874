"""The package's layout as the README describes it: a small shared core below one module per
chapter; imports only run downwards, with no cycles, and no chapter imports another."""

import ast
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "utils"
CHAPTERS = {"locality", "topology", "transfer", "visualize", "style", "adversarial"}
# What each shared module may import from the package (its layer and the ones below it).
SHARED = {
    "config": set(),
    "plotting": set(),
    "widgets": set(),
    "assets": {"config", "plotting", "widgets"},
    "core": {"config"},
    "models": {"assets", "config", "core"},
}
TOOLS = {"labs", "grading", "grading_sandbox", "grading_wire", "report"}  # instructors' and maintainers' tools


def _package_imports(path: Path) -> set[str]:
    """Names of the utils modules that ``path`` imports (``from . import x``, ``from .x import``, ``utils.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("utils"):
            found |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("utils.")}
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _package_imports(p) for p in UTILS.glob("*.py") if p.stem != "__init__"}


def test_every_module_has_a_place_in_the_layout():
    assert set(_graph()) == set(SHARED) | CHAPTERS | TOOLS


@pytest.mark.parametrize("module", sorted(SHARED))
def test_shared_modules_import_only_downwards(module):
    assert _graph()[module] <= SHARED[module]


@pytest.mark.parametrize("module", sorted(CHAPTERS))
def test_a_chapter_imports_the_shared_core_and_no_other_chapter(module):
    assert _graph()[module] <= set(SHARED)


def test_the_tools_import_no_chapter_module():
    graph = _graph()
    assert all(not (graph[tool] & CHAPTERS) for tool in TOOLS)


def test_there_are_no_import_cycles():
    graph = _graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
