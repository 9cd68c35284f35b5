"""bench/ops_baseline.py: PyTorch's sweep variants found by what the file defines, and a
comparison with an empty side refused (no real sweep: tiny stand-ins for PyTorch's file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from processes import alive  # tests/ is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import ops_baseline  # noqa: E402 (bench/ is not a package)

BENCH = Path(__file__).resolve().parent.parent / "bench" / "ops_baseline.py"

# A stand-in for PyTorch's instantiate_device_type_tests: the CPU class gets one test per
# op in OPS (the file's own list), passing, as PyTorch's sweep names them.
STUB = """
import unittest

OPS = {ops!r}


def instantiate_device_type_tests(cls, scope, only_for=()):
    def passes(self):
        pass

    tests = {{f"test_dtensor_op_db_{{op}}_cpu_float32": passes for op in OPS}}
    name = cls.__name__ + "CPU"
    scope[name] = type(name, (unittest.TestCase,), tests)
"""

CURRENT = """
class TestDTensorOps(unittest.TestCase):  # the shared code: not instantiated
    def run_opinfo_test(self, dtype, op):
        pass


class TestMultiThreadedDTensorOps(TestDTensorOps):
    def test_dtensor_op_db(self, dtype, op):
        pass


class TestLocalDTensorOps(TestDTensorOps):
    def test_dtensor_op_db(self, dtype, op):
        pass


class TestUnbackedDTensorOps(TestDTensorOps):  # another method: not the sweep
    def test_unbacked_dtensor_op_db(self, dtype, op):
        pass


instantiate_device_type_tests(TestMultiThreadedDTensorOps, globals(), only_for=("cpu",))
instantiate_device_type_tests(TestLocalDTensorOps, globals(), only_for=("cpu",))
instantiate_device_type_tests(TestUnbackedDTensorOps, globals(), only_for=("cpu",))
"""

OLD = """
class TestDTensorOps(unittest.TestCase):
    def test_dtensor_op_db(self, dtype, op):
        pass


instantiate_device_type_tests(TestDTensorOps, globals(), only_for=("cpu",))
"""


def _upstream(tmp_path: Path, body: str, ops: tuple[str, ...] = ("abs",)) -> Path:
    file = tmp_path / "upstream" / "test_dtensor_ops.py"
    file.parent.mkdir()
    file.write_text(STUB.format(ops=list(ops)) + textwrap.dedent(body))
    return file


def _kit_junit(tmp_path: Path, ops: tuple[str, ...]) -> Path:
    cases = "".join(
        f'<testcase classname="harness.conformance.test_ops.OpsTest" name="test_{op}" time="0.1"/>'
        for op in ops
    )
    junit = tmp_path / "kit.xml"
    junit.write_text(f'<testsuites><testsuite name="kit">{cases}</testsuite></testsuites>')
    return junit


def _bench(tmp_path, file, kit, *args):
    out = tmp_path / "out"
    code = ops_baseline.main([str(file), "--out", str(out), "--kit-junit", str(kit), *args])
    return code, out


def test_the_sweep_classes_are_found_by_what_the_file_defines(tmp_path):
    current = _upstream(tmp_path, CURRENT)
    assert ops_baseline.sweep_classes(current) == [
        "TestMultiThreadedDTensorOps",
        "TestLocalDTensorOps",
    ]
    old = tmp_path / "old.py"
    old.write_text(STUB.format(ops=["abs"]) + OLD)
    assert ops_baseline.sweep_classes(old) == ["TestDTensorOps"]


def test_each_variant_is_compared_side_by_side(tmp_path, capsys):
    file = _upstream(tmp_path, CURRENT, ops=("abs", "neg"))
    code, out = _bench(tmp_path, file, _kit_junit(tmp_path, ("abs", "neg")), "--ops", "abs,neg")
    assert code == 0, capsys.readouterr()
    report = json.loads((out / "ops.json").read_text())
    assert report["variants"] == ["TestMultiThreadedDTensorOps", "TestLocalDTensorOps"]
    assert report["upstream"]["TestLocalDTensorOps"] == {"abs": "pass", "neg": "pass"}
    assert report["differences"] == {"TestMultiThreadedDTensorOps": [], "TestLocalDTensorOps": []}
    table = (out / "ops.md").read_text()
    assert (
        "PyTorch's TestMultiThreadedDTensorOps | PyTorch's TestLocalDTensorOps | the kit" in table
    )


@pytest.mark.parametrize(
    ("body", "ops", "kit_ops", "message"),
    [
        (  # the file's classes hold no sweep test: the old bench's "0 differences"
            CURRENT,
            (),
            ("abs", "neg"),
            "PyTorch's TestMultiThreadedDTensorOps collected or ran no test (pytest exit 5",
        ),
        (
            CURRENT,
            ("abs",),
            ("abs", "neg"),
            "PyTorch's TestMultiThreadedDTensorOps has no test for op 'neg'",
        ),
        (CURRENT, ("abs", "neg"), (), "the kit collected or ran no test"),
        ("", (), ("abs",), "defines no op sweep: no class with a test_dtensor_op_db method"),
    ],
    ids=["upstream-empty", "upstream-op-missing", "kit-empty", "no-sweep-class"],
)
def test_a_side_with_nothing_to_compare_stops_the_bench(
    tmp_path, capsys, body, ops, kit_ops, message
):
    file = _upstream(tmp_path, body, ops=ops)
    code, out = _bench(tmp_path, file, _kit_junit(tmp_path, kit_ops), "--ops", "abs,neg")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not (out / "ops.json").exists()  # no comparison written


def test_a_variant_the_file_lacks_is_refused(tmp_path, capsys):
    file = _upstream(tmp_path, CURRENT)
    code, _ = _bench(tmp_path, file, _kit_junit(tmp_path, ("abs",)), "--variant", "TestDTensorOps")
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "TestMultiThreadedDTensorOps, TestLocalDTensorOps" in line


HANGS = (
    """
