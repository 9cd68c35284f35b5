"""harness certify: runs a cell's suites, reports per capability, fails what failed."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness_cli import harness  # tests/ is on sys.path

from harness.cli import main
from harness.report import bundle
from harness.report.progress import Progress

MATRIX = Path(__file__).parent / "data" / "certify" / "matrix.toml"


def _certify(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return harness("certify", *args, cwd=cwd, env={"CI": "true"})


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """One certify run of the planted matrix, signed."""
    tmp = tmp_path_factory.mktemp("certify")
    key = None
    if shutil.which("ssh-keygen"):
        key = tmp / "vendor"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    out = tmp / "report"
    sign = ["--sign", str(key)] if key else []
    done = _certify("certify-cpu-2rank", "--matrix", str(MATRIX), "--out", str(out), *sign, cwd=tmp)
    return done, out, key


def test_planted_failure_fails_its_capability_with_the_reason(planted):
    done, out, _ = planted
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    caps = {c["name"]: c for c in report["capabilities"]}
    assert (caps["sound"]["verdict"], caps["planted"]["verdict"], report["verdict"]) == (
        "pass",
        "fail",
        "fail",
    )
    (failure,) = [t for t in caps["planted"]["tests"] if t["outcome"] == "failed"]
    assert failure["id"].endswith("planted.py::test_planted_failure")
    assert failure["reason"] == "AssertionError: planted: rank 1 disagrees with rank 0"
    (skip,) = [t for t in caps["sound"]["tests"] if t["outcome"] == "skipped"]
    assert skip["reason"] == "planted skip: needs an even world size"
    assert report["cell"]["name"] == "cpu-2rank" and report["cell"]["world_size"] == 2
    assert report["matrix"]["sha256"] == bundle.file_sha256(MATRIX)
    assert report["fingerprint"]["torch"]["version"].startswith("2.")
    assert report["run"]["exit_code"] == 1


def test_certify_output_is_progress_then_verdicts_then_rerun(planted):
    done, out, _ = planted
    lines = done.stdout.splitlines()
    assert "certify cpu-2rank: 4 tests in 2 capabilities" in done.stdout
    progress = [
        line.split()
        for line in lines
        if line.startswith("  sound ") or line.startswith("  planted ")
    ]
    assert progress[0][:2] == ["sound", "2/2"] and progress[0][-1] == "pass"
    assert progress[1][:2] == ["planted", "2/2"] and progress[1][-1] == "fail"
    assert "  FAIL " in done.stdout and "rank 1 disagrees" in done.stdout
    assert (
        f"rerun: harness run cpu-2rank --matrix {MATRIX} -- -k test_planted_failure" in done.stdout
    )
    assert "harness: certify cpu-2rank: FAIL (2 passed, 1 failed, 1 skipped" in done.stdout
    assert "test_planted_failure" in (out / "pytest.log").read_text()  # pytest's own output


def test_certified_folder_verifies_and_is_signed(planted):
    _, out, key = planted
    found = bundle.verify(out, Path(f"{key}.pub") if key else None)
    assert found.ok, found.problems
    if key:
        assert (out / "SHA256SUMS.sig").is_file()
        assert found.signer is not None


def test_rerun_command_reruns_just_that_test(tmp_path):
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            "cpu-2rank",
            "--matrix",
            str(MATRIX),
            "--results",
            str(tmp_path),
            "--",
            "-k",
            "test_planted_failure",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert rerun.returncode == 1
    assert "1 failed, 3 deselected" in rerun.stdout, rerun.stdout


def test_certify_refuses_bad_input_before_running(tmp_path, capsys):
    assert main(["certify", "cpu-3rank", "--matrix", str(MATRIX)]) == 2
    assert "unknown cell 'cpu-3rank'" in capsys.readouterr().err
    out = tmp_path / "out"
    code = main(
        [
            "certify",
            "cpu-1rank",
            "--matrix",
            str(MATRIX),
            "--out",
            str(out),
            "--sign",
            str(tmp_path / "missing-key"),
        ]
    )
    assert code == 2 and not out.exists()
    assert "signing key" in capsys.readouterr().err


def test_plain_progress_counts_capability_by_capability():
    stream = io.StringIO()
    with Progress("certify cpu-4rank", stream=stream, live=False) as progress:
        progress.feed({"event": "collected", "counts": {"random": 1, "collectives": 2}})
        for outcome in ("passed", "failed"):
            progress.feed(
                {
                    "event": "test",
                    "capability": "collectives",
                    "nodeid": f"c::{outcome}",
                    "outcome": outcome,
                    "duration": 0.5,
                    "reason": "rank 2: boom",
                }
            )
        progress.feed(
            {
                "event": "test",
                "capability": "random",
                "nodeid": "r::t",
                "outcome": "skipped",
                "duration": 0.0,
            }
        )
    lines = stream.getvalue().splitlines()
    assert lines[0] == "certify cpu-4rank: 3 tests in 2 capabilities"
    assert lines[1] == "  FAIL c::failed: rank 2: boom"
    assert lines[2].split() == [
        "collectives",
        "2/2",
        "1",
        "passed",
        "1",
        "failed",
        "0",
        "skipped",
        "1.0",
        "s",
        "fail",
    ]
    assert lines[3].split()[:2] == ["random", "1/1"] and lines[3].split()[-1] == "skip"


def test_live_progress_is_off_in_ci(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("CI", "true")
    assert Progress("x", stream=Tty()).live is False
    monkeypatch.delenv("CI")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert Progress("x", stream=Tty()).live is True
    assert Progress("x", stream=io.StringIO()).live is False


def test_live_progress_draws_a_table():
    pytest.importorskip("rich")
    stream = io.StringIO()
    with Progress("certify cpu-4rank", stream=stream, live=True) as progress:
        progress.feed({"event": "collected", "counts": {"collectives": 1}})
        progress.feed(
            {
                "event": "test",
                "capability": "collectives",
                "nodeid": "c::t",
                "outcome": "passed",
                "duration": 0.2,
            }
        )
    table = stream.getvalue()
    assert "Collectives" in table and "1/1" in table and "pass" in table


def _matrix_with_suite(tmp_path: Path, modules: dict[str, str]) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, body in modules.items():
        (suite / name).write_text(body)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        'schema = 1\n[defaults]\nsuites = ["suite"]\n[accelerators.cpu]\ndevice = "cpu"\n'
        'backend = "gloo"\ncells = { native = [1] }\n'
    )
    return matrix


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        (
            {"test_nothing.py": "X = 1\n"},
            "no tests ran from its suites (suite): nothing is certified",
        ),
        (
            {"test_real.py": "def test_ok():\n    pass\n", "test_hollow.py": "X = 1\n"},
            "capability 'hollow' (",
        ),
        ({"helpers.py": "def test_not_collected():\n    pass\n"}, "holds no test modules"),
    ],
)
def test_certify_refuses_to_certify_nothing(tmp_path, modules, message):
    """A suite that resolves to no tests, or a capability without tests, is no PASS."""
    matrix = _matrix_with_suite(tmp_path, modules)
    (tmp_path / "test_stray.py").write_text("def test_stray():\n    pass\n")  # must not count
    out = tmp_path / "report"
    done = _certify("cpu-1rank", "--matrix", str(matrix), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (out / "report.json").exists() and not (out / "SHA256SUMS").exists()
