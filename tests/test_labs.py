"""The labs pipeline proves that grading can fail.

For every master ``labs/NN_*.ipynb`` (chapter labs are picked up automatically):
``otter assign`` into a temporary folder once, then grade (``labs.grade``: each
submission sandboxed, its tests in a trusted process, two workers) a folder
holding the solutions notebook, the untouched student notebook and a copy of the
solutions whose last answer is shifted by one. The solutions must score full
marks, the student notebook zero on every question, the wrong answer exactly its
question's points less. Malformed submissions (not a notebook, broken JSON, a
notebook of another lab, a cell that raises, an endless loop) must give
per-submission failures, never a crashed run. The students'
:func:`utils.labs.grader` is tested offline against a local server. Hostile
submissions and the sandbox are tested in ``test_grading.py``.
"""

from __future__ import annotations

import ast
import csv
import fnmatch
import functools
import inspect
import zipfile
from pathlib import Path, PurePosixPath

import nbformat
import pytest
import yaml

from utils import labs

LABS = labs.lab_names()
CHECK = "grader.check("


# ------------------------------------------------------------ notebook edits
def _perturb(value):
    """A wrong answer of the same kind: numbers and tensors shifted by one, functions wrapped."""
    import numpy as np
    import torch

    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float, complex, np.number, np.ndarray)):
        return value + 1
    if isinstance(value, torch.Tensor):
        return ~value if value.dtype == torch.bool else value + 1
    if isinstance(value, str):
        return value + "?"
    if isinstance(value, (list, tuple)):
        return type(value)(_perturb(v) for v in value)
    if isinstance(value, dict):
        return {k: _perturb(v) for k, v in value.items()}
    if callable(value):
        return lambda *args, **kwargs: _perturb(value(*args, **kwargs))
    return None


def _answer_names(stub: str) -> list[str]:
    """Names a student must fill in: ``x = ...`` assignments and functions whose body is ``...``."""
    names = []
    for node in ast.parse(stub).body:
        if isinstance(node, ast.Assign) and _is_ellipsis(node.value):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.FunctionDef) and any(_is_ellipsis(n) for n in ast.walk(node)):
            names.append(node.name)
    return names


def _is_ellipsis(node: ast.AST) -> bool:
    """Whether ``node`` is the literal ``...``."""
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def _answer_cells(nb: nbformat.NotebookNode, question: str) -> list[int]:
    """Indices of the code cells of ``question``: after the previous check cell, before its own."""
    cells, start = [], 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.startswith(CHECK):
            if cell.source.startswith(f'{CHECK}"{question}")'):
                return [j for j in cells if j >= start]
            start = i + 1
        elif cell.cell_type == "code":
            cells.append(i)
    raise AssertionError(f"no grader.check cell for {question}")


def _python(source: str) -> str:
    """``source`` without IPython magics (lines starting with % or !), for ``ast``."""
    return "\n".join("" if line.lstrip()[:1] in "%!" else line for line in source.splitlines())


def wrong_answer(solutions: Path, student: Path, question: str, target: Path) -> Path:
    """Copy ``solutions`` with every answer of ``question`` replaced by :func:`_perturb` of it."""
    nb, stub = nbformat.read(solutions, 4), nbformat.read(student, 4)
    helper = inspect.getsource(_perturb)
    for i, j in zip(_answer_cells(nb, question), _answer_cells(stub, question), strict=True):
        names = _answer_names(_python(stub.cells[j].source))
        shifts = "".join(f"\n{name} = _perturb({name})" for name in names)
        nb.cells[i].source += f"\n\n{helper}{shifts}\n"
    nbformat.write(nb, target)
    return target


def raising_answer(solutions: Path, question: str, target: Path) -> Path:
    """Copy ``solutions`` whose first answer cell of ``question`` raises before doing anything."""
    nb = nbformat.read(solutions, 4)
    first = _answer_cells(nb, question)[0]
    nb.cells[first].source = 'raise RuntimeError("a bug in the answer")\n' + nb.cells[first].source
    nbformat.write(nb, target)
    return target


