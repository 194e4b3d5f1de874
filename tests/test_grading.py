"""Grading against hostile submissions: the wire format, refused calls, the sandbox, tampering.

Three layers, cheapest first:

* unit tests of :mod:`utils.grading_wire` (only data crosses) and of
  :func:`utils.labs.refusing` / the stripped modules;
* a tiny lab (one otter test file written here, no ``otter assign``, no torch
  in the notebooks) graded through the real sandbox: what the sandbox can see,
  how tests use the submission's functions (calls, in-place changes,
  exceptions), the CPU-time limit, refusal without bubblewrap, and the unsafe
  mode;
* the warm-up lab graded once with every hostile submission at once, on two
  workers: tampering with otter, builtins, ``sys.modules``, the results and the
  exit path scores no more than the blank notebook; a call to the course's own
  function is refused; a memory bomb, a fork storm, a socket and deleting a file
  outside its folder each end as that submission's error row while the others
  are graded and nothing outside is harmed.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import numpy as np
import psutil
import pytest
import torch

from utils import config, grading, grading_wire, labs

WARMUP = "00_warmup"


# ------------------------------------------------------------------ helpers
def notebook(path: Path, *cells: str, lab: str | None = None) -> Path:
    """Write a notebook of code ``cells`` (labelled for ``lab`` if given)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    if lab:
        nb.metadata["otter"] = {"assignment_name": lab}
    nbformat.write(nb, path)
    return path


def add_cells(source: Path, target: Path, *cells: str, first: bool = False) -> Path:
    """Copy notebook ``source`` with ``cells`` appended (or put first)."""
    nb = nbformat.read(source, 4)
    new = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.cells = new + nb.cells if first else nb.cells + new
    nbformat.write(nb, target)
    return target


TINY_TESTS = '''from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 1

@test_case(points=None, hidden=False)
def test_q1(answer):
    assert answer == 42 and type(answer) is int
'''

MECHANICS_TESTS = '''from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 1

@test_case(points=None, hidden=True)
def test_q2(double_in_place, freeze_first, picky, make_counter):
    import numpy as np
    import torch
    a = np.arange(3.0)
    assert double_in_place(a) is None and a.tolist() == [0.0, 2.0, 4.0], "in-place change to an array"
    t = torch.ones(2)
    double_in_place(t)
    assert t.tolist() == [2.0, 2.0], "in-place change to a tensor"
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    returned = freeze_first(net)
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
    assert not net.training and torch.all(net[0].bias == 0)
    assert returned(torch.zeros(1, 2)).shape == (1, 1), "a returned module is called in the sandbox"
    assert [p.shape for p in returned.parameters()][0] == (2, 2), "iterating a remote object"
    try:
        picky(-1)
    except ValueError as err:
        assert "negative" in str(err)
    else:
        raise AssertionError("the submission's ValueError must reach the test")
    counter = make_counter()
    assert [counter(), counter(), len(counter.history)] == [1, 2, 2], "state stays in the sandbox"
'''

MECHANICS_ANSWERS = '''
import torch

def double_in_place(x):
    x *= 2

def freeze_first(net):
    for p in net[0].parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        net[0].bias.zero_()
    return net.eval()

def picky(n):
    if n < 0:
        raise ValueError("n must not be negative")
    return n

class Counter:
    def __init__(self):
        self.history = []
    def __call__(self):
        self.history.append(1)
        return len(self.history)

def make_counter():
    return Counter()
'''


def tiny_plan(folder: Path, limits: grading.Limits, *, unsafe: bool = False,
              tests: tuple[str, ...] = (TINY_TESTS,)) -> grading.Plan:
    """A plan for the tiny lab ``99_tiny`` whose test files are ``tests``."""
    (folder / "tests").mkdir(parents=True)
    for i, source in enumerate(tests, 1):
        (folder / "tests" / f"q{i}.py").write_text(source)
    return grading.make_plan("99_tiny", folder / "tests", limits, 2, folder / "staging", unsafe)


# ------------------------------------------------------------------ the wire format
def through_pipe(value: object, handle=None, remote=None) -> object:
    """``value`` encoded, sent through a pipe in a frame, read and decoded, as grading does."""
    import os

    read, write = os.pipe()
    tree, blob = grading_wire.encode(value, handle)
    grading_wire.write_frame(write, tree, blob)
    header, data = grading_wire.read_frame(read)
    os.close(read)
    os.close(write)
    return grading_wire.decode(header, data, remote)


