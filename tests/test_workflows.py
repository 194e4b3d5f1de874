"""The publishing workflow: valid YAML, the README's own commands, pinned actions."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Set up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def _steps(workflow: dict):
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


@pytest.fixture(scope="module")
def book() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())


def test_workflows_exist_and_parse():
    assert WORKFLOWS
    for path in WORKFLOWS:
        assert isinstance(yaml.safe_load(path.read_text())["jobs"], dict), path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_version(path):
    for step in _steps(yaml.safe_load(path.read_text())):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", step["uses"]), step["uses"]


def test_triggers_cover_push_pull_requests_and_a_schedule(book):
    triggers = book[True] if True in book else book["on"]  # YAML 1.1 reads `on` as True
    assert triggers["push"]["branches"] == ["main"]
    assert "pull_request" in triggers and triggers["schedule"]


def test_jobs_run_the_readme_commands_verbatim(book):
    setup, test = _readme_commands()
    runs = {job: [s.get("run", "") for s in spec["steps"]] for job, spec in book["jobs"].items() if "steps" in spec}
    assert setup in runs["test"] and test in runs["test"]
    assert "jupyter-book build . -W -n --keep-going" in runs["test"]
    assert setup in runs["build"] and "jupyter-book build . -W -n --keep-going" in runs["build"]


def test_pull_requests_never_deploy(book):
    assert book["jobs"]["test"]["if"] == "github.event_name == 'pull_request'"
    deploy = book["jobs"]["deploy"]
    assert "pull_request" not in deploy["if"] and deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])


def test_build_restores_the_execution_cache_and_uploads_reports_on_failure(book):
    steps = book["jobs"]["build"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert "_build/.jupyter_cache" in cache["with"]["path"]
    reports = [s for s in steps if s.get("if") == "failure()"]
    assert reports and reports[0]["with"]["path"] == "_build/html/reports/"


def test_lab_release_is_uploaded(book):
    runs = [s.get("run", "") for s in book["jobs"]["build"]["steps"]]
    assert "python -m utils.labs release _build/labs-release" in runs


def test_student_labs_are_published_to_the_branch_the_site_launches_from(book):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    branch = config["sphinx"]["config"]["course_labs_branch"]
    publish = next(s for s in book["jobs"]["build"]["steps"] if "actions-gh-pages" in s.get("uses", ""))
    assert publish["with"]["publish_branch"] == branch
    staged = next(s["run"] for s in book["jobs"]["build"]["steps"] if "labs/dist/*/student" in s.get("run", ""))
    assert publish["with"]["publish_dir"] in staged
