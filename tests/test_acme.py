"""An accelerator the kit never heard of, declared only as data, works end to end.

tests/data/acme/matrix.toml declares ``acme`` (device cpu, backend ``acmeccl``,
unit card, plugin ``acme_ccl``); acme_ccl.py registers ``acmeccl`` with
``dist.Backend.register_backend`` (gloo underneath), as a vendor's plugin
registers its collective library. Nothing in harness/ names any of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import harness_cli  # tests/ is on sys.path
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "acme"
MATRIX = DATA / "matrix.toml"


def harness(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    """`python -m harness` with the acme plugin importable."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(DATA), os.environ.get("PYTHONPATH", "")]),
        "CI": "true",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return harness_cli.harness(*args, cwd=cwd, env=env, timeout=timeout)


def test_the_kit_names_no_acme():
    for path in (ROOT / "harness").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = re.search(r"acmeccl|acme_ccl|acme-\d|accelerators\.acme|\"acme\"", text)
        assert found is None, f"{path} names the test accelerator: {found and found.group()}"


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acme")
    log = tmp / "groups.log"
    out = tmp / "report"
    done = harness(
        "certify",
        "acme-2card",
        "--matrix",
        str(MATRIX),
        "--out",
        str(out),
        cwd=tmp,
        env={"ACME_CCL_LOG": str(log), "HARNESS_OPS": "add,cdist"},  # ops: two, not 702
    )
    return done, out, log


def test_its_cell_passes_the_conformance_suite_and_certifies(certified):
    done, out, log = certified
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "pass"
    passed = sum(c["passed"] for c in report["capabilities"])
    assert passed >= 40, report["summary"]
    # every rank made its groups on the plugin's backend, not on plain gloo
    ranks = {line.split()[1] for line in log.read_text().splitlines()}
    assert ranks == {"0", "1"}


def test_the_report_names_its_backend_device_plugin_and_version(certified):
    done, out, _ = certified
    report = json.loads((out / "report.json").read_text())
    assert (report["cell"]["backend"], report["cell"]["device"]) == ("acmeccl", "cpu")
    accel = report["fingerprint"]["accelerator"]
    assert accel == {
        "name": "acme",
        "source": "matrix",
        "device": "cpu",
        "backend": "acmeccl",
        "plugins": {"acme_ccl": "0.3.1"},
    }
    assert report["fingerprint"]["torch"]["backends"]["acmeccl"] is True
    assert "acme_ccl" in (out / "report.md").read_text()


