"""Graded labs: student notebooks, autograder zips, the students' grader, grading.

Labs are otter-grader master notebooks ``labs/NN_name.ipynb`` (solutions and
hidden tests inside). This module turns them into what students and
instructors use, and is also the students' entry point to the public tests.

For instructors, from the repository root::

    python -m utils.labs assign                      # every lab, into labs/dist/
    python -m utils.labs assign 00_warmup            # one lab
    python -m utils.labs grade 00_warmup submissions/ -o scores.csv
    python -m utils.labs release _build/labs-release   # one folder to hand out

``assign`` writes, per lab, ``labs/dist/<lab>/student/<lab>.ipynb`` with its
public ``tests/`` folder (what the book shows), the autograder zip
``labs/dist/<lab>/autograder/<lab>-autograder_<timestamp>.zip`` and the public
tests zip ``labs/dist/_site/labs/<lab>-tests.zip`` that the book build
publishes at ``{SITE_URL}labs/<lab>-tests.zip`` (Sphinx ``html_extra_path``).
``grade`` grades every file of a folder, several at once, each in a sandbox,
with the tests in a separate trusted process (:mod:`utils.grading`), and writes
one CSV row of per-question scores per submission; a submission that cannot be
graded gets zeros and its reason in the ``error`` column instead of stopping
the run.

For students, the lab's first cells call :func:`grader`, which finds the
lab's public tests (beside the notebook, in a checkout's ``labs/dist``, or
downloaded from the course site on Colab) and returns the ``otter.Notebook``
whose ``grader.check("q1")`` runs them. For lab authors, :func:`refusing`
makes the course's own implementation of what a question asks for
unavailable to the code a test calls.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import grading
from .grading import Grade

__all__ = [
    "SITE_URL",
    "PACKAGE_SPEC",
    "lab_names",
    "master_notebook",
    "student_notebook",
    "autograder_zip",
    "tests_zip_url",
    "grader",
    "fetch_tests",
    "assign",
    "grade",
    "Grade",
    "write_csv",
    "write_feedback",
    "RefusedCall",
    "refusing",
    "release",
]

#: The published course site; equals ``html.baseurl`` in ``_config.yml``.
SITE_URL = "https://cnn-topics.github.io/cnn-topics/"
#: What a lab's Colab set-up cell and the autograder's environment (Gradescope) install.
PACKAGE_SPEC = "cnn-topics @ git+https://github.com/cnn-topics/cnn-topics@main"

_REPO = Path(__file__).resolve().parent.parent
_LAB_NAME = re.compile(r"^\d\d_[A-Za-z0-9_]+$")
_ASSIGN_ADVICE = "run `python -m utils.labs assign` first"


# --------------------------------------------------------------------- paths
def labs_dir() -> Path:
    """The folder of the master notebooks, ``<repository>/labs``."""
    return _REPO / "labs"


def dist_dir() -> Path:
    """The git-ignored build folder of the labs, ``labs/dist``."""
    return labs_dir() / "dist"


def site_dir() -> Path:
    """Files the book build publishes at the site's root (``html_extra_path``)."""
    return dist_dir() / "_site"


def lab_names() -> list[str]:
    """Names of all labs, from the masters ``labs/NN_name.ipynb``, sorted.

    Examples
    --------
    >>> "00_warmup" in lab_names()
    True
    """
    return sorted(p.stem for p in labs_dir().glob("[0-9][0-9]_*.ipynb"))


def _check_lab_name(lab: str) -> str:
    """Return ``lab`` if it is a well-formed lab name, else raise ``ValueError``."""
    if not isinstance(lab, str) or not _LAB_NAME.match(lab):
        raise ValueError(
            f"{lab!r} is not a lab name; lab names look like '00_warmup' (two digits, an "
            "underscore, a name), as in labs/00_warmup.ipynb."
        )
    return lab


def master_notebook(lab: str) -> Path:
    """The master notebook ``labs/<lab>.ipynb``; ``ValueError`` for an unknown lab."""
    path = labs_dir() / f"{_check_lab_name(lab)}.ipynb"
    if not path.is_file():
        raise ValueError(f"Unknown lab {lab!r}; the labs are {lab_names()}.")
    return path


def student_notebook(lab: str, dist: Path | None = None) -> Path:
    """The student notebook ``<dist>/<lab>/student/<lab>.ipynb`` (default dist: ``labs/dist``)."""
    return Path(dist or dist_dir()) / _check_lab_name(lab) / "student" / f"{lab}.ipynb"


