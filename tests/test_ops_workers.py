"""The ops capability's workers: results in test order, a dead or stuck worker fails only its op."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import alive  # tests/ is on sys.path

from harness.conformance import _ops_workers
from harness.conformance._ops_workers import OpsWorkers
from harness.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def scripted(conn, env, world_size, device_type, index, log, budget_mb):
    """A worker that answers by the op's name: crash, hang, print, or pass."""
    _ops_workers.start_worker(env, log)
    while True:
        key = conn.recv()
        if key is None:
            return
        if key.startswith("crash"):
            print("about to crash", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        if key.startswith("hang"):
            time.sleep(600)
        if key.startswith("slow"):  # longer than the timeout, but alive all along
            for _ in range(8):
                time.sleep(0.5)
                conn.send(("tick", key))
        conn.send(("done", key, "passed", f"pid {os.getpid()}", 0.0))


def test_a_crash_or_a_hang_fails_that_op_only_and_nothing_is_left(monkeypatch):
    """A slow op that keeps finishing samples is not a hang."""
    monkeypatch.setenv(_ops_workers.WORKERS_ENV, "2")
    keys = ["a", "crash", "b", "hang", "c", "slow", "d"]
    workers = OpsWorkers(keys, world_size=4, device_type="cpu", timeout=3, target=scripted)
    got = {}
    try:
        for key in keys:
            got[key] = workers.result(key)
        pids = [w.process.pid for w in workers.workers]
    finally:
        workers.close()
    assert {k: r.status for k, r in got.items()} == {
        "a": "passed",
        "crash": "failed",
        "b": "passed",
        "hang": "failed",
        "c": "passed",
        "slow": "passed",
        "d": "passed",
    }
    assert "killed by SIGSEGV" in got["crash"].text
    assert "about to crash" in got["crash"].text  # the worker's last output comes with it
    assert "no sample or layout finished in 3 s" in got["hang"].text
    assert len({got[k].text for k in "abcd"}) >= 2  # two workers shared the work
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    assert not os.path.exists(workers.logs)


def test_an_op_asked_for_out_of_order_is_run_next(monkeypatch):
    monkeypatch.setenv(_ops_workers.WORKERS_ENV, "1")
    workers = OpsWorkers(["a", "b"], world_size=2, device_type="cpu", timeout=30, target=scripted)
    try:
        assert workers.result("z").status == "passed"  # not planned: run anyway
        assert [workers.result(k).status for k in ("b", "a")] == ["passed", "passed"]
    finally:
        workers.close()


@pytest.mark.parametrize("raw", ["0", "two", "-1"])
def test_a_bad_worker_count_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv(_ops_workers.WORKERS_ENV, raw)
    with pytest.raises(UsageError, match=f"{_ops_workers.WORKERS_ENV}='{raw}'"):
        _ops_workers.worker_count(10)


@pytest.mark.parametrize(
    ("var", "value"),
    [("HARNESS_OPS_WORKERS", "two"), ("HARNESS_OPS_ON", "gpu"), ("HARNESS_OPS_WORKER_MB", "0")],
)
def test_a_bad_ops_setting_stops_a_run_before_anything_starts(var, value):
    """One line naming the variable, exit 2: not a collection error per rank later."""
    env = {**os.environ, var: value, "HARNESS_OPS": "add"}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "cpu-2rank"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{var}='{value}'" in lines[0], done.stderr


def test_a_bad_ops_setting_is_a_usage_error_under_plain_pytest(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HARNESS_OPS_ON": "gpu"},
    )
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "HARNESS_OPS_ON='gpu': use one of workers, ranks." in done.stderr


def test_the_worker_count_defaults_to_the_cores_and_never_exceeds_the_ops(monkeypatch):
    monkeypatch.delenv(_ops_workers.WORKERS_ENV, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert _ops_workers.worker_count(100) == min(cores, 8)
    assert _ops_workers.worker_count(1) == 1


def retiring(conn, env, world_size, device_type, index, log, budget_mb):
    """A worker that, as one past its memory budget does, leaves after every op."""
    _ops_workers.start_worker(env, log)
    key = conn.recv()
    if key is not None:
        conn.send(("done", key, "passed", f"pid {os.getpid()}", 0.0))
        conn.send(("retire", key))


def test_a_worker_past_its_memory_budget_is_replaced_and_no_op_is_lost(monkeypatch):
    """Each worker leaves after one op, with another in hand: every op still has its
    verdict, from a fresh worker each."""
    monkeypatch.setenv(_ops_workers.WORKERS_ENV, "2")
    keys = ["a", "b", "c", "d", "e"]
    workers = OpsWorkers(keys, world_size=2, device_type="cpu", timeout=60, target=retiring)
    try:
        got = {key: workers.result(key) for key in keys}
    finally:
        workers.close()
    assert {k: r.status for k, r in got.items()} == dict.fromkeys(keys, "passed"), got
    assert len({r.text for r in got.values()}) == len(keys)  # one worker per op
    assert workers.retired >= len(keys) - 1  # the last may be stopped before it says so


def test_the_budget_counts_what_a_worker_allocates():
    import torch

    before = _ops_workers.anonymous_mb()
    held = torch.ones(64 * 2**20 // 4)  # 64 MB, written
    assert _ops_workers.anonymous_mb() - before >= 60
    del held


_FORKS_HERE = """
import threading
from harness.ranks import spawn
print(spawn.sharing_context(None, "cpu").get_start_method())
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()
print(spawn.sharing_context(None, "cpu").get_start_method())
stop.set()
"""


def test_cpu_workers_fork_from_the_loaded_process_only_while_it_has_one_thread():
    """Forked, they share the op database already loaded; beside a thread, the fork server."""
    done = subprocess.run(
        [sys.executable, "-c", _FORKS_HERE],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "HARNESS_START_METHOD"},
    )
    assert done.stdout.split() == ["fork", "forkserver"], done.stdout + done.stderr
