"""`harness ci` and `harness init`: workflows from the matrix, valid for GitHub and GitLab.

check-jsonschema validates them against the schemas it ships (offline). The
examples committed under examples/ci/ must be what `harness ci` writes today.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import ci
from harness.cli import main
from harness.matrix import load_matrix

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "ci"
SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}
CHECKER = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
needs_checker = pytest.mark.skipif(
    CHECKER is None, reason="check-jsonschema is not installed (pip install -e '.[test]')"
)


def validate(system: str, path: Path) -> None:
    proc = subprocess.run(
        [CHECKER, "--builtin-schema", SCHEMAS[system], str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def matrix():
    return load_matrix(ROOT / "matrix.toml")


@needs_checker
@pytest.mark.parametrize("system", ci.SYSTEMS)
def test_the_generated_workflow_is_valid_for_its_ci(system, tmp_path):
    out = tmp_path / f"{system}.yml"
    assert main(["ci", system, "--matrix", str(ROOT / "matrix.toml"), "--out", str(out)]) == 0
    validate(system, out)


@needs_checker
@pytest.mark.parametrize("system", ci.SYSTEMS)
def test_the_schema_check_can_fail(system, tmp_path):
    """The validation above would notice a broken workflow."""
    out = tmp_path / "bad.yml"
    broken = {"jobs": {"x": {"runs-on": 3, "steps": "no"}}} if system == "github" else {
        "test-x": {"script": 3, "stage": ["a"]}
    }  # fmt: skip
    out.write_text(yaml.safe_dump(broken))
    with pytest.raises(AssertionError):
        validate(system, out)


def test_github_jobs_per_session_on_the_accelerators_runners(matrix):
    cells = ci.select(matrix, ["cpu-4rank", "cuda"])
    runners = {"cuda": ["self-hosted", "gpu-8x"], "cpu": {"github": ["ubuntu-24.04"]}}
    flow = ci.github(matrix, cells, runs_on=runners)
    jobs = flow["jobs"]
    sessions = {ci.job_id(f"{v}-{c.name}") for c in cells for v in ("test", "certify")}
    assert set(jobs) == sessions | {"merge"}
    assert jobs["test-cpu-4rank"]["runs-on"] == "ubuntu-24.04"
    assert jobs["certify-cuda-4gpu"]["runs-on"] == ["self-hosted", "gpu-8x"]
    steps = [s.get("run", "") for s in jobs["test-cuda-4gpu"]["steps"]]
    assert "harness container build cuda-4gpu" in steps
    assert "python -m nox -s test-cuda-4gpu -- --container" in steps
    names = [s.get("name", "") for s in jobs["test-cuda-4gpu"]["steps"]]
    assert f"Build the cell's image {matrix.cell('cuda-4gpu').image}" in names
    upload = jobs["test-cpu-4rank"]["steps"][-1]
    assert upload["with"]["path"] == "results/cpu-4rank/" and upload["if"] == "always()"
    assert upload["with"]["name"] == "junit-cpu-4rank"
    assert jobs["certify-cpu-4rank"]["steps"][-1]["with"]["name"] == "report-cpu-4rank"
    merge = jobs["merge"]
    assert merge["needs"] == [ci.job_id(f"certify-{c.name}") for c in cells]
    assert merge["if"] == "always()"
    assert any("harness report merge results/" in s.get("run", "") for s in merge["steps"])


def test_github_job_ids_are_valid_for_every_cell_name(matrix):
    """GitHub job ids allow no dots: a cell on torch 2.11 keeps its session as the name."""
    other = [c for c in matrix.cells if "." in c.name]
    assert other, "the matrix has cells on a non-default torch"
    flow = ci.github(matrix, other[:1])
    (job,) = [j for j in flow["jobs"] if j != "merge"][:1]
    assert "." not in job and flow["jobs"][job]["name"] == f"test-{other[0].name}"
    assert flow["jobs"]["merge"]["needs"] == [job.replace("test-", "certify-", 1)]


def test_gitlab_tags_junit_report_and_merge(matrix):
    cells = ci.select(matrix, ["cpu-2rank", "rocm-4gpu"])
    flow = ci.gitlab(matrix, cells, runs_on={"rocm": {"gitlab": ["mi300"]}})
    assert flow["stages"] == ["test", "certify", "merge"]
    assert flow["test-rocm-4gpu"]["tags"] == ["mi300"] and "tags" not in flow["test-cpu-2rank"]
    assert flow["test-cpu-2rank"]["artifacts"]["reports"]["junit"] == "results/cpu-2rank/junit.xml"
    assert flow["certify-rocm-4gpu"]["stage"] == "certify"
    assert (
        "python -m nox -s certify-rocm-4gpu -- --container" in flow["certify-rocm-4gpu"]["script"]
    )
    assert flow["test-cpu-2rank"]["image"] == "python:3.11"
    assert "python -m nox -s test-cpu-2rank -- --native" in flow["test-cpu-2rank"]["script"]
    assert [n["job"] for n in flow["merge"]["needs"]] == ["certify-cpu-2rank", "certify-rocm-4gpu"]


def test_runs_on_comes_from_the_matrix(tmp_path, capsys):
    (tmp_path / "matrix.toml").write_text(
        '[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\ncells = { native = [2] }\n'
        'runs_on = ["self-hosted", "big-cpu"]\n'
    )
    assert main(["ci", "github", "--matrix", str(tmp_path / "matrix.toml"), "--out", "-"]) == 0
    flow = yaml.safe_load(capsys.readouterr().out)
    assert flow["jobs"]["test-cpu-2rank"]["runs-on"] == ["self-hosted", "big-cpu"]


@pytest.mark.parametrize(
    ("name", "closest"), [("cpu-3rank", "cpu-2rank"), ("nosuch", ""), ("cdua", "cuda")]
)
def test_an_unknown_name_in_only_is_one_line_naming_both_kinds_exit_2(capsys, name, closest):
    # --only takes accelerators and cells: the error says both, and lists the accelerators
    argv = ["ci", "github", "--matrix", str(ROOT / "matrix.toml"), "--only", f"cpu,{name}"]
    assert main([*argv, "--out", "-"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"--only {name!r}: no accelerator or cell of that name" in err
    assert "Accelerators: cpu, cuda, rocm, xpu, gaudi" in err and "harness matrix list" in err
    assert closest in err


def test_only_takes_a_session_name_too(capsys):
    argv = ["ci", "github", "--matrix", str(ROOT / "matrix.toml"), "--only", "test-cpu-2rank"]
    assert main([*argv, "--out", "-"]) == 0
    assert list(yaml.safe_load(capsys.readouterr().out)["jobs"])[0] == "test-cpu-2rank"


@pytest.mark.parametrize("system", ci.SYSTEMS)
def test_the_committed_examples_are_up_to_date(system, capsys, monkeypatch):
    """examples/ci/ is what `harness ci` writes from this repo's matrix; its header says how."""
    example = EXAMPLES / f"{system}.yml"
    command = example.read_text().splitlines()[1].removeprefix("# Make it again: ")
    argv = command.split()[1:]
    assert argv[:2] == ["ci", system] and f"examples/ci/{system}.yml" in argv
    monkeypatch.chdir(ROOT)  # the header's command runs from the repository's root
    assert main([*argv, "--check"]) == 0, capsys.readouterr()


def test_init_writes_a_repo_that_nox_and_the_cli_read(tmp_path, capsys):
    assert main(["init", str(tmp_path / "repo")]) == 0
    repo = tmp_path / "repo"
    workflow = repo / ".github" / "workflows" / "dtensor-harness.yml"
    assert (repo / "matrix.toml").is_file() and (repo / "noxfile.py").is_file()
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    assert "test-cpu-4rank" in jobs and not any("cuda" in name for name in jobs)
    assert not any("torch" in name for name in jobs)  # the default torch only
    assert 'define_sessions("matrix.toml"' in (repo / "noxfile.py").read_text()
    # a second init refuses to overwrite, naming the way
    assert main(["init", str(repo)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["init", str(repo), "--ci", "gitlab", "--force"]) == 0
    assert (repo / ".gitlab-ci.yml").is_file()


def test_check_says_when_a_workflow_is_stale(tmp_path, capsys):
    out = tmp_path / "ci.yml"
    argv = ["ci", "gitlab", "--matrix", str(ROOT / "matrix.toml"), "--only", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("cpu-2rank", "cpu-3rank"))
    assert main([*argv, "--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().out