def autograder_zip(lab: str, dist: Path | None = None) -> Path:
    """The newest autograder zip of ``lab``; ``FileNotFoundError`` if it was never built.

    Examples
    --------
    >>> autograder_zip("00_warmup").name  # doctest: +SKIP
    '00_warmup-autograder_2026_01_01T00_00_00_000000.zip'
    """
    folder = Path(dist or dist_dir()) / _check_lab_name(lab) / "autograder"
    zips = sorted(folder.glob(f"{lab}-autograder_*.zip"))
    if not zips:
        raise FileNotFoundError(f"No autograder zip for lab {lab!r} in {folder}; {_ASSIGN_ADVICE}.")
    return zips[-1]


def tests_zip_url(lab: str, site_url: str = SITE_URL) -> str:
    """Address of the published zip of ``lab``'s public tests."""
    return f"{site_url.rstrip('/')}/labs/{_check_lab_name(lab)}-tests.zip"


# ------------------------------------------------------------ student grader
def _on_colab() -> bool:
    """Whether the notebook runs on Google Colab."""
    return "google.colab" in sys.modules


def _has_tests(folder: Path) -> bool:
    """Whether ``folder`` holds otter test files (``*.py`` defining ``OK_FORMAT``)."""
    return folder.is_dir() and any("OK_FORMAT" in p.read_text() for p in folder.glob("*.py"))


def fetch_tests(lab: str, dest: Path, site_url: str = SITE_URL, timeout: float = 30) -> Path:
    """Download and unpack ``lab``'s public tests zip from the course site into ``dest``.

    Parameters
    ----------
    lab : str
        Lab name, e.g. ``"00_warmup"``.
    dest : Path
        Folder to create (or refresh) with the test files ``q1.py``, ``q2.py``, ...
    site_url : str
        Root address of the published course site.
    timeout : float
        Seconds to wait for the server.

    Returns
    -------
    Path
        ``dest``.
    """
    url = tests_zip_url(lab, site_url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except (OSError, zipfile.BadZipFile) as err:
        raise RuntimeError(
            f"Could not fetch the public tests of lab {lab!r} from {url} ({err}). Check the "
            "internet connection, or upload the lab's tests folder next to this notebook."
        ) from err
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in archive.namelist():
        if Path(name).name != name or not name.endswith(".py"):
            raise RuntimeError(f"Unexpected file {name!r} in {url}; expected only test files.")
        (dest / name).write_bytes(archive.read(name))
    return dest


def _local_tests(lab: str) -> Path | None:
    """A folder of ``lab``'s public tests on this machine, if there is one."""
    for folder in (Path("tests"), student_notebook(lab).parent / "tests", Path(f"{lab}-tests")):
        if _has_tests(folder):
            return folder
    return None


def grader(lab: str, site_url: str = SITE_URL):
    """The ``otter.Notebook`` that checks ``lab``'s public tests: ``grader.check("q1")``.

    The tests are looked up, in order: in ``tests/`` beside the notebook (the
    student notebook's folder), in a checkout's ``labs/dist/<lab>/student/tests``
    (the master run from a clone), in ``<lab>-tests/`` (downloaded before);
    otherwise they are downloaded from the course site into ``<lab>-tests/``
    (Colab). Offline and without tests (the master before
    ``python -m utils.labs assign``) a notice says so and checks will fail.
    While otter grades a submission, this returns otter's grading notebook.

    Parameters
    ----------
    lab : str
        Lab name, e.g. ``"00_warmup"``.
    site_url : str
        Root address of the published course site (tests zips at ``labs/<lab>-tests.zip``).

    Returns
    -------
    otter.Notebook

    Examples
    --------
    >>> grader = grader("00_warmup")  # doctest: +SKIP
    >>> grader.check("q1")            # doctest: +SKIP
    """
    _check_lab_name(lab)
    if os.environ.get("CNN_TOPICS_GRADING") == "1":
        return _SilentGrader()  # in the grading sandbox: the tests run elsewhere
    import otter

    from . import config  # imports torch: only where needed

    if otter.Notebook._grading_mode:
        return otter.Notebook()
    folder = _local_tests(lab)
    if folder is None and (_on_colab() or not config.offline()):
        try:
            folder = fetch_tests(lab, Path(f"{lab}-tests"), site_url)
        except RuntimeError as err:
            if _on_colab():
                raise
            print(f"NOTICE - {err}")
    if folder is None:
        print(f"NOTICE - the public tests of lab {lab!r} are not available here; {_ASSIGN_ADVICE}.")
        folder = Path("tests")
    return otter.Notebook(tests_dir=str(folder))


class _SilentGrader:
    """The grader of a notebook that is being graded: checks do nothing (the verdicts come later)."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


# ------------------------------------------------------------ refused calls
class RefusedCall(RuntimeError):
    """A call to a course function that the current test (or graded lab) does not allow."""


def _course_function(name: str):
    """The function ``utils.<module>.<name>`` (``Class.method`` allowed), unwrapped, checked."""
    import importlib
    import inspect

    module, qualname = grading._split_refused(name)
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    target = inspect.unwrap(target)
    if not hasattr(target, "__code__") or target.__code__.co_freevars:
        raise TypeError(f"refusing({name!r}): only plain module-level functions and methods can be refused")
    return target


def _refusal_code(name: str):
    """A code object that raises :class:`RefusedCall` for ``name``, for any arguments, in any module."""
    message = (f"{name} is the course's own implementation of what this question asks you to write; "
               "write your own (the tests do not let your code call it).")
    scope: dict = {}
    exec(f"def refused(*args, **kwargs):\n    raise __import__('utils.labs').labs.RefusedCall({message!r})",
         scope)
    return scope["refused"].__code__


@contextmanager
def refusing(*names: str) -> Iterator[None]:
    """Within the block, the named course functions raise :class:`RefusedCall` when called.

    Hidden tests use it around the calls of a student's function, so that an
    answer that only calls the course's implementation fails::

        with labs.refusing("utils.adversarial.pgd"):
            x_adv = pgd_attack(model, x, y, eps=0.03)

    Here the function's code is swapped out, so every way of reaching it (an
    alias, a stored reference, another course function calling it) is refused.
    When a submission is graded, the grader also reads these names from the
    tests (they must be string literals) and removes the functions from the
    course package the sandbox sees, for the whole run: a value computed with
    them in the notebook fails too.

    Parameters
    ----------
    *names : str
        Dotted names of course functions, e.g. ``"utils.models.num_parameters"``.

    Examples
    --------
    >>> import torch
    >>> from utils import models
    >>> with refusing("utils.models.num_parameters"):
    ...     models.num_parameters(torch.nn.Linear(3, 2))
    Traceback (most recent call last):
    ...
    utils.labs.RefusedCall: utils.models.num_parameters is the course's own implementation of ...
    >>> models.num_parameters(torch.nn.Linear(3, 2))
    8
    """
    functions = [_course_function(name) for name in names]
    saved = [f.__code__ for f in functions]
    try:
        for f, name in zip(functions, names, strict=True):
            f.__code__ = _refusal_code(name)
        yield
    finally:
        for f, code in zip(functions, saved, strict=True):
            f.__code__ = code


# -------------------------------------------------------------------- assign
def _zip_tests(tests: Path, target: Path) -> Path:
    """Zip the test files of folder ``tests`` (flat) into ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(tests.glob("*.py")):
            archive.write(path, path.name)
    return target


