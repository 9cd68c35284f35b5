"""CI workflows generated from a matrix: GitHub Actions and GitLab CI.

One job per nox session (``test-<cell>``, ``certify-<cell>``) on the runner
labels of the cell's accelerator, in the cell's image (built by
``nox -s build-<accelerator>`` on the runner, then the session runs inside it;
untagged GitLab jobs, on shared runners without an engine, run natively in a
Python image), with the cell's JUnit XML and report folder uploaded; a merge
job puts every certified cell on one page. Torch-free, like the matrix it reads.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness._version import __version__
from harness.errors import UsageError
from harness.matrix import Cell, Matrix, load_matrix

SYSTEMS = ("github", "gitlab")
PYTHON = "3.11"
#: Runner labels when the matrix names none (accelerators.X.runs_on): a hosted
#: runner for cpu, a self-hosted one labelled with the accelerator otherwise.
DEFAULT_RUNNERS = {
    "github": {"cpu": ["ubuntu-latest"]},
    "gitlab": {"cpu": []},
}
#: Pinned major versions of the GitHub actions the workflow uses.
ACTIONS = {
    "checkout": "actions/checkout@v4",
    "python": "actions/setup-python@v5",
    "upload": "actions/upload-artifact@v4",
    "download": "actions/download-artifact@v4",
}
MERGED = "results/matrix"


def runner_labels(
    system: str, accelerator: str, runs_on: Mapping[str, Any] | None = None
) -> list[str]:
    """Labels (GitHub runs-on) or tags (GitLab) for an accelerator's jobs.

    ``runs_on[accelerator]`` is a list for both systems, or a table keyed by system.
    """
    given = (runs_on or {}).get(accelerator)
    if isinstance(given, Mapping):
        given = given.get(system)
    if given is not None:
        return list(given)
    fallback = ["self-hosted", "linux", accelerator] if system == "github" else [accelerator]
    return list(DEFAULT_RUNNERS[system].get(accelerator, fallback))


def matrix_runners(matrix: Matrix) -> dict[str, Any]:
    """accelerators.<name>.runs_on of every accelerator that sets it."""
    return {c.accelerator: c.runs_on for c in matrix.cells if c.runs_on}


def select(matrix: Matrix, only: Iterable[str] = ()) -> list[Cell]:
    """The cells named by accelerator or cell name (every cell when none is named)."""
    only = [o.strip().removeprefix("test-").removeprefix("certify-") for o in only if o.strip()]
    if not only:
        return list(matrix.cells)
    for name in only:
        if name not in matrix.accelerators and name not in matrix.names:
            close = difflib.get_close_matches(name, [*matrix.accelerators, *matrix.names], n=3)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise UsageError(
                f"--only {name!r}: no accelerator or cell of that name in {matrix.path}.{hint} "
                f"Accelerators: {', '.join(matrix.accelerators)}; every cell: `harness matrix list`."
            )
    return [c for c in matrix.cells if c.accelerator in only or c.name in only]


def _install(install: Sequence[str]) -> str:
    return "python -m pip install nox " + " ".join(install)


def _steps_for(cell: Cell, verb: str, container: bool = True) -> list[tuple[str, str]]:
    """(name, command) of a cell job's own steps, shared by both systems."""
    steps = []
    forced = " -- --native"
    if container and cell.container.get("dockerfile"):
        steps.append(
            (f"Build the cell's image {cell.image}", f"harness container build {cell.name}")
        )
        forced = " -- --container"  # a runner whose engine is down fails, not silently native
    steps.append((f"{verb} {cell.name}", f"python -m nox -s {verb}-{cell.name}{forced}"))
    return steps