def endless_answer(solutions: Path, question: str, target: Path) -> Path:
    """Copy ``solutions`` whose first answer cell of ``question`` never ends."""
    nb = nbformat.read(solutions, 4)
    first = _answer_cells(nb, question)[0]
    # Sleeping, not spinning: the loop never ends but leaves the CPU to others.
    nb.cells[first].source = "import time\nwhile True:\n    time.sleep(0.1)\n" + nb.cells[first].source
    nbformat.write(nb, target)
    return target


# ----------------------------------------------------------------- fixtures
@functools.cache
def _assigned(lab: str, root: Path) -> Path:
    """``otter assign`` of ``lab`` into ``root`` (once per lab and session)."""
    labs.assign(lab, dist=root, run_tests=False)
    return root


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """One build folder for the labs of this module."""
    return tmp_path_factory.mktemp("dist")


def _question_names(lab: str, dist: Path) -> list[str]:
    return list(labs.question_points(lab, dist))


@pytest.fixture(scope="module")
def graded(dist, tmp_path_factory):
    """``{lab: (points, {submission name: Grade}, csv path)}``, graded once per lab."""
    cache = {}

    def grade(lab: str):
        if lab not in cache:
            _assigned(lab, dist)
            points = labs.question_points(lab, dist)
            folder = tmp_path_factory.mktemp(f"submissions_{lab}")
            solutions = dist / lab / "autograder" / f"{lab}.ipynb"
            student = labs.student_notebook(lab, dist)
            (folder / "solutions.ipynb").write_bytes(solutions.read_bytes())
            (folder / "untouched.ipynb").write_bytes(student.read_bytes())
            wrong_answer(solutions, student, list(points)[-1], folder / "wrong_last.ipynb")
            if lab == LABS[0]:
                raising_answer(solutions, list(points)[-1], folder / "raises.ipynb")
            csv_path = folder.parent / f"{lab}_scores.csv"
            grades = labs.grade(lab, folder, csv_path, timeout=240, dist=dist, workers=2)
            cache[lab] = (points, {g.submission: g for g in grades}, csv_path)
        return cache[lab]

    return grade


# -------------------------------------------------------- grading can fail
@pytest.mark.parametrize("lab", LABS)
def test_solutions_score_full_marks(graded, lab):
    points, grades, _ = graded(lab)
    result = grades["solutions.ipynb"]
    assert result.error == ""
    assert result.scores == pytest.approx(points), "the solutions must pass every test"


@pytest.mark.parametrize("lab", LABS)
def test_untouched_student_notebook_scores_zero_on_every_question(graded, lab):
    points, grades, _ = graded(lab)
    result = grades["untouched.ipynb"]
    assert result.error == ""
    assert set(result.scores) == set(points)
    assert result.scores == {q: 0 for q in points}, "a blank answer passed a test"


@pytest.mark.parametrize("lab", LABS)
def test_wrong_answer_loses_exactly_its_questions_points(graded, lab):
    points, grades, _ = graded(lab)
    last = list(points)[-1]
    result = grades["wrong_last.ipynb"]
    assert result.error == ""
    expected = dict(points, **{last: 0})
    assert result.scores == pytest.approx(expected), f"a wrong {last} must fail all {last}'s tests"


@pytest.mark.parametrize("lab", LABS)
def test_scores_csv_has_one_row_per_submission(graded, lab):
    import pandas as pd

    points, _, csv_path = graded(lab)
    table = pd.read_csv(csv_path, keep_default_na=False).set_index("submission")
    assert list(table.columns) == [*points, "total", "possible", "error"]
    assert table.loc["solutions.ipynb", "total"] == pytest.approx(sum(points.values()))
    assert table.loc["untouched.ipynb", "total"] == 0
    assert (table["possible"] == sum(points.values())).all()


