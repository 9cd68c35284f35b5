"""A vendor's own suites certify: every form a matrix can name gets its own capability row.

The suites live in ``tmp_path``, and the importable package sits in a project of
its own with a pytest.ini, which makes that project pytest's rootdir: the other
suites are outside it, the case where pytest drops a file's path from its node ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from harness_cli import harness  # tests/ is on sys.path

PROJECT = Path(__file__).resolve().parent.parent
ONE_TEST = "import unittest\n\nclass {cls}(unittest.TestCase):\n    def test_{name}(self):\n        self.assertEqual([1, 2][::-1], [2, 1])\n"


def _matrix(folder: Path, suites: list[str]) -> Path:
    matrix = folder / "matrix.toml"
    matrix.write_text(
        f"schema = 1\n[defaults]\nsuites = {json.dumps(suites)}\n"
        '[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\ncells = { native = [1] }\n'
    )
    return matrix


def _certify(matrix: Path, out: Path, pythonpath: Path | None = None, *extra: str):
    paths = [str(PROJECT), *([str(pythonpath)] if pythonpath else [])]
    env = {"CI": "true", "PYTHONPATH": os.pathsep.join(paths)}
    argv = ["certify", "cpu-1rank", "--matrix", str(matrix), "--out", str(out), *extra]
    return harness(*argv, cwd=PROJECT, env=env)


def _module(path: Path, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ONE_TEST.format(cls=f"{name.capitalize()}Test", name=name))


@pytest.fixture(scope="module")
def vendor(tmp_path_factory):
    """One certification of four suites, one of each form, all outside the rootdir."""
    tmp = tmp_path_factory.mktemp("vendor")
    _module(tmp / "vendor" / "test_flip.py", "flip")  # a file, relative to the matrix
    _module(tmp / "elsewhere" / "checks" / "test_mirror.py", "mirror")  # a folder, absolute
    packages = tmp / "site"
    _module(packages / "acme_suite" / "test_spin.py", "spin")  # an importable package
    (packages / "acme_suite" / "__init__.py").write_text("")
    (packages / "pytest.ini").write_text("[pytest]\n")  # the rootdir; the rest is outside it
    _module(packages / "acme_more" / "test_turn.py", "turn")  # an importable module
    (packages / "acme_more" / "__init__.py").write_text("")
    suites = [
        "vendor/test_flip.py",
        str(tmp / "elsewhere" / "checks"),
        "acme_suite",
        "acme_more.test_turn",
    ]
    out = tmp / "report"
    done = _certify(_matrix(tmp, suites), out, packages)
    return done, out


FOUR = ("flip", "mirror", "spin", "turn")


def test_every_suite_form_is_its_own_capability(vendor):
    done, out = vendor
    assert done.returncode == 0, done.stdout + done.stderr
    progress = {line.split()[0]: line.split() for line in done.stdout.splitlines() if "1/1" in line}
    assert sorted(progress) == sorted(FOUR), done.stdout
    assert all(row[-1] == "pass" for row in progress.values())
    assert "other" not in done.stdout
    report = json.loads((out / "report.json").read_text())
    rows = {c["name"]: c for c in report["capabilities"]}
    assert sorted(rows) == sorted(FOUR)
    assert {name: rows[name]["verdict"] for name in FOUR} == dict.fromkeys(FOUR, "pass")


def test_junit_entries_keep_the_file_path(vendor):
    """The node id names the file (pytest alone gives ``::FlipTest::test_flip``)."""
    _, out = vendor
    cases = ET.parse(out / "junit.xml").getroot().iter("testcase")
    props = [{p.get("name"): p.get("value") for p in case.iter("property")} for case in cases]
    by_capability = {p["capability"]: p["nodeid"] for p in props}
    assert sorted(by_capability) == sorted(FOUR)
    flip = by_capability["flip"]
    assert (
        flip.endswith("vendor/test_flip.py::FlipTest::test_flip")
        and Path(flip.split("::")[0]).is_file()
    )
    # the id is a target pytest takes back: it reruns that one test
    rerun = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", flip],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0 and "1 passed" in rerun.stdout, rerun.stdout + rerun.stderr


def test_a_vendor_module_without_tests_is_named(tmp_path):
    _module(tmp_path / "vendor" / "test_flip.py", "flip")
    (tmp_path / "vendor" / "test_hollow.py").write_text("X = 1\n")
    out = tmp_path / "report"
    done = _certify(_matrix(tmp_path, ["vendor"]), out)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "capability 'hollow' (" in line and "test_hollow.py) collected no tests" in line
    assert not (out / "report.json").exists()


@pytest.mark.parametrize(
    ("suites", "message"),
    [
        (["a", "b"], "would both be capability 'flip'"),
        (["missing/test_gone.py"], "relative suites resolve against the matrix file's folder"),
        (["no_such_package_anywhere"], "nor an importable package or module"),
        (["empty"], "suite 'empty' holds no test modules"),
    ],
)
def test_bad_suites_are_refused_before_anything_runs(tmp_path, suites, message):
    _module(tmp_path / "a" / "test_flip.py", "flip")
    _module(tmp_path / "b" / "test_flip.py", "flip")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "helpers.py").write_text("")
    out = tmp_path / "report"
    done = _certify(_matrix(tmp_path, suites), out)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert message in line, line
    assert "certify cpu-1rank:" not in done.stdout  # no pytest started
    assert not (out / "junit.xml").exists()


def test_a_suite_relative_to_the_current_folder_gets_the_fix(tmp_path):
    """Relative suites resolve against the matrix file; the refusal says where it found one."""
    (tmp_path / "ci").mkdir()
    matrix = _matrix(tmp_path / "ci", ["vendor/test_flip.py"])
    _module(tmp_path / "vendor" / "test_flip.py", "flip")
    env = {"CI": "true", "PYTHONPATH": str(PROJECT)}
    done = harness("certify", "cpu-1rank", "--matrix", str(matrix), cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"({tmp_path / 'vendor' / 'test_flip.py'} exists: write it relative" in line