def job_id(session: str) -> str:
    """A GitHub job id for a session: letters, digits, - and _ only (torch2.11 -> torch2_11)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", session)


def github(
    matrix: Matrix,
    cells: Sequence[Cell],
    *,
    runs_on: Mapping[str, Any] | None = None,
    install: Sequence[str] = (f"dtensor-harness=={__version__}",),
) -> dict[str, Any]:
    """A GitHub Actions workflow (as a mapping) for ``cells`` of ``matrix``."""
    setup = [
        {"uses": ACTIONS["checkout"]},
        {"uses": ACTIONS["python"], "with": {"python-version": PYTHON}},
        {"name": "Install nox and dtensor-harness", "run": _install(install)},
    ]
    jobs: dict[str, Any] = {}
    for cell in cells:
        labels = runner_labels("github", cell.accelerator, runs_on)
        for verb in ("test", "certify"):
            artifact = "junit" if verb == "test" else "report"
            jobs[job_id(f"{verb}-{cell.name}")] = {
                "name": f"{verb}-{cell.name}",
                "runs-on": labels if len(labels) != 1 else labels[0],
                # the cell's own timeout is per test; this bounds the job
                "timeout-minutes": 120,
                "steps": [
                    *setup,
                    *({"name": name, "run": run} for name, run in _steps_for(cell, verb)),
                    {
                        "name": f"Upload {'JUnit XML' if verb == 'test' else 'the report'}",
                        "if": "always()",
                        "uses": ACTIONS["upload"],
                        "with": {
                            "name": f"{artifact}-{cell.name}",
                            "path": str(cell.results_dir) + "/",
                            "if-no-files-found": "error" if verb == "certify" else "warn",
                        },
                    },
                ],
            }
    certify = [job_id(f"certify-{c.name}") for c in cells]
    jobs["merge"] = {
        "name": "merge the certified cells",
        "needs": certify,
        "if": "always()",
        "runs-on": "ubuntu-latest",
        "steps": [
            *setup,
            {
                "uses": ACTIONS["download"],
                "with": {"pattern": "report-*", "path": "results/"},
            },
            {  # merge checks each report's seal, and refuses edited ones
                "name": "Merge the reports",
                "run": f"harness report merge results/ --out {MERGED}",
            },
            {
                "name": "Upload the matrix report",
                "if": "always()",
                "uses": ACTIONS["upload"],
                "with": {"name": "report-matrix", "path": MERGED + "/"},
            },
        ],
    }
    return {
        "name": "dtensor-harness",
        "on": {
            "push": {"branches": ["main"]},
            "pull_request": None,
            "workflow_dispatch": None,
        },
        "permissions": {"contents": "read"},
        "jobs": jobs,
    }


def gitlab(
    matrix: Matrix,
    cells: Sequence[Cell],
    *,
    runs_on: Mapping[str, Any] | None = None,
    install: Sequence[str] = (f"dtensor-harness=={__version__}",),
) -> dict[str, Any]:
    """A GitLab CI pipeline (as a mapping) for ``cells`` of ``matrix``."""
    pipeline: dict[str, Any] = {
        "stages": ["test", "certify", "merge"],
        "variables": {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    }
    for cell in cells:
        tags = runner_labels("gitlab", cell.accelerator, runs_on)
        for verb in ("test", "certify"):
            # untagged jobs go to shared runners: a Python image, no container engine
            steps = _steps_for(cell, verb, container=bool(tags))
            job: dict[str, Any] = {
                "stage": verb,
                "script": [_install(install), *(run for _, run in steps)],
                "artifacts": {
                    "when": "always",
                    "paths": [str(cell.results_dir) + "/"],
                },
                "timeout": "2h",
            }
            if verb == "test":
                job["artifacts"]["reports"] = {"junit": str(cell.results_dir / "junit.xml")}
            if tags:
                job["tags"] = tags
            else:
                job["image"] = f"python:{PYTHON}"
            pipeline[f"{verb}-{cell.name}"] = job
    pipeline["merge"] = {
        "stage": "merge",
        "image": f"python:{PYTHON}",
        "when": "always",
        "needs": [{"job": f"certify-{c.name}", "artifacts": True} for c in cells],
        "script": [
            _install(install),
            f"harness report merge results/ --out {MERGED}",
        ],
        "artifacts": {"when": "always", "paths": [MERGED + "/"]},
    }
    return pipeline


GENERATORS = {"github": github, "gitlab": gitlab}
DEFAULT_PATHS = {"github": ".github/workflows/dtensor-harness.yml", "gitlab": ".gitlab-ci.yml"}


def render(system: str, workflow: Mapping[str, Any], command: str) -> str:
    """YAML text with a header that names the command that makes it again."""
    import yaml

    if system not in GENERATORS:
        raise UsageError(f"unknown CI system {system!r}; use {' or '.join(SYSTEMS)}.")

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # every job spelled out: no &anchors, *aliases
            return True

    body = yaml.dump(
        dict(workflow), Dumper=Dumper, sort_keys=False, width=100, default_flow_style=False
    )
    return (
        f"# Generated by dtensor-harness {__version__} from the matrix; do not edit by hand.\n"
        f"# Make it again: {command}\n{body}"
    )


def workflow_text(
    system: str, matrix_path: str | None, only: str, install, out: str, load: Path | None = None
) -> str:
    """The workflow text as ``harness ci`` and ``harness init`` write it.

    ``load`` reads another file than ``matrix_path`` names (init, in a new folder).
    """
    matrix = load_matrix(load or matrix_path)
    cells = select(matrix, only.split(","))
    kwargs = {"runs_on": matrix_runners(matrix)}
    if install:
        kwargs["install"] = list(install)
    command = ["harness", "ci", system]
    command += ["--matrix", matrix_path] if matrix_path else []
    command += ["--only", only] if only else []
    for spec in install or ():
        command += ["--install", spec]
    command += ["--out", out]
    workflow = GENERATORS[system](matrix, cells, **kwargs)
    return render(system, workflow, shlex.join(command))
