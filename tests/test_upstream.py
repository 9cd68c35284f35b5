"""harness certify --upstream DIR: PyTorch's DTensor test folder, migrated on the fly, per file.

tests/data/upstream is a stand-in written for these tests (none of it is PyTorch's):
three files of the upstream shape, with one planted failure, one planted skip and
one file that does not import.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from harness_cli import harness  # tests/ is on sys.path

from harness import upstream
from harness.cli import main
from harness.report import bundle, junit

DATA = Path(__file__).parent / "data"
FAKE = DATA / "upstream"
MATRIX = DATA / "certify" / "matrix.toml"


def _certify(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = ["certify", "cpu-2rank", "--matrix", str(MATRIX), *args]
    return harness(*argv, cwd=cwd, env={"CI": "true", "OMP_NUM_THREADS": "1"}, timeout=600)


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    """One certify run: the planted matrix's suites plus the stand-in upstream folder."""
    tmp = tmp_path_factory.mktemp("upstream")
    before = upstream.tree_sha256(FAKE)
    out = tmp / "report"
    done = _certify("--upstream", str(FAKE), "--out", str(out), cwd=tmp)
    return done, out, before, tmp


def test_each_upstream_file_is_a_capability_with_its_counts(certified):
    done, out, _, _ = certified
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    caps = {
        c["name"]: (c["title"], c["verdict"], c["passed"], c["failed"], c["error"], c["skipped"])
        for c in report["capabilities"]
    }
    assert caps == {
        "sound": ("Sound", "pass", 1, 0, 0, 1),  # the cell's own suites ran too
        "planted": ("Planted", "fail", 1, 1, 0, 0),
        "upstream/test_basics.py": ("PyTorch test_basics.py", "fail", 1, 1, 0, 1),
        "upstream/test_newer_than_torch.py": (
            "PyTorch test_newer_than_torch.py",
            "fail",
            0,
            0,
            1,
            0,
        ),
        "upstream/parallel/test_layouts.py": (
            "PyTorch parallel/test_layouts.py",
            "pass",
            1,
            0,
            0,
            0,
        ),
    }
    tests = {t["id"]: t for c in report["capabilities"] for t in c["tests"]}
    planted = tests["upstream/test_basics.py::BasicsTest::test_planted_mismatch"]
    assert "planted: 4 ones do not sum to 5" in planted["details"]
    assert tests["upstream/test_basics.py::BasicsTest::test_planted_skip"]["reason"] == (
        "planted skip: needs 8 ranks"
    )
    newer = tests["upstream/test_newer_than_torch.py"]
    assert newer["reason"] == (
        "collection failure: ModuleNotFoundError: No module named "
        "'torch.distributed.tensor._a_module_no_torch_has'"
    )
    info = report["run"]["upstream"]
    assert (info["path"], info["files"]) == (str(FAKE.resolve()), 3)
    assert info["sha256"] == upstream.tree_sha256(FAKE)
    assert f"--upstream {FAKE}" in report["run"]["command"]
    assert bundle.verify(out).ok, bundle.verify(out).problems


def test_the_upstream_folder_is_never_edited(certified):
    _, _, before, _ = certified
    assert upstream.tree_sha256(FAKE) == before
    text = (FAKE / "test_basics.py").read_text()
    assert "from torch.testing._internal.distributed._tensor.common_dtensor import" in text
    assert not list(FAKE.rglob("__pycache__"))


def test_an_upstream_failure_reruns_alone_and_can_be_waived(certified):
    done, out, _, tmp = certified
    (line,) = [
        ln.strip().removeprefix("rerun: ")
        for ln in done.stdout.splitlines()
        if "rerun:" in ln and "test_planted_mismatch" in ln
    ]
    argv = shlex.split(line)
    assert argv[:2] == ["harness", "certify"] and "--upstream-only" in argv
    assert argv[-1] == "upstream/test_basics.py::BasicsTest::test_planted_mismatch"
    assert argv[argv.index("--out") + 1] == f"{out}-rerun"
    waivers = tmp / "waivers.toml"
    waivers.write_text(
        '[[waiver]]\ntest = "upstream/test_basics.py::BasicsTest::test_planted_mismatch"\n'
        'reason = "the stand-in plants it"\nissue = "https://github.com/acme/x/issues/1"\n'
    )
    rerun = _certify(*argv[5:-2], "--waivers", str(waivers), "--", argv[-1], cwd=tmp)
    report = json.loads((Path(f"{out}-rerun") / "report.json").read_text())
    (cap,) = report["capabilities"]  # only that test ran: no suites, no other file
    assert (cap["name"], cap["total"], cap["waived"], cap["failed"]) == (
        "upstream/test_basics.py",
        1,
        1,
        0,
    )
    # waived is not passed: with nothing else run, nothing is certified
    assert (report["verdict"], rerun.returncode) == ("skip", 1), rerun.stdout


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_folder_that_is_not_a_dtensor_test_directory_is_refused(tmp_path, capsys):
    base = ["certify", "cpu-2rank", "--matrix", str(MATRIX), "--out", str(tmp_path / "out")]
    line = _refused([*base, "--upstream", str(tmp_path / "nope")], capsys)
    assert "not a folder" in line and "test/distributed/tensor" in line
    line = _refused([*base, "--upstream", str(DATA / "certify")], capsys)
    assert "holds no test_*.py files" in line
    other = tmp_path / "c10d"
    other.mkdir()
    (other / "test_store.py").write_text("import torch.distributed as dist\n")
    (other / "test_pg.py").write_text("import torch.distributed as dist\n")
    (other / "test_mesh.py").write_text("from torch.distributed.tensor import DTensor\n")
    line = _refused([*base, "--upstream", str(other)], capsys)
    assert "only 1 of its 3 test files use DTensor" in line
    line = _refused([*base, "--upstream-only"], capsys)
    assert "add --upstream DIR" in line
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_prepare_migrates_a_copy(tmp_path):
    prepared = upstream.prepare(FAKE, tmp_path)
    assert sorted(prepared.files) == [
        "parallel/test_layouts.py",
        "test_basics.py",
        "test_newer_than_torch.py",
    ]
    copy = (tmp_path / "upstream" / "test_basics.py").read_text()
    assert "from harness import (" in copy and "common_dtensor" not in copy
    assert (tmp_path / "upstream" / "parallel" / "_helpers.py").is_file()
    assert upstream.pytest_args(prepared, [])[-1] == "upstream"
    assert "upstream" not in upstream.pytest_args(prepared, ["upstream/test_basics.py::T::t"])


def test_merge_appends_the_upstream_suite_and_names_a_file_that_does_not_import(tmp_path):
    cell = tmp_path / "junit.xml"
    cell.write_text(
        '<testsuites><testsuite name="cell"><testcase classname="m" name="t">'
        '<properties><property name="capability" value="m"/>'
        '<property name="nodeid" value="m.py::t"/></properties></testcase></testsuite></testsuites>'
    )
    extra = tmp_path / "up.xml"
    extra.write_text(
        '<testsuites><testsuite name="up"><testcase classname="" name="upstream.parallel.test_x">'
        '<error message="collection failure">Traceback\nE   ImportError: cannot import name y'
        "</error></testcase></testsuite></testsuites>"
    )
    upstream.merge_junit(cell, extra)
    results = {r.id: r for r in junit.parse(cell)}
    assert set(results) == {"m.py::t", "upstream/parallel/test_x.py"}
    broken = results["upstream/parallel/test_x.py"]
    assert (broken.capability, broken.outcome) == ("upstream/parallel/test_x.py", "error")
    assert broken.reason == "collection failure: ImportError: cannot import name y"