def test_wire_round_trip_keeps_values_and_types():
    value = {"n": 3, 2: [1.5, None, True], "t": (b"\x00\xff", 1 + 2j, ..., frozenset({1})),
             "a": np.arange(6, dtype=np.int16).reshape(2, 3), "s": np.float32(0.5),
             "x": torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16), "dtype": torch.float64}
    back = through_pipe(value)
    assert back.keys() == value.keys() and back["n"] == 3 and back[2] == [1.5, None, True]
    assert back["t"] == value["t"]
    assert back["a"].dtype == np.int16 and np.array_equal(back["a"], value["a"])
    assert isinstance(back["s"], np.float32) and back["s"] == 0.5
    assert back["x"].dtype == torch.bfloat16 and torch.equal(back["x"], value["x"]) and back["dtype"] is torch.float64


def test_wire_launders_rigged_objects_into_plain_data():
    class Sly(str):
        def __eq__(self, other):
            return True

    class SlyTensor(torch.Tensor):
        def __eq__(self, other):
            return True

    back = through_pipe([Sly("no"), torch.zeros(2).as_subclass(SlyTensor)])
    assert type(back[0]) is str and back[0] != "yes"
    assert type(back[1]) is torch.Tensor


def test_wire_keeps_objects_out_unless_handled():
    with pytest.raises(grading_wire.WireError, match="not data"):
        grading_wire.encode(lambda: 1)
    back = through_pipe({"f": print}, handle=lambda obj: 7, remote=lambda h, t: ("remote", h, t))
    assert back == {"f": ("remote", 7, "builtin_function_or_method")}
    with pytest.raises(grading_wire.WireError):
        grading_wire.decode(*grading_wire.encode({"f": print}, handle=lambda obj: 7))  # no remote: refused


def test_wire_sends_trusted_modules_by_value_and_others_as_handles():
    class Mine(torch.nn.Module):  # a class of the notebook's own: its code must not run here
        def forward(self, x):
            return x

    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    net[0].weight.requires_grad_(False)
    odd = torch.nn.Linear(1, 1)
    odd.callback = lambda: 0  # cannot be saved: stays in the sandbox
    data = torch.utils.data.TensorDataset(torch.arange(4.0), torch.ones(4))
    back = through_pipe({"net": net, "mine": Mine(), "odd": odd, "data": data}, handle=lambda obj: 7,
                        remote=lambda h, t: ("remote", t))
    assert isinstance(back["net"], torch.nn.Sequential) and torch.equal(back["net"][0].weight, net[0].weight)
    assert [p.requires_grad for p in back["net"].parameters()] == [False, True]
    assert back["mine"] == ("remote", "Mine") and back["odd"] == ("remote", "Linear")
    assert torch.equal(back["data"].tensors[0], data.tensors[0])


@pytest.mark.parametrize("tree, blob", [
    ({"value": {"array": 0}, "arrays": [{"dtype": "object", "shape": [1], "offset": 0, "nbytes": 8}]}, b"\0" * 8),
    ({"value": {"array": 0}, "arrays": [{"dtype": "float64", "shape": [10**12], "offset": 0, "nbytes": 8}]}, b"\0" * 8),
    ({"value": {"array": 0}, "arrays": [{"dtype": "float64", "shape": [2], "offset": 8, "nbytes": 16}]}, b"\0" * 16),
    ({"value": {"pickle": "gASVAAAAAAAAAAA="}, "arrays": []}, b""),
    ({"value": {"list": [1], "tuple": [2]}, "arrays": []}, b""),
    ({"value": {"dict": [[[1], 2]]}, "arrays": []}, b""),
    ({"value": {"torch_dtype": "nn"}, "arrays": []}, b""),
])
def test_wire_refuses_malformed_trees(tree, blob):
    with pytest.raises(grading_wire.WireError):
        grading_wire.decode(tree, blob)