def assign(lab: str, dist: Path | None = None, run_tests: bool = True) -> Path:
    """Build ``lab``'s student notebook, autograder zip and public tests zip with ``otter assign``.

    Parameters
    ----------
    lab : str
        Lab name, e.g. ``"00_warmup"``.
    dist : Path or None
        Build folder (default ``labs/dist``); the lab goes to ``<dist>/<lab>/`` (replaced).
    run_tests : bool
        Let otter run the tests against the solutions (slower; proves the master passes).

    Returns
    -------
    Path
        The student notebook.
    """
    master = master_notebook(lab)
    dist = Path(dist or dist_dir())
    out = dist / lab
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "otter", "assign", "--no-pdfs", str(master), str(out)]
    if not run_tests:
        command.insert(4, "--no-run-tests")
    done = subprocess.run(command, cwd=master.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"otter assign failed for lab {lab!r}:\n{done.stdout}\n{done.stderr}")
    _zip_tests(out / "student" / "tests", dist / "_site" / "labs" / f"{lab}-tests.zip")
    _install_course_in(autograder_zip(lab, dist))
    return student_notebook(lab, dist)


def _install_course_in(ag_zip: Path) -> None:
    """Add the course package to the pip list of the autograder zip's ``environment.yml``.

    otter's environment has only otter; on Gradescope the tests and the
    notebooks also import ``utils``.
    """
    with zipfile.ZipFile(ag_zip) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    lines = members["environment.yml"].decode().splitlines()
    at = next(i for i, line in enumerate(lines) if "otter-grader" in line)
    lines.insert(at + 1, lines[at][: len(lines[at]) - len(lines[at].lstrip())] + f'- "{PACKAGE_SPEC}"')
    members["environment.yml"] = ("\n".join(lines) + "\n").encode()
    with zipfile.ZipFile(ag_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


# --------------------------------------------------------------------- grade
def question_points(lab: str, dist: Path | None = None) -> dict[str, float]:
    """``{question: points possible}`` read from ``lab``'s autograder zip."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import create_test_file

    points = {}
    with tempfile.TemporaryDirectory() as tmp:
        tests = _extract_tests(autograder_zip(lab, dist), Path(tmp))
        for path in sorted(tests.glob("*.py"), key=lambda p: grading._natural_key(p.stem)):
            test = create_test_file(str(path), NBMetadataConfig())
            points[test.name] = test.possible
    return points


def _extract_tests(ag_zip: Path, folder: Path) -> Path:
    """The test files ``tests/*.py`` of an autograder zip, unpacked into ``folder/tests``."""
    with zipfile.ZipFile(ag_zip) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"tests/[^/]+\.py", n)]
        archive.extractall(folder, members=names)
    return folder / "tests"


def _submissions(folder: Path) -> list[Path]:
    """The files of ``folder`` to grade (hidden files and folders skipped), sorted."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Submissions folder {folder} does not exist.")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def write_csv(grades: list[Grade], points: dict[str, float], path: Path) -> Path:
    """Write one row per submission: file, question scores, total, possible, error."""
    questions = list(points)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", *questions, "total", "possible", "error"])
        for g in grades:
            scores = [g.scores.get(q, 0.0) for q in questions]
            writer.writerow([g.submission, *scores, sum(scores), sum(points.values()), g.error])
    return Path(path)


def write_feedback(grades: list[Grade], folder: Path) -> Path:
    """Write ``folder/<submission>.txt``: each question's test results, for the instructor."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for g in grades:
        parts = [f"{g.submission}: {g.total:g} points ({g.seconds:.0f} s, {g.cpu_seconds:.0f} s of CPU)",
                 *([f"not graded: {g.error}"] if g.error else [])]
        parts += [f"--- {q}: {g.scores.get(q, 0):g} points\n{text}" for q, text in g.feedback.items()]
        (folder / f"{g.submission}.txt").write_text("\n\n".join(parts) + "\n")
    return folder


def grade(
    lab: str,
    submissions: Path,
    output: Path | None = None,
    timeout: float = 300,
    dist: Path | None = None,
    workers: int = 1,
    limits: grading.Limits | None = None,
    unsafe_no_sandbox: bool = False,
    feedback: Path | None = None,
) -> list[Grade]:
    """Grade every file in ``submissions`` against ``lab``'s autograder; optionally write a CSV.

    Each submission runs in its own sandbox and its tests in a fresh trusted
    process (:mod:`utils.grading`), ``workers`` submissions at a time. A
    submission that cannot be graded (not a notebook, a violation of the
    sandbox, a limit reached, a timeout) scores 0 with the reason in ``error``.

    Parameters
    ----------
    lab : str
        Lab name, e.g. ``"00_warmup"``.
    submissions : Path
        Folder of submitted notebooks (``.ipynb``, or otter's export ``.zip``).
    output : Path or None
        CSV file to write (see :func:`write_csv`).
    timeout : float
        Seconds allowed per submission (ignored when ``limits`` is given).
    dist : Path or None
        Build folder of :func:`assign` (default ``labs/dist``).
    workers : int
        Submissions graded at once (about one per core).
    limits : grading.Limits or None
        Memory, CPU, process and disk limits per submission (default: ``Limits(seconds=timeout)``).
    unsafe_no_sandbox : bool
        Grade without the sandbox (resource limits only): only on a machine you can throw away.
    feedback : Path or None
        Folder for one text file per submission with every question's test results.

    Returns
    -------
    list of Grade
        One per submission, in file-name order.

    Raises
    ------
    RuntimeError
        If the sandbox cannot be built on this machine (and ``unsafe_no_sandbox`` is false).
    """
    master_notebook(lab)
    ag_zip = autograder_zip(lab, dist)
    points = question_points(lab, dist)
    limits = limits or grading.Limits(seconds=timeout)
    paths = _submissions(Path(submissions))
    with tempfile.TemporaryDirectory(prefix="cnnt-grading-") as tmp:
        tests = _extract_tests(ag_zip, Path(tmp))
        plan = grading.make_plan(lab, tests, limits, workers, Path(tmp) / "staging", unsafe_no_sandbox)
        problems = grading.sandbox_problems(plan)
        if problems:
            raise RuntimeError("Cannot grade safely on this machine: " + "; ".join(problems) + ". Fix that, "
                               "or grade inside a machine you can throw away with --unsafe-no-sandbox.")
        if unsafe_no_sandbox:
            print("WARNING - grading WITHOUT a sandbox: submissions run with your rights, network and files; "
                  "only resource limits apply, and a hostile submission can change any file you can.", flush=True)
        possible = sum(points.values())
        grades = grading.grade_all(paths, plan, workers, report=lambda g: print(
            f"{g.submission}: {g.total:g} / {possible:g} {g.error}".rstrip(), flush=True))
    if output is not None:
        write_csv(grades, points, Path(output))
    if feedback is not None:
        write_feedback(grades, Path(feedback))
    return grades


# ------------------------------------------------------------------- release
def release(target: Path, names: list[str] | None = None, dist: Path | None = None) -> list[Path]:
    """Bundle every assigned lab into one folder an instructor can hand out.

    Per lab, ``target/<lab>-student.zip`` holds the student notebook with its
    public ``tests/`` folder (what a student uploads to Colab or an LMS), and
    ``target/<lab>-autograder.zip`` is the autograder (all tests, for
    ``grade``). Needs ``assign`` first; returns the files written.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for lab in names or lab_names():
        student = student_notebook(lab, dist).parent
        if not student.exists():
            raise FileNotFoundError(f"{student} is missing; {_ASSIGN_ADVICE}.")
        bundle = shutil.make_archive(str(target / f"{lab}-student"), "zip", root_dir=student)
        grader_zip = shutil.copyfile(autograder_zip(lab, dist), target / f"{lab}-autograder.zip")
        written += [Path(bundle), Path(grader_zip)]
    return written


# ----------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    """The command line of ``python -m utils.labs``."""
    parser = argparse.ArgumentParser(prog="python -m utils.labs", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_assign = commands.add_parser("assign", help="build student notebooks and autograder zips")
    p_assign.add_argument("labs", nargs="*", help="lab names (default: all)")
    p_grade = commands.add_parser("grade", help="grade a folder of submissions into a CSV")
    p_grade.add_argument("lab")
    p_grade.add_argument("submissions", type=Path)
    p_grade.add_argument("-o", "--output", type=Path, default=Path("scores.csv"))
    p_grade.add_argument("--timeout", type=float, default=300, help="seconds per submission (default 300)")
    p_grade.add_argument("-j", "--workers", type=int, help="submissions graded at once (default: one per core, "
                         "as many as the memory holds at --memory-gib each)")
    p_grade.add_argument("--memory-gib", type=float, default=4.0, help="memory per submission (default 4)")
    p_grade.add_argument("--processes", type=int, default=64, help="processes and threads per submission")
    p_grade.add_argument("--feedback", type=Path, help="folder for one text file of test results per submission")
    p_grade.add_argument("--unsafe-no-sandbox", action="store_true",
                         help="grade without the sandbox: only on a machine you can throw away")
    p_release = commands.add_parser("release", help="zip student bundles and autograders into one folder")
    p_release.add_argument("target", type=Path)
    p_release.add_argument("labs", nargs="*", help="lab names (default: all)")
    return parser


def _default_workers(memory_gib: float) -> int:
    """One grading worker per core, no more than the machine's memory holds at ``memory_gib`` each."""
    import psutil

    return max(1, min(os.cpu_count() or 1, int(psutil.virtual_memory().total / 2**30 // (memory_gib + 1))))


def _assign_all(names: list[str]) -> int:
    """Assign every lab of ``names``, going on past failures; 1 if any failed."""
    failed = []
    for lab in names:
        try:
            print(f"{lab}: {assign(lab)}", flush=True)
        except (ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            failed.append(lab)
    if failed:
        print(f"error: could not assign {failed}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.labs``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "assign":
            return _assign_all(args.labs or lab_names())
        elif args.command == "grade":
            limits = grading.Limits(seconds=args.timeout, memory_gib=args.memory_gib, processes=args.processes)
            workers = args.workers or _default_workers(args.memory_gib)
            grade(args.lab, args.submissions, args.output, workers=max(1, workers), limits=limits,
                  unsafe_no_sandbox=args.unsafe_no_sandbox, feedback=args.feedback)
            print(f"scores written to {args.output}")
        else:
            for path in release(args.target, args.labs or None):
                print(path)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
