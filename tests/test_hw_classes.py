"""torch 2.15's ``hw_classification``: which classified test classes a cell counts.

The table (harness.hwclass.COUNTED: cell kind -> classes) decides; a test of a class
the cell does not count is skipped with a reason naming its class, never dropped; a
test class with no classification runs everywhere. `harness run` and `harness certify`
take ``--hw-class``; the report says what was counted and how many each class left out.
tests/data/hw/ holds the files these runs collect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from harness_cli import harness as run_cli  # tests/ is on sys.path
from harness_cli import python

import harness
from harness import compat, hwclass
from harness.matrix import load_matrix

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "hw"
ACME = ROOT / "tests" / "data" / "acme"
CLASSES = DATA / "test_hw_classes.py"


def harness_cli(*args: str, cwd: Path, extra_path: Path | None = None):
    """The CLI with this checkout (and ``extra_path``: a test's plugin) importable."""
    path = [str(ROOT), *([str(extra_path)] if extra_path else []), os.environ.get("PYTHONPATH", "")]
    return run_cli(
        *args, cwd=cwd, env={"PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}
    )


def outcomes(junit: Path) -> dict[str, str]:
    """test name -> "passed" or the skip reason."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        skipped = case.find("skipped")
        found[case.get("name")] = "passed" if skipped is None else skipped.get("message", "")
    return found


# -- the table ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "counted"),
    [
        ("cpu-4rank", "GENERIC,CPU"),
        ("cpu-8sim", "GENERIC,CPU"),
        ("cuda-4gpu", "ACCELERATOR,CUDA"),
        ("rocm-8gpu", "ACCELERATOR,CUDA"),  # ROCm's torch device is cuda
        ("xpu-2gpu", "ACCELERATOR,XPU"),
        ("gaudi-8hpu", "ACCELERATOR"),  # torch has no HPU class
    ],
)
def test_each_cell_counts_its_kinds_classes(cell, counted):
    env = load_matrix(ROOT / "matrix.toml").cell(cell).harness_env()
    assert env[hwclass.ENV] == counted


def test_a_declared_accelerator_is_an_accelerator_cell_on_its_own_device():
    env = load_matrix(ACME / "matrix.toml").cell("acme-2card").harness_env()
    assert env[hwclass.ENV] == "ACCELERATOR"  # acme binds a device per rank (its unit: card)
    assert env["PYTORCH_TESTING_DEVICE_ONLY_FOR"] == env["HARNESS_DEVICE"] == "cpu"


def test_names_are_torchs_and_a_wrong_one_is_one_line():
    assert hwclass.parse("generic, cpu") == ("GENERIC", "CPU")
    assert hwclass.parse("all") is None and hwclass.parse("") is None
    with pytest.raises(harness.errors.UsageError, match="unknown hardware class GPU; give"):
        hwclass.parse("ACCELERATOR,GPU", "--hw-class")


def test_the_public_enum_is_torchs_where_torch_has_one_else_the_kits_twin():
    theirs = compat.hardware_classification()
    ours = harness.HardwareClassification
    if theirs is not None:
        assert ours is theirs
    else:
        assert ours is hwclass.KitHardwareClassification
    assert {m.name: m.value for m in ours} == hwclass.MEMBERS  # torch 2.15's names and values


def test_a_class_reads_as_a_member_name_whatever_enum_or_string():
    class ByEnum:
        hw_classification = harness.HardwareClassification.ACCELERATOR

    class ByTwin:
        hw_classification = hwclass.KitHardwareClassification.CPU

    class ByString:
        hw_classification = "xpu"

    class Wrong:
        hw_classification = 3

    assert [hwclass.classification_of(c) for c in (ByEnum, ByTwin, ByString, object)] == [
        "ACCELERATOR",
        "CPU",
        "XPU",
        None,
    ]
    with pytest.raises(TypeError, match=r"Wrong.hw_classification = 3: not a"):
        hwclass.classification_of(Wrong)


# -- runs --------------------------------------------------------------------------------
def test_a_class_with_a_wrong_classification_stops_the_run_with_one_line(tmp_path):
    test = tmp_path / "test_wrong.py"
    test.write_text(
        "import unittest\n\n\nclass Wrong(unittest.TestCase):\n"
        "    hw_classification = 'gpu'\n\n    def test_it(self):\n        pass\n"
    )
    env = {"PYTHONPATH": str(ROOT), hwclass.ENV: "GENERIC,CPU"}
    done = python(
        "-m", "pytest", "-p", "no:cacheprovider", str(test), cwd=tmp_path, env=env, timeout=120
    )
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert "test_wrong.py::Wrong::test_it: test_wrong.Wrong.hw_classification = 'gpu': not a" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_harness_run_skips_what_the_cell_does_not_count_naming_the_class(tmp_path):
    done = harness_cli("run", "cpu-1rank", "--matrix", str(ROOT / "matrix.toml"), "--",
                       str(CLASSES), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    got = outcomes(tmp_path / "results" / "cpu-1rank" / "junit.xml")
    passed = sorted(name for name, out in got.items() if out == "passed")
    assert passed == ["test_cpu", "test_generic", "test_unclassified"]
    assert got["test_accelerator"].startswith(
        "hw class ACCELERATOR is not counted on cpu-1rank (it counts GENERIC, CPU;"
    )
    assert got["test_cuda"].startswith("hw class CUDA is not counted on cpu-1rank")


def test_harness_run_takes_another_filter_or_none(tmp_path):
    matrix = str(ROOT / "matrix.toml")
    done = harness_cli("run", "cpu-1rank", "--matrix", matrix, "--hw-class", "accelerator,cuda",
                       "--", str(CLASSES), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    got = outcomes(tmp_path / "results" / "cpu-1rank" / "junit.xml")
    skipped = sorted(name for name, out in got.items() if out != "passed")
    assert skipped == ["test_cpu", "test_generic"]
    assert "(it counts ACCELERATOR, CUDA;" in got["test_generic"]

    done = harness_cli("run", "cpu-1rank", "--matrix", matrix, "--hw-class", "all",
                       "--", str(CLASSES), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    got = outcomes(tmp_path / "results" / "cpu-1rank" / "junit.xml")
    assert set(got.values()) == {"passed"} and len(got) == 6


def test_a_wrong_class_name_is_exit_2_naming_the_option(tmp_path):
    done = harness_cli("run", "cpu-1rank", "--matrix", str(ROOT / "matrix.toml"),
                       "--hw-class", "GPU", "--", str(CLASSES), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "--hw-class='GPU': unknown hardware class GPU" in done.stderr
    assert not (tmp_path / "results").exists()


def test_certify_upstream_reports_what_it_counted_and_left_out(tmp_path):
    folder = tmp_path / "tensor"
    folder.mkdir()
    # a DTensor test folder of one file, as --upstream checks
    text = CLASSES.read_text().replace(
        "import unittest\n", "import unittest\n\nimport torch.distributed.tensor  # noqa: F401\n"
    )
    (folder / "test_hw_up.py").write_text(text)
    out = tmp_path / "report"
    done = harness_cli("certify", "cpu-1rank", "--matrix", str(ROOT / "matrix.toml"),
                       "--upstream", str(folder), "--upstream-only", "--out", str(out),
                       cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["hw_classes"] == {
        "counted": ["GENERIC", "CPU"],
        "left_out": {"ACCELERATOR": 2, "CUDA": 1},
    }
    assert report["summary"]["passed"] == 3 and report["summary"]["skipped"] == 3
    assert "hw classes counted: GENERIC, CPU (and unclassified tests); left out: " in done.stdout
    assert "left out: 2 ACCELERATOR, 1 CUDA" in done.stdout


# -- a declared accelerator's device type under instantiate_device_type_tests -------------
def test_on_a_declared_accelerator_the_class_is_its_device_and_backend(tmp_path):
    done = harness_cli("run", "acme-2card", "--matrix", str(ACME / "matrix.toml"), "--",
                       str(DATA / "test_device_of_the_cell.py"), cwd=tmp_path,
                       extra_path=ACME)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = outcomes(tmp_path / "results" / "acme-2card" / "junit.xml")
    # the one class made is acme's device type (cpu), its group on acme's backend (acmeccl)
    assert got == {
        "test_device_backend_and_mesh_cpu": "passed",
        "test_device_agnostic": got["test_device_agnostic"],
    }
    assert got["test_device_agnostic"].startswith(
        "hw class GENERIC is not counted on acme-2card (it counts ACCELERATOR;"
    )


def test_except_cpu_keeps_a_declared_accelerators_own_device_type(tmp_path):
    """widget's plugin adds a device type (torch's PrivateUse1, renamed), as a vendor's does;
    every rank makes the class, and its device and device_type are widget's."""
    args = ("--matrix", str(DATA / "matrix.toml"), "--", str(DATA / "test_except_cpu.py"))
    done = harness_cli("run", "widget-2card", *args, cwd=tmp_path, extra_path=DATA)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = outcomes(tmp_path / "results" / "widget-2card" / "junit.xml")
    assert got == {"test_device_type_widget": "passed"}
    junit = (tmp_path / "results" / "widget-2card" / "junit.xml").read_text()
    assert 'test_except_cpu.OnTheAcceleratorPRIVATEUSE1" name="test_device_type_widget"' in junit
    # the same file on a cpu cell: except_for="cpu" leaves nothing to run
    done = harness_cli("run", "cpu-2rank", "--matrix", str(ROOT / "matrix.toml"), "--",
                       str(DATA / "test_except_cpu.py"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 5, done.stdout[-2000:]  # pytest: no tests collected


def test_an_accelerator_cell_makes_no_class_for_the_host_cpu():
    """A cuda cell sets PYTORCH_TESTING_DEVICE_ONLY_FOR=cuda: on a host with a CPU and
    a GPU, its classes are the GPU's only (here, with no GPU, none at all)."""
    code = (
        "import runpy, sys; g = runpy.run_path(sys.argv[1]); "
        "print(sorted(k for k in g if k.startswith('OnTheCellsDevice')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    made = {}
    for device in ("cuda", "cpu"):
        done = subprocess.run(
            [sys.executable, "-c", code, str(DATA / "test_device_of_the_cell.py")],
            capture_output=True,
            text=True,
            env={**env, "PYTORCH_TESTING_DEVICE_ONLY_FOR": device},
            timeout=120,
            check=True,
        )
        made[device] = done.stdout.strip().splitlines()[-1]
    assert made == {"cuda": "[]", "cpu": "['OnTheCellsDeviceCPU']"}