def test_wire_frames_are_size_checked(tmp_path):
    import os

    read, write = os.pipe()
    grading_wire.write_frame(write, {"ok": True}, b"xyz")
    assert grading_wire.read_frame(read) == ({"ok": True}, b"xyz")
    grading_wire.write_frame(write, {"big": "x" * 1000})
    with pytest.raises(grading_wire.WireError, match="over the limit"):
        grading_wire.read_frame(read, max_header=100)  # refused before reading it: the stream is given up
    os.close(read)
    os.close(write)
    read, write = os.pipe()
    os.write(write, b"\x05")
    os.close(write)
    with pytest.raises(EOFError):
        grading_wire.read_frame(read)
    with pytest.raises(TimeoutError):
        grading_wire.read_frame(os.pipe()[0], deadline=time.monotonic() + 0.1)


# ------------------------------------------------------------------ refused calls
def test_refusing_blocks_every_route_to_the_function_and_restores_it():
    from utils import models

    alias = models.num_parameters
    with labs.refusing("utils.models.num_parameters"):
        for call in (models.num_parameters, alias, lambda m: alias(m)):
            with pytest.raises(labs.RefusedCall, match="course's own implementation"):
                call(torch.nn.Linear(3, 2))
    assert alias(torch.nn.Linear(3, 2)) == 8


def test_refusing_names_course_functions_only():
    with pytest.raises(ValueError, match="not a function of the course package"):
        with labs.refusing("torch.bincount"):
            pass


def test_refused_functions_are_stripped_from_the_sandboxs_package(tmp_path):
    (tmp_path / "q1.py").write_text("def t():\n    with labs.refusing('utils.models.num_parameters'):\n        pass\n")
    assert grading.refused_names(tmp_path) == ["utils.models.num_parameters"]
    source = ("import math\nclass A:\n    def f(self):\n        'doc'\n        return 1\n\n    def g(self):\n"
              "        return 2\n\ndef h(x):\n    return math.sqrt(x)\n")
    scope: dict = {}
    exec(grading.strip_functions(source, ["h", "A.f"], "refused"), scope)
    assert scope["A"]().g() == 2 and scope["A"].f.__doc__ == "doc"
    for call in (scope["A"]().f, lambda: scope["h"](4.0)):
        with pytest.raises(labs.RefusedCall, match="refused"):
            call()
    models = Path(grading.__file__).with_name("models.py").read_text()
    assert "numel" not in grading.strip_functions(models, ["num_parameters"], "x").split("def num_parameters")[1][:300]
    with pytest.raises(ValueError, match="no function"):
        grading.strip_functions(source, ["A.missing"], "x")
    (tmp_path / "q2.py").write_text("labs.refusing(name)\n")
    with pytest.raises(ValueError, match="string literals"):
        grading.refused_names(tmp_path)


def test_tests_taking_the_whole_notebook_are_refused(tmp_path):
    (tmp_path / "q1.py").write_text("@test_case()\ndef test_all(env):\n    pass\n")
    with pytest.raises(ValueError, match="takes 'env'"):
        grading.answer_names(tmp_path)


# ------------------------------------------------------------------ the sandbox, on a tiny lab
def test_sandbox_hides_the_instructors_files_and_serves_the_tests(tmp_path):
    """Good answers pass; what a test does with the submission's functions works as if local."""
    plan = tiny_plan(tmp_path / "grading", grading.Limits(seconds=120),
                     tests=(TINY_TESTS.replace("answer == 42", "answer == 42 or answer == 43"), MECHANICS_TESTS))
    assert grading.sandbox_problems(plan) == []
    subs = tmp_path / "subs"
    subs.mkdir()
    repo = Path(grading.__file__).parents[1]
    secret = [str(p) for p in (labs.master_notebook(WARMUP), Path(plan.tests) / "q1.py", subs / "good.ipynb",
                                repo / "tests" / "test_grading.py", repo / "README.md", Path("/etc/shadow"))]
    spy = f"import os\nseen = [p for p in {secret!r} if os.path.exists(p)]\nanswer = 42 if not seen else 0"
    notebook(subs / "good.ipynb", "answer = 42", MECHANICS_ANSWERS, lab="99_tiny")
    notebook(subs / "spy.ipynb", spy)
    notebook(subs / "other_lab.ipynb", "answer = 42", lab="00_warmup")
    grades = {g.submission: g for g in grading.grade_all(sorted(subs.iterdir()), plan, workers=2)}
    assert grades["good.ipynb"].scores == {"q1": 1, "q2": 1}, grades["good.ipynb"].feedback
    assert grades["spy.ipynb"].scores["q1"] == 1, "the sandbox must not see the instructor's files"
    assert "lab '00_warmup', not of lab '99_tiny'" in grades["other_lab.ipynb"].error