def test_its_sim_cell_runs_on_the_plugin_device(tmp_path):
    from harness import compat

    missing = compat.local_tensor_missing()
    if missing:  # torch < 2.10: the sim cell skips as a whole, naming this
        pytest.skip(missing)
    done = harness(
        "run",
        "acme-4sim",
        "--matrix",
        str(MATRIX),
        "--",
        "-q",
        "-k",
        "CollectivesTest and test_all_reduce_sum",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
    junit = (tmp_path / "results" / "acme-4sim" / "junit.xml").read_text()
    assert 'name="acme-4sim"' in junit


def test_torchrun_ranks_import_the_plugin_and_use_its_backend(tmp_path):
    log = tmp_path / "groups.log"
    done = harness(
        "run",
        "acme-2card",
        "--matrix",
        str(MATRIX),
        "--launcher",
        "torchrun",
        "--",
        "-k",
        "CollectivesTest and test_all_reduce_sum",
        cwd=tmp_path,
        env={"ACME_CCL_LOG": str(log)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pids_ranks = {tuple(line.split()[:2]) for line in log.read_text().splitlines()}
    assert {rank for _, rank in pids_ranks} == {"0", "1"}
    assert len({pid for pid, _ in pids_ranks}) == 2  # two rank processes, one group each
    junit = (tmp_path / "results" / "acme-2card" / "junit.xml").read_text()
    assert "test_all_reduce_sum" in junit and "<failure" not in junit


def test_doctor_says_the_plugin_imports_and_the_backend_is_there(tmp_path):
    done = harness("doctor", "--json", "--matrix", str(MATRIX), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    acme = report["accelerators"]["acme"]
    assert acme["plugins"] == {"acme_ccl": "0.3.1"}
    assert (acme["device_type"], acme["backend_available"]) == ("known", True)
    assert report["torch"]["backends"]["acmeccl"] is True
    assert "acme-2card" in report["cells"]["runnable"]


BROKEN = {
    "plugin that does not import": (
        ('plugin = "acme_ccl"', 'plugin = "acme_ccl_missing"'),
        ["'acme_ccl_missing' did not import", "ModuleNotFoundError"],
    ),
    "backend still unregistered after the plugin": (
        ('backend = "acmeccl"', 'backend = "acmeccl2"'),
        ["backend 'acmeccl2' is not available after importing acme_ccl", "register_backend"],
    ),
    "device type torch does not know": (
        ('device = "cpu"', 'device = "npu"'),
        ["torch does not know device type 'npu'", "plugin"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_accelerator_is_one_line_exit_2_before_any_rank(case, tmp_path):
    (old, new), words = BROKEN[case]
    text = MATRIX.read_text()
    assert old in text
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(text.replace(old, new))
    log = tmp_path / "groups.log"
    done = harness(
        "run", "acme-2card", "--matrix", str(matrix), cwd=tmp_path, env={"ACME_CCL_LOG": str(log)}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), done.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not log.exists() and not (tmp_path / "results").exists()  # nothing started


def test_nox_sessions_come_from_its_matrix(tmp_path):
    pytest.importorskip("nox")
    (tmp_path / "noxfile.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from harness.nox_sessions import define_sessions\n"
        f"define_sessions({str(MATRIX)!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sessions = {s["name"]: s for s in json.loads(done.stdout)}
    assert set(sessions) == {
        *(f"{verb}-acme-{cell}" for verb in ("test", "certify") for cell in ("1card", "2card")),
        "test-acme-4sim",
        "certify-acme-4sim",
        "build-acme",
    }
    assert sessions["test-acme-2card"]["tags"] == ["test", "acme", "native", "card", "ws2"]


# -- a device with a kernel bug fails exactly its broken op ---------------------------

KERNELS = DATA / "kernels.toml"
#: neg: the plugin's kernel is wrong on its shards; abs: right everywhere; argmax: on
#: torch 2.13 DTensor's own failure at world size 2 (PyTorch's world-size-4 sweep passes it)
KERNEL_OPS = "neg,abs,argmax"


def _certify_ops(
    tmp: Path, bad: bool, name: str = "", env: dict | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp / (name or ("bad" if bad else "fixed"))
    done = harness(
        "certify",
        "acme-2card",
        "--matrix",
        str(KERNELS),
        "--out",
        str(out),
        "--ops",
        KERNEL_OPS,
        "--",
        str(ROOT / "harness" / "conformance" / "test_ops.py"),
        cwd=tmp,
        env={
            "ACME_BAD_NEG": "1" if bad else "0",
            "HARNESS_REFERENCE_CACHE": str(tmp / "cache"),
            **(env or {}),
        },
    )
    report = (
        json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    )
    return done, report


def _ops_by_outcome(report: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for cap in report["capabilities"]:
        for test in cap["tests"]:
            if test.get("op"):
                found.setdefault(test["outcome"], set()).add(test["op"])
    return found


@pytest.mark.slow  # a full certification of the declared cell
def test_a_wrong_kernel_on_shards_fails_exactly_its_op_and_dtensors_own_stay_its_own(tmp_path):
    from harness import compat

    missing = compat.local_tensor_missing()
    if missing:  # the live reference and the ops workers need LocalTensor
        pytest.skip(missing)
    done, report = _certify_ops(tmp_path, bad=True)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    ops = _ops_by_outcome(report)
    assert ops.get("failed") == {"neg"}, ops  # the broken kernel's op, and no other
    assert "abs" in ops["passed"]
    (neg,) = [t for c in report["capabilities"] for t in c["tests"] if t.get("op") == "neg"]
    assert "neg sample 0 with input placements [S(" in neg["details"]  # a shard, not plain
    assert "-- --harness-ops neg -k 'OpsTest and test_neg'" in done.stdout  # its rerun runs it
    section = report["reference"]
    assert section["sha256"] and (tmp_path / "bad" / "reference.toml").is_file()
    assert "neg" in section.get("failed_only_here", []) + section.get("unknown", [])
    assert "neg" not in section.get("unknown", [])  # the reference ran it, without the plugin
    own = ops.get("own", set())
    if compat.torch_version() == (2, 13):
        assert own == {"argmax"}, ops  # DTensor's own at world size 2: not the vendor's
        assert "FAIL (1 passed, 1 failed, 1 DTensor's own" in done.stdout

    fixed, again = _certify_ops(tmp_path, bad=False)
    assert fixed.returncode == 0, fixed.stdout[-3000:] + fixed.stderr[-3000:]
    assert again["verdict"] == "pass" and "failed" not in _ops_by_outcome(again)
    assert _ops_by_outcome(again).get("own", set()) == own  # the same DTensor's own
    verify = harness("report", "verify", str(tmp_path / "fixed"), "--integrity-only", cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.slow  # a full certification of the declared cell
def test_without_a_record_the_reference_is_computed_live_without_the_plugin(tmp_path):
    """A torch and world size no record holds: the ops the cell failed run again on CPU
    under LocalTensor with no plugin; the bad kernel's op still fails the cell."""
    from harness import compat

    missing = compat.local_tensor_missing()
    if missing:
        pytest.skip(missing)
    bare = tmp_path / "torch-x.toml"  # a record holding no world size
    bare.write_text('schema = 2\ntorch = "x"\n')
    env = {"HARNESS_OPS_EXPECTATIONS": str(bare)}
    done, report = _certify_ops(tmp_path, bad=True, name="live", env=env)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert _ops_by_outcome(report).get("failed") == {"neg"}
    section = report["reference"]
    assert section["source"] == "live" and "neg" in section["failed_only_here"]
    cached = list((tmp_path / "cache").glob("*-ws2-*.toml"))
    assert len(cached) == 1 and "neg" in cached[0].read_text()  # the answers are kept
    if compat.torch_version() == (2, 13):
        assert _ops_by_outcome(report).get("own") == {"argmax"}
    again, second = _certify_ops(tmp_path, bad=True, name="cached", env=env)
    assert second["reference"]["source"] == "cache"  # nothing computed twice
    assert _ops_by_outcome(second).get("failed") == {"neg"}


def test_the_live_reference_never_loads_the_cells_plugins(tmp_path, monkeypatch):
    from harness import compat, references

    missing = compat.local_tensor_missing()
    if missing:
        pytest.skip(missing)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(DATA), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_PLUGINS", "acme_ccl,acme_kernels")  # as the cell's run has it
    monkeypatch.setenv("HARNESS_DEVICE", "cpu")
    found = references.live(["neg", "abs"], 2, timeout=300)
    assert found == {"neg": ["passed", ""], "abs": ["passed", ""]}, found
