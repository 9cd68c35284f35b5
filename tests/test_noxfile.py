"""nox sessions come from the matrix, for this repo and for an outside one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("nox", reason="nox is not installed (pip install -e '.[dev]')")


def nox_list(*args: str, cwd: Path = ROOT) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "--json", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_cell_has_test_and_certify_sessions_with_tags():
    from harness.matrix import load_matrix

    sessions = {s["name"]: s for s in nox_list()}
    for cell in load_matrix(ROOT / "matrix.toml").cells:
        assert f"test-{cell.name}" in sessions
        assert f"certify-{cell.name}" in sessions
    assert {"tests", "slow", "lint", "build-cpu", "build-cuda"} <= set(sessions)
    assert sessions["test-cuda-4gpu"]["tags"] == [
        "test",
        "cuda",
        "native",
        "gpu",
        "ws4",
        "torch2.13",
    ]


def test_tags_select_by_mode():
    names = {s["name"] for s in nox_list("-t", "sim")}
    assert "test-cpu-8sim" in names and "test-cuda-8sim" in names
    assert not any(name.endswith(("rank", "gpu", "hpu")) for name in names)


def test_an_outside_repo_makes_sessions_from_its_own_matrix(tmp_path):
    (tmp_path / "matrix.toml").write_text(
        textwrap.dedent("""
        [accelerators.xpu]
        device = "xpu"
        backend = "xccl"
        cells = { native = [2] }
    """)
    )
    (tmp_path / "noxfile.py").write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from harness.nox_sessions import define_sessions
        define_sessions("matrix.toml", install=["dtensor-harness"])
    """)
    )
    names = {s["name"] for s in nox_list(cwd=tmp_path)}
    assert names == {"test-xpu-2gpu", "certify-xpu-2gpu", "build-xpu"}


def test_a_bad_matrix_stops_nox_with_the_message(tmp_path):
    (tmp_path / "matrix.toml").write_text('[accelerators.cpu]\ndevice = "cpu"\n')
    (tmp_path / "noxfile.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from harness.nox_sessions import define_sessions\ndefine_sessions('matrix.toml')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "accelerators.cpu.backend is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def nox_run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nox", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_the_listing_marks_only_what_a_bare_nox_runs():
    proc = nox_run("--list", "--no-color")
    assert proc.returncode == 0, proc.stderr
    marked = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("* ")}
    assert marked == {"lint", "tests"}
    assert "- test-cpu-4rank" in proc.stdout
    # ... while the JSON listing, for CI matrices, still holds every session
    assert {"lint", "tests", "test-cpu-4rank", "certify-cuda-8gpu"} <= {
        s["name"] for s in nox_list()
    }


def test_forcing_a_container_without_an_engine_is_one_sentence():
    """No doubled period (nox ends the line itself), and the way out this session takes."""
    proc = nox_run(
        "-s", "test-cuda-4gpu", "--", "--container", env={"HARNESS_CONTAINER_ENGINE": "podman",
                                                           "PATH": os.path.dirname(sys.executable)}
    )  # fmt: skip
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if "aborted" in x]
    assert "no container engine answered" in line and "drop --container" in line
    assert line.endswith(".") and ".." not in line
