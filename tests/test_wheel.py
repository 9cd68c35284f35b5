"""The package stands alone: built, checked, installed in a fresh venv outside the
checkout, its commands work and say which matrix they use.

Slow (a venv with torch): about a minute and a half here. torch comes the way a
cpu cell gets it (harness.nox_sessions.install_steps), so a stock machine takes
PyTorch's CPU build and this one its local wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness import __version__
from harness.matrix import load_matrix
from harness.nox_sessions import install_steps

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
pytest.importorskip("build", reason="build is not installed (pip install -e '.[dev]')")


def sh(*argv, cwd: Path, timeout: int = 600, env: dict | None = None):
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from it: the package data survives both
    sh(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    return out


def test_build_and_twine_check(dist):
    files = sorted(p.name for p in dist.iterdir())
    assert files == [
        f"dtensor_harness-{__version__}-py3-none-any.whl",
        f"dtensor_harness-{__version__}.tar.gz",
    ]
    proc = sh(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir(), cwd=dist)
    assert proc.stdout.count("PASSED") == 2


def test_the_wheel_carries_the_matrix_and_the_image_recipes(dist):
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "harness/data/matrix.toml",
        "harness/data/docker/cpu.Dockerfile",
        "harness/data/docker/cuda.Dockerfile",
        "harness/data/docker/entrypoint.sh",
        "harness/data/docker/install-harness.sh",
        "harness/data/pyproject.toml",
        "harness/data/matrix.schema.json",
        "harness/conformance/test_collectives.py",
    }
    assert shipped <= names
    meta = zipfile.ZipFile(wheel).read(
        f"dtensor_harness-{__version__}.dist-info/METADATA"
    ).decode()  # fmt: skip
    assert "Classifier: Framework :: Pytest" in meta
    assert "Project-URL" not in meta  # no public home yet: no made-up URLs (issue 26)


def test_installed_outside_a_checkout_every_command_works(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    torch_step, _ = install_steps(load_matrix(ROOT / "matrix.toml").cell("cpu-2rank"), [])
    # nothing of a checkout on the path (a PYTHONPATH that runs these tests from one)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": ""}
    sh(python, "-m", "pip", "install", "-q", *torch_step, cwd=tmp_path, env=env)
    sh(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path, env=env)
    harness = venv / "bin" / "harness"

    elsewhere = tmp_path / "nowhere"  # no matrix.toml: the kit's starter matrix, said so
    elsewhere.mkdir()
    listing = sh(harness, "matrix", "list", cwd=elsewhere, env=env)
    assert "starter matrix" in listing.stderr and "cpu-4rank" in listing.stdout

    repo = tmp_path / "repo"
    sh(harness, "init", repo, cwd=tmp_path, env=env)
    assert {p.name for p in repo.iterdir()} >= {"matrix.toml", "noxfile.py", ".github"}
    listing = sh(harness, "matrix", "list", cwd=repo, env=env)
    assert f"matrix {repo / 'matrix.toml'}" in listing.stdout.replace(
        str(repo.resolve()), str(repo)
    )
    # the noxfile init wrote makes the matrix's sessions, and a bare nox runs one cpu cell
    sh(python, "-m", "pip", "install", "-q", "nox", cwd=tmp_path, env=env)
    sessions = sh(python, "-m", "nox", "--list", "--no-color", cwd=repo, env=env).stdout
    assert "* test-cpu-4rank" in sessions and "- certify-cuda-8gpu" in sessions
    doctor = sh(harness, "doctor", cwd=repo, env=env)
    assert "runnable here from matrix.toml" in doctor.stdout and "cpu-4rank" in doctor.stdout
    build = sh(harness, "container", "build", "cpu-2rank", "--dry-run", cwd=repo, env=env)
    context = Path(build.stdout.split()[-1])
    assert (context / "docker" / "cpu.Dockerfile").is_file() and (context / "harness").is_dir()
    assert ROOT not in context.parents  # made from the installed kit, not this checkout
    assert os.access(context / "docker" / "install-harness.sh", os.X_OK)
    assert "matrix" in build.stderr