def test_cpu_time_limit_ends_the_run(tmp_path):
    plan = tiny_plan(tmp_path, grading.Limits(seconds=60, cpu_seconds=2))
    spin = notebook(tmp_path / "spin.ipynb", "answer = 42\nwhile True:\n    pass")
    result = grading.grade_one(spin, plan)
    assert "CPU-time limit" in result.error and result.total == 0


def test_tests_that_never_end_are_stopped_at_the_deadline(tmp_path):
    hang = TINY_TESTS.replace("    assert answer == 42 and type(answer) is int",
                              "    while answer == 42:\n        pass")
    plan = tiny_plan(tmp_path, grading.Limits(seconds=5), tests=(hang,))
    result = grading.grade_one(notebook(tmp_path / "good.ipynb", "answer = 42"), plan)
    assert "timed out after 5 s (the tests" in result.error and result.scores == {}


def test_without_bubblewrap_grading_refuses_to_pretend(tmp_path, monkeypatch):
    plan = tiny_plan(tmp_path, grading.Limits())
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    assert any("bubblewrap" in p for p in grading.sandbox_problems(plan))


def test_unsafe_mode_grades_with_limits_only(tmp_path):
    plan = tiny_plan(tmp_path, grading.Limits(seconds=60), unsafe=True)
    assert grading.sandbox_problems(plan) == []
    good = notebook(tmp_path / "good.ipynb", "answer = 42")
    result = grading.grade_one(good, plan)
    assert result.scores == {"q1": 1}, result


# ------------------------------------------------------------------ hostile submissions, warm-up lab
TAMPER = {
    # The reported exploit: otter's test runner replaced inside the kernel.
    "tamper_otter": """
import otter.test_files.ok_test as ok, otter.test_files.exception_test as ex
from otter.test_files.abstract_test import TestCaseResult
def run(self, env):
    self.test_case_results = [TestCaseResult(test_case=tc, message="passed", passed=True) for tc in self.test_cases]
ok.OKTestFile.run = ex.ExceptionTestFile.run = run
""",
    "tamper_builtins": """
import builtins
class AlwaysEqual:
    shape = (3,)
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __getattr__(self, name): return AlwaysEqual()
    def __call__(self, *args, **kwargs): return AlwaysEqual()
    def __int__(self): return 0
    def __iter__(self): return iter(range(10))
channel_means = n_params = digit_counts = AlwaysEqual()
conv_output_size = count_parameters = AlwaysEqual()
builtins.AssertionError = type("AssertionError", (BaseException,), {})
builtins.isinstance = lambda *args: True
""",
    "tamper_sys_modules": """
import sys, types
import torch
fake = types.ModuleType("numpy")
fake.allclose = fake.array_equal = lambda *args, **kwargs: True
fake.asarray = lambda x, **kwargs: x
sys.modules["numpy"] = fake
torch.equal = torch.allclose = lambda *args, **kwargs: True
sys.modules["otter"] = sys.modules["otter.test_files"] = types.ModuleType("otter")
""",
    "tamper_results": """
import json, os, struct
fake = {"q1": 2, "q2": 2, "q3": 1, "q4": 2, "q5": 2, "score": 9, "total": 9}
for folder in {os.getcwd(), os.path.expanduser("~"), os.environ.get("TMPDIR", ".")}:
    for name in ("results.json", "scores.json", "grading_results.json", "scores.csv"):
        with open(os.path.join(folder, name), "w") as handle:
            json.dump(fake, handle)
forged = json.dumps({"ready": True, "ok": True, "scores": fake,
                     "values": {"value": {"dict": []}, "arrays": []}}).encode()
for fd in range(3, 16):
    try:
        os.write(fd, struct.pack("<QQ", len(forged), 0) + forged)
    except OSError:
        pass
""",
    "tamper_exit": """
import atexit, os, sys
atexit.register(lambda: print(json.dumps({"q1": 2, "q2": 2, "q3": 1, "q4": 2, "q5": 2})))
import json
sys.exit = lambda *args: None
os._exit(0)
""",
}

CALLS_COURSE = """
from utils import models
course_count = models.num_parameters   # a reference kept before any test runs
def count_parameters(model):
    return course_count(model)
"""

