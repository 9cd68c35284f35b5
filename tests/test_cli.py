"""The `harness` CLI: matrix, run and doctor, as a user and a CI script drive them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness_cli import harness  # tests/ is on sys.path

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_matrix_list_json_is_every_cell(capsys):
    assert main(["matrix", "list", "--json", "--matrix", str(ROOT / "matrix.toml")]) == 0
    cells = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert cells["cuda-4gpu"]["session"] == "test-cuda-4gpu"
    assert cells["cpu-4rank"]["world_size"] == 4 and cells["cpu-8sim"]["mode"] == "local"


def test_matrix_show_accepts_the_session_name(capsys):
    assert (
        main(["matrix", "show", "test-cpu-2rank", "--json", "--matrix", str(ROOT / "matrix.toml")])
        == 0
    )
    cell = json.loads(capsys.readouterr().out)
    assert (cell["name"], cell["backend"], cell["world_size"]) == ("cpu-2rank", "gloo", 2)


def test_unknown_cell_exit_2_with_closest_names(capsys):
    assert main(["run", "cpu-3rank", "--matrix", str(ROOT / "matrix.toml")]) == 2
    err = capsys.readouterr().err
    assert "unknown cell 'cpu-3rank'" in err and "cpu-2rank" in err


def dry_run(capsys, *pytest_args: str) -> str:
    """What `harness run cpu-2rank --dry-run -- ARGS` prints."""
    argv = ["run", "cpu-2rank", "--matrix", str(ROOT / "matrix.toml"), "--dry-run"]
    assert main([*argv, "--", *pytest_args]) == 0
    return capsys.readouterr().out


def test_run_dry_run_prints_env_and_pytest_command(capsys):
    out = dry_run(capsys, "-k", "all_reduce")
    for part in (
        "HARNESS_CELL=cpu-2rank",
        "HARNESS_WORLD_SIZE=2",
        "HARNESS_MODE=native",
        "HARNESS_BACKEND=gloo",
        "-m pytest",
        "--junitxml=results/cpu-2rank/junit.xml",
        "-k all_reduce",
    ):
        assert part in out, part


def test_run_refuses_a_cell_the_host_cannot_serve(capsys):
    pytest.importorskip("torch")
    from harness.devices import host_device_count

    if host_device_count("cuda") >= 4:
        pytest.skip("this host has 4 cuda devices; the refusal needs fewer")
    assert main(["run", "cuda-4gpu", "--matrix", str(ROOT / "matrix.toml")]) == 2
    err = capsys.readouterr().err
    assert "needs 4 cuda device(s)" in err and "harness matrix list" in err


def test_run_executes_the_cells_suite_with_its_env_and_writes_junit(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_env.py").write_text(
        textwrap.dedent("""
        import os

        def test_cell_reaches_the_test():
            assert os.environ["HARNESS_CELL"] == "cpu-3rank"
            assert os.environ["HARNESS_WORLD_SIZE"] == "3"
            assert os.environ["HARNESS_MODE"] == "native"
            assert os.environ["HARNESS_TIMEOUT"] == "42"
            assert os.environ["OMP_NUM_THREADS"] == "1"
    """)
    )
    (tmp_path / "matrix.toml").write_text(
        textwrap.dedent("""
        [defaults]
        suites = ["suite"]
        timeout = 42
        results = "out"
        [accelerators.cpu]
        device = "cpu"
        backend = "gloo"
        env = { OMP_NUM_THREADS = "1" }
        cells = { native = [3] }
    """)
    )
    proc = harness("run", "test-cpu-3rank", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    junit = (tmp_path / "out" / "cpu-3rank" / "junit.xml").read_text()
    assert 'name="cpu-3rank"' in junit and 'tests="1"' in junit


def test_run_with_a_suite_that_does_not_exist_is_exit_2(tmp_path):
    (tmp_path / "matrix.toml").write_text(
        '[defaults]\nsuites = ["no_such_pkg_xyz"]\n'
        '[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\ncells = { native = [1] }\n'
    )
    proc = harness("run", "cpu-1rank", cwd=tmp_path)
    assert proc.returncode == 2
    assert "suite 'no_such_pkg_xyz'" in proc.stderr and "Traceback" not in proc.stderr


def test_doctor_json_parses_and_names_torch_and_runnable_cells():
    proc = harness("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["torch"]["installed"] is True
    assert report["torch"]["backends"]["gloo"] is True
    assert "cpu-4rank" in report["cells"]["runnable"]
    assert set(report) >= {"harness", "python", "container_engine", "nix", "cells"}


def test_doctor_and_matrix_work_without_torch(tmp_path):
    """nox and `harness doctor` often run where torch is not installed."""
    blocker = tmp_path / "torch"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('torch is hidden for this test')\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    listing = harness("matrix", "list", env=env)
    assert listing.returncode == 0 and "cuda-4gpu" in listing.stdout
    doctor = harness("doctor", "--json", env=env)
    assert doctor.returncode == 0, doctor.stderr
    assert json.loads(doctor.stdout)["torch"]["installed"] is False


@pytest.fixture
def no_torch(tmp_path):
    """An environment whose Python finds no torch, as where only nox is installed."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}