import os
import time
import unittest


def instantiate_device_type_tests(cls, scope, only_for=()):
    def hangs(self):
        with open(os.environ["PID_FILE"], "w") as out:
            out.write(str(os.getpid()))
        time.sleep(600)

    name = cls.__name__ + "CPU"
    scope[name] = type(name, (unittest.TestCase,), {"test_dtensor_op_db_abs_cpu_float32": hangs})
"""
    + OLD
)


def test_a_terminated_bench_leaves_no_process_behind(tmp_path):
    """`timeout` sends TERM: the side that is running goes with the bench."""
    file = tmp_path / "upstream" / "test_dtensor_ops.py"
    file.parent.mkdir()
    file.write_text(HANGS)
    pid_file = tmp_path / "pid"
    bench = subprocess.Popen(
        [sys.executable, str(BENCH), str(file), "--out", str(tmp_path / "out"), "--ops", "abs",
         "--kit-junit", str(_kit_junit(tmp_path, ("abs",)))],
        env={**os.environ, "PID_FILE": str(pid_file)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and bench.poll() is None, "the side never started"
            time.sleep(0.2)
        side = int(pid_file.read_text())
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=30) != 0
        deadline = time.monotonic() + 10
        while alive(side) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(side), f"PyTorch's side (pid {side}) outlived the bench"
    finally:
        bench.kill()
        bench.wait()


def test_an_op_pytorchs_side_ran_but_was_not_asked_for_is_not_compared():
    """pytest's -k ignores case: asking PyTorch's side for ``T`` runs ``t`` too."""
    run = ops_baseline.suite.Run("upstream-X", "f.py", [])
    name = "test_dtensor_ops.py::TestXCPU::" + ops_baseline.UPSTREAM_PREFIX
    run.outcomes = {
        name + "T" + ops_baseline.UPSTREAM_SUFFIX: "pass",
        name + "t" + ops_baseline.UPSTREAM_SUFFIX: "pass",
    }
    by_formatted = {"T": "T", "t": "t"}
    assert ops_baseline.upstream_verdicts(run, by_formatted, {"T"}) == {"T": "pass"}
    assert ops_baseline.upstream_verdicts(run, by_formatted) == {"T": "pass", "t": "pass"}