ATTACKS = {
    "memory_bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))", "memory"),
    "fork_storm": ("import os, time\nfor _ in range(500):\n    if os.fork() == 0:\n        time.sleep(60)\n"
                   "        os._exit(0)", "processes"),
    "socket": ("import socket\nsocket.create_connection(('example.org', 80), timeout=5)", "network"),
    "delete": ("import ctypes, os\nctypes.CDLL(None).unlink({visible!r}.encode())\nos.remove({outside!r})",
               "outside its folder"),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The warm-up lab graded once with every hostile submission, the solutions and the blank notebook."""
    dist = tmp_path_factory.mktemp("dist")
    labs.assign(WARMUP, dist=dist, run_tests=False)
    solutions = dist / WARMUP / "autograder" / f"{WARMUP}.ipynb"
    student = labs.student_notebook(WARMUP, dist)
    subs = tmp_path_factory.mktemp("hostile")
    outside = subs / "outside.txt"  # the instructor's folder: invisible to the sandbox
    visible = config.data_dir() / f"sentinel-{uuid.uuid4().hex}.txt"  # read-only in the sandbox
    for path in (outside, visible):
        path.write_text("keep me")
    (subs / "solutions.ipynb").write_bytes(solutions.read_bytes())
    (subs / "untouched.ipynb").write_bytes(student.read_bytes())
    for name, cell in TAMPER.items():
        add_cells(student, subs / f"{name}.ipynb", cell)
    add_cells(solutions, subs / "calls_course.ipynb", CALLS_COURSE)
    for name, (cell, _) in ATTACKS.items():  # first thing in the notebook: the run ends there
        add_cells(student, subs / f"{name}.ipynb", cell.format(visible=str(visible), outside=str(outside)),
                  first=True)
    limits = grading.Limits(seconds=240, memory_gib=2.0)
    private = tmp_path_factory.mktemp("grading-tmp")  # this run's sandboxes name it in their command lines
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tempfile, "tempdir", str(private))
            grades = labs.grade(WARMUP, subs, subs.parent / "hostile.csv", dist=dist, workers=2, limits=limits)
        intact = [p.read_text() == "keep me" for p in (outside, visible)]
    finally:
        visible.unlink(missing_ok=True)
    return labs.question_points(WARMUP, dist), {g.submission: g for g in grades}, intact, str(private)


def test_blank_and_solutions_frame_the_hostile_run(hostile):
    points, grades, *_ = hostile
    assert grades["solutions.ipynb"].scores == pytest.approx(points) and grades["solutions.ipynb"].error == ""
    assert grades["untouched.ipynb"].total == 0 and grades["untouched.ipynb"].error == ""


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_tampering_scores_no_more_than_the_blank_notebook(hostile, name):
    _, grades, *_ = hostile
    assert grades[f"{name}.ipynb"].total <= grades["untouched.ipynb"].total, grades[f"{name}.ipynb"]


def test_a_call_to_the_course_function_is_refused(hostile):
    points, grades, *_ = hostile
    result = grades["calls_course.ipynb"]
    assert result.error == ""
    assert result.scores == pytest.approx(dict(points, q4=0)), result.feedback.get("q4")
    assert "RefusedCall" in result.feedback["q4"] or "course's own implementation" in result.feedback["q4"]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_sandbox_attacks_end_as_their_own_error_row(hostile, name):
    _, grades, intact, _ = hostile
    result = grades[f"{name}.ipynb"]
    assert ATTACKS[name][1] in result.error and result.total == 0, result
    assert all(intact), "a file outside the submission's folder was changed"
    assert grades["solutions.ipynb"].total > 0, "the other submissions are still graded"


def test_no_sandboxed_process_outlives_grading(hostile):
    # Every process of a sandbox lives in the PID namespace of its bubblewrap: none left, none alive.
    private = hostile[-1]
    left = [p for p in psutil.process_iter(["cmdline"]) if private in " ".join(p.info["cmdline"] or [])]
    assert left == [], "a sandbox (or a process the fork storm started) is still running"


def test_hostile_csv_rows_carry_the_errors(hostile, tmp_path_factory):
    _, grades, *_ = hostile
    rows = json.loads(json.dumps([g.error for g in grades.values()]))
    assert sum(bool(e) for e in rows) >= len(ATTACKS) + 1  # the attacks and the early exit
