"""Colab and Binder readiness: every import the notebooks make is installed by
both requirement files, and no notebook depends on the repository being its
working directory (paths go through `utils`)."""

import ast
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))
REQUIREMENT_FILES = [ROOT / "requirements.txt", ROOT / "binder" / "requirements.txt"]


def _code(path: Path, hidden_tests: bool = True) -> str:
    """A notebook's code; ``hidden_tests=False`` leaves out labs' hidden tests,
    which only the autograder runs (in the full course environment)."""
    cells = json.loads(path.read_text())["cells"]
    lines = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    if not hidden_tests:
        lines = [src for src in lines if not src.lstrip().startswith("# HIDDEN")]
    # IPython magics and shell escapes are not Python: blank them out.
    return "\n".join(re.sub(r"^(\s*)[%!].*$", r"\1pass", src, flags=re.M) for src in lines)


def _imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith(("-", "--")):
            names.add(_normal(re.split(r"[=<>!~\[ ;]", line)[0]))
    return names


def _with_dependencies(names: set[str]) -> set[str]:
    """Close a set of distributions under their (installed) requirements."""
    todo, seen = list(names), set(names)
    while todo:
        try:
            requires = metadata.requires(todo.pop()) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            dep = _normal(re.split(r"[=<>!~\[ ;(]", req)[0])
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _third_party_distributions(hidden_tests: bool) -> dict[str, set[str]]:
    """Top-level module imported by a notebook -> distributions that provide it."""
    provided = metadata.packages_distributions()
    imported = (_imports(_code(nb, hidden_tests)) for nb in NOTEBOOKS)
    modules = set().union(*imported) - set(sys.stdlib_module_names)
    modules.discard("utils")  # the course package itself, installed by `-e .` / postBuild
    return {m: {_normal(d) for d in provided.get(m, [])} for m in sorted(modules)}


@pytest.mark.parametrize("requirements", REQUIREMENT_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_notebook_import_is_installed(requirements):
    installed = _with_dependencies(_listed(requirements) | _listed_package_dependencies())
    # Students (Binder) never run the hidden tests; the grading environment is requirements.txt.
    students_only = requirements.parent.name == "binder"
    needed = _third_party_distributions(hidden_tests=not students_only)
    missing = {m: d for m, d in needed.items() if not d & installed}
    assert not missing, f"{requirements.name} does not install what notebooks import: {missing}"


def _listed_package_dependencies() -> set[str]:
    """The course package's own dependencies (pyproject.toml), which `-e .` installs."""
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    return {_normal(re.split(r"[=<>!~\[ ;]", dep)[0]) for dep in re.findall(r'"([^"]+)"', block)}


def test_binder_installs_the_course_package():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "set -e" in post_build and re.search(r"pip install .*-e \.", post_build)
    assert "download.pytorch.org/whl/cpu" in (ROOT / "binder" / "requirements.txt").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_do_not_depend_on_the_working_directory(path):
    source = _code(path)
    assert not re.search(r"os\.chdir|sys\.path\.(insert|append)", source), "changes the import path"
    relative = re.findall(r"""["'](\.\./[^"']*|(?:chapters|labs|utils|tests)/[^"']*)["']""", source)
    assert not relative, f"{path.name} reads repository paths {relative}; go through utils instead"
