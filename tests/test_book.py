"""The book as a whole: table of contents, launch buttons, Colab install cells,
citations, stripped notebooks, and the README commands that CI runs."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))
LECTURE_PAPERS = [
    "minsky1969perceptrons", "rumelhart1986learning", "blum1989theory", "niyogi2008finding",
    "lloyd2016quantum", "huang2018topological", "donahue2014decaf", "razavian2014cnn",
    "yosinski2015understanding", "yosinski2014transferable", "simonyan2014deep", "zeiler2014visualizing",
    "springenberg2015striving", "mordvintsev2015inceptionism", "vandermaaten2008visualizing",
    "gatys2015texture", "gatys2016image", "mahendran2015understanding", "johnson2016perceptual",
    "geirhos2019imagenet", "goodfellow2015explaining", "madry2018towards", "szegedy2014intriguing",
]


def _toc_files(node=TOC):
    """Every toc entry; a glob stands for what it matches (labs: their masters' student paths)."""
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        if "glob" in node:
            assert node["glob"] == "labs/dist/*/student/*", f"unexpected glob {node['glob']}"
            for master in sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb")):
                yield f"labs/dist/{master.stem}/student/{master.stem}"
        for value in node.values():
            yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def _source_of(entry: str) -> Path:
    """The committed file behind a toc entry (a student lab comes from its master)."""
    match = re.fullmatch(r"labs/dist/(\w+)/student/\1", entry)
    if match:
        return ROOT / "labs" / f"{match.group(1)}.ipynb"
    candidates = [ROOT / f"{entry}{ext}" for ext in (".ipynb", ".md")]
    return next((c for c in candidates if c.exists()), candidates[0])


def _cells(path: Path):
    return json.loads(path.read_text())["cells"]


def test_every_toc_entry_has_a_source():
    missing = [e for e in [TOC["root"], *_toc_files()] if not _source_of(e).exists()]
    assert not missing, f"toc entries without a file: {missing}"


def test_every_chapter_and_lab_is_in_the_toc():
    listed = set(_toc_files())
    for nb in NOTEBOOKS:
        rel = nb.relative_to(ROOT).with_suffix("").as_posix()
        if rel.startswith("labs/"):
            rel = f"labs/dist/{nb.stem}/student/{nb.stem}"
        assert rel in listed, f"{nb.name} is not in _toc.yml"


def test_site_builds_only_toc_files_and_raises_on_errors():
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["execute"]["execute_notebooks"] == "cache"
    assert CONFIG["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert CONFIG["bibtex_bibfiles"] == ["references.bib"]


def test_launch_buttons_point_at_the_repository():
    repo = CONFIG["repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo["url"]) and repo["branch"] == "main"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["launch_buttons"]["binderhub_url"] == "https://mybinder.org"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_install_cell_matches_the_repository(path):
    """The first code cell installs the course from _config.yml's repository, on Colab only."""
    url, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    first = next("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert '"google.colab" in sys.modules' in first
    installs = re.findall(r"git\+(\S+?)@(\w+)\"", first)
    assert installs == [(url, branch)], f"{path.name}: install line {installs} != {url}@{branch}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    dirty = [i for i, c in enumerate(_cells(path))
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them"


def _bib_keys():
    return set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(), re.M))


def test_bibliography_holds_every_lecture_paper():
    missing = set(LECTURE_PAPERS) - _bib_keys()
    assert not missing, f"references.bib lacks {sorted(missing)}"


def test_every_citation_resolves():
    keys = _bib_keys()
    texts = [(ROOT / "intro.md").read_text()]
    texts += ["".join(c["source"]) for nb in NOTEBOOKS for c in _cells(nb) if c["cell_type"] == "markdown"]
    cited = {k.strip() for t in texts for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", t)
             for k in group.split(",")}
    assert cited, "no citations found"
    assert not cited - keys, f"unknown citation keys: {sorted(cited - keys)}"


def _readme_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them():
    setup, test = _readme_commands()
    assert "pip install -r requirements.txt" in setup and "jupyter-book build ." in setup
    assert test == "pytest"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert setup in ci and test in ci
    assert "jupyter-book build . -W -n --keep-going" in ci


def test_requirements_pin_exactly_and_metadata_stays_loose():
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line and not line.startswith(("#", "-e"))]
    assert all(re.fullmatch(r"[\w.-]+==[\w.+-]+", p) for p in pins), pins
    assert (ROOT / "requirements.txt").read_text().rstrip().endswith("-e .")
    metadata = (ROOT / "pyproject.toml").read_text()
    for name in ("torch", "torchvision", "matplotlib"):
        assert re.search(rf'"{name}>=[\d.]+"', metadata), f"{name} needs a loose lower bound"
    assert "==" not in metadata.split("dependencies", 1)[1].split("]", 1)[0]