def test_autograder_environment_installs_the_course(dist):
    """On Gradescope the autograder's environment must provide ``utils``, as Colab's set-up cell does."""
    _assigned(LABS[0], dist)
    with zipfile.ZipFile(labs.autograder_zip(LABS[0], dist)) as archive:
        environment = yaml.safe_load(archive.read("environment.yml"))
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert labs.PACKAGE_SPEC in pip and any(p.startswith("otter-grader") for p in pip)
    assert labs.PACKAGE_SPEC in labs.master_notebook(LABS[0]).read_text().replace('\\"', '"')


@pytest.mark.parametrize("lab", LABS)
def test_student_notebook_hides_solutions_and_hidden_tests(dist, lab):
    _assigned(lab, dist)
    student = labs.student_notebook(lab, dist)
    text = student.read_text()
    assert "SOLUTION" not in text and "HIDDEN" not in text
    assert f'labs.grader(\\"{lab}\\")' in text, "the set-up cell must make the grader"
    for test in (student.parent / "tests").glob("*.py"):
        assert "hidden=True" not in test.read_text(), f"{test.name} leaks a hidden test"
    with zipfile.ZipFile(dist / "_site" / "labs" / f"{lab}-tests.zip") as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in (student.parent / "tests").glob("*.py"))


def test_malformed_submissions_fail_one_by_one(dist, tmp_path):
    """Not a notebook, broken JSON, another lab's notebook, an endless loop: each its own failure row."""
    lab = LABS[0]
    _assigned(lab, dist)
    points = labs.question_points(lab, dist)
    solutions = dist / lab / "autograder" / f"{lab}.ipynb"
    (tmp_path / "essay.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    (tmp_path / "broken.ipynb").write_text('{"cells": [')
    other = nbformat.read(solutions, 4)
    other.metadata["otter"]["assignment_name"] = "01_other"
    nbformat.write(other, tmp_path / "other_lab.ipynb")
    endless_answer(solutions, list(points)[-1], tmp_path / "loops.ipynb")
    grades = {g.submission: g for g in labs.grade(lab, tmp_path, tmp_path / "s.csv", timeout=15, dist=dist,
                                                  workers=2)}
    assert "not a notebook" in grades["essay.pdf"].error
    assert "not a readable notebook" in grades["broken.ipynb"].error
    assert "'01_other'" in grades["other_lab.ipynb"].error and f"{lab!r}" in grades["other_lab.ipynb"].error
    assert "timed out after 15 s" in grades["loops.ipynb"].error
    assert all(g.total == 0 for g in grades.values())
    with open(tmp_path / "s.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["submission"] for row in rows] == ["broken.ipynb", "essay.pdf", "loops.ipynb", "other_lab.ipynb"]
    assert all(row["error"] == grades[row["submission"]].error for row in rows)


def test_command_line_grades_with_workers_limits_and_feedback(dist, tmp_path, capsys):
    lab = LABS[0]
    _assigned(lab, dist)
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "essay.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    argv = ["grade", lab, str(tmp_path / "subs"), "-o", str(tmp_path / "s.csv"), "-j", "2", "--timeout", "60",
            "--memory-gib", "2", "--feedback", str(tmp_path / "feedback")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(labs, "dist_dir", lambda: dist)
        assert labs.main(argv) == 0
    assert "essay.pdf: 0 / " in capsys.readouterr().out
    assert "not a notebook" in (tmp_path / "s.csv").read_text()
    assert "not graded: not a notebook" in (tmp_path / "feedback" / "essay.pdf.txt").read_text()


def test_a_raising_cell_costs_only_its_question(graded):
    lab = LABS[0]
    points, grades, _ = graded(lab)
    last = list(points)[-1]
    result = grades["raises.ipynb"]
    assert result.error == ""
    assert result.scores == pytest.approx(dict(points, **{last: 0}))


# ------------------------------------------------------ names and messages
def test_unknown_lab_names_are_refused():
    with pytest.raises(ValueError, match="not a lab name"):
        labs.master_notebook("warmup")
    with pytest.raises(ValueError, match="Unknown lab '99_nothing'"):
        labs.master_notebook("99_nothing")


def test_missing_dist_says_to_assign_first(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="run `python -m utils.labs assign` first"):
        labs.grade(LABS[0], tmp_path, dist=tmp_path / "never_built")
    assert labs.main(["grade", "99_nothing", str(tmp_path)]) == 1
    assert "Unknown lab '99_nothing'" in capsys.readouterr().err


def test_site_url_is_the_books_baseurl():
    config = yaml.safe_load((Path(labs.__file__).parents[1] / "_config.yml").read_text())
    assert labs.SITE_URL == config["html"]["baseurl"]
    assert "labs/dist/_site" in config["sphinx"]["config"]["html_extra_path"]


def test_toc_shows_the_student_version_of_every_lab(dist):
    """The Labs part globs the student notebooks; no master or autograder notebook matches."""
    root = Path(labs.__file__).parents[1]
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Labs")
    assert part["chapters"] == [{"glob": "labs/dist/*/student/*"}]
    for lab in LABS:
        _assigned(lab, dist)
    built = [f"labs/dist/{p.relative_to(dist).as_posix()}" for p in dist.rglob("*.ipynb")]
    shown = {p for p in built if fnmatch.fnmatch(p, part["chapters"][0]["glob"] + ".ipynb")}
    assert shown == {f"labs/dist/{lab}/student/{lab}.ipynb" for lab in LABS}
    # myst-nb must not execute them (their blanks fail); it matches PurePosixPath.match-style.
    config = yaml.safe_load((root / "_config.yml").read_text())
    for path in shown:
        absolute = PurePosixPath(root.as_posix()) / path
        assert any(absolute.match(p) for p in config["execute"]["exclude_patterns"]), path


# ------------------------------------------- the students' grader, offline
@pytest.fixture
def site(tmp_path, serve):
    """A local HTTP server publishing ``labs/<lab>-tests.zip`` like the course site."""
    root = tmp_path / "site"
    (root / "labs").mkdir(parents=True)
    with zipfile.ZipFile(root / "labs" / "00_demo-tests.zip", "w") as archive:
        archive.writestr("q1.py", "OK_FORMAT = False\nname = 'q1'\npoints = 1\n")
    with serve(root) as url:
        yield url


def test_grader_downloads_the_public_tests(site, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "0")
    grader = labs.grader("00_demo", site_url=site)
    assert (tmp_path / "00_demo-tests" / "q1.py").is_file()
    assert Path(grader._tests_dir) == Path("00_demo-tests")


def test_grader_prefers_tests_beside_the_notebook(site, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "q1.py").write_text("OK_FORMAT = False\n")
    assert Path(labs.grader("00_demo", site_url=site)._tests_dir) == Path("tests")
    assert not (tmp_path / "00_demo-tests").exists(), "nothing to download"


def test_grader_offline_without_tests_warns_instead_of_failing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_something.py").write_text("def test(): pass\n")  # not otter's
    labs.grader("00_demo")
    assert "python -m utils.labs assign" in capsys.readouterr().out


def test_fetch_reports_a_missing_zip_clearly(site, tmp_path):
    with pytest.raises(RuntimeError, match="Could not fetch the public tests of lab '01_absent'"):
        labs.fetch_tests("01_absent", tmp_path / "t", site_url=site)


def test_answer_names_of_a_stub():
    stub = "x = load()\ny = ...\ndef f(a):\n    ...\n\nf(1)\n"
    assert _answer_names(stub) == ["y", "f"]


def test_release_bundles_each_lab_for_instructors(dist, tmp_path):
    _assigned("00_warmup", dist)
    written = labs.release(tmp_path / "release", ["00_warmup"], dist=dist)
    assert sorted(p.name for p in written) == ["00_warmup-autograder.zip", "00_warmup-student.zip"]
    with zipfile.ZipFile(tmp_path / "release" / "00_warmup-student.zip") as bundle:
        names = bundle.namelist()
    assert "00_warmup.ipynb" in names and any(n.startswith("tests/") and n.endswith(".py") for n in names)
    assert "SOLUTION" not in zipfile.ZipFile(tmp_path / "release" / "00_warmup-student.zip").read(
        "00_warmup.ipynb").decode()