def test_doctor_without_torch_runs_no_cell(no_torch):
    doctor = harness("doctor", env=no_torch)
    assert doctor.returncode == 0, doctor.stderr
    (line,) = [x for x in doctor.stdout.splitlines() if x.startswith("cells")]
    assert "none runnable here" in line and "torch is not installed" in line
    report = json.loads(harness("doctor", "--json", env=no_torch).stdout)
    assert report["cells"]["runnable"] == [] and "torch" in report["cells"]["blocked"]


def test_run_without_torch_is_one_line_exit_2(no_torch, tmp_path):
    proc = harness("run", "cpu-2rank", "--results", str(tmp_path / "r"), env=no_torch)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("harness: error: cell cpu-2rank cannot run: torch is not")
    assert "pip install torch==2.13.0 --extra-index-url" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["/proc/x", "a-file/sub"])
def test_init_where_it_cannot_write_is_one_line_exit_2(tmp_path, where):
    # issue 26: `harness init /proc/x` printed a traceback
    (tmp_path / "a-file").write_text("")
    target = where if where.startswith("/") else str(tmp_path / where)
    proc = harness("init", target, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot write into {target}" in proc.stderr and "pick a folder" in proc.stderr


def test_version_matches_the_package():
    import harness as pkg

    proc = harness("--version")
    assert proc.stdout.strip() == f"dtensor-harness {pkg.__version__}"


def test_targets_after_dashdash_replace_the_suites(capsys):
    """The rerun line of a failure (`harness run CELL -- path::test`) runs only that test."""
    test_id = "tests/test_cli.py::test_version_matches_the_package"
    out = dry_run(capsys, test_id)
    assert test_id in out and "conformance" not in out
    assert "conformance" in dry_run(capsys, "-k", "barrier")


# The rank runner's modules: none of them has any business in a CLI that only lists.
_RUNNER = ("harness.ranks.run", "harness.ranks.group", "harness.ranks.worker", "harness.bases")
_MATRIX = str(ROOT / "matrix.toml")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["matrix", "list", "--matrix", _MATRIX],
        ["matrix", "show", "cpu-4rank", "--matrix", _MATRIX],
        ["matrix", "validate", _MATRIX],
        ["matrix", "schema"],
    ],
    ids=" ".join,
)
def test_help_and_matrix_load_neither_torch_nor_the_runner(argv):
    """`harness --help` and `harness matrix` stay light: nox calls them where torch is absent."""
    code = textwrap.dedent(
        f"""
        import sys
        from harness.cli import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "harness."))))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout.strip().splitlines()[-1])
    assert "torch" not in loaded, "torch was imported"
    assert not [m for m in loaded if m.startswith(_RUNNER)], loaded
