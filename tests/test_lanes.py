"""`pytest -n N` with the kit: tests with ranks run on one worker at a time, the rest beside them.

The scheduler (harness.lanes) is driven here as xdist drives it, with stand-in
workers, and then for real: a file with two rank classes and a LocalTensor class
under `pytest -n 2`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import lanes

pytest.importorskip("xdist")

RANKED = ["t.py::RanksA::test_1", "t.py::RanksA::test_2", "t.py::RanksB::test_1"]
ONE = ["t.py::Local::test_1", "t.py::Local::test_2", "t.py::Plain::test_1", "t.py::test_free"]
COLLECTION = [RANKED[0], ONE[0], RANKED[1], ONE[1], RANKED[2], ONE[2], ONE[3]]


class Worker:
    """What the scheduler sees of an xdist worker."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.queue: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True

    def __repr__(self) -> str:
        return self.gateway.id


def scheduler(folder: Path | None, workers: list[Worker], collection=COLLECTION, rank_workers=1):
    config = SimpleNamespace(
        getvalue=lambda name: {"tx": [f"{len(workers)}*popen"]}[name],
        option=SimpleNamespace(loadscopereorder=False),
    )
    sched = lanes.make_scheduler(config, None, str(folder) if folder else "", rank_workers)
    for worker in workers:
        sched.add_node(worker)
    for worker in workers:
        sched.add_node_collection(worker, collection)
    sched.schedule()
    return sched


def run_to_the_end(sched, workers: list[Worker], collection=COLLECTION, rank_workers=1):
    """Complete one test at a time, taking turns between workers; at every step at
    most ``rank_workers`` workers may hold unfinished rank tests. Returns test -> worker."""
    ran: dict[str, str] = {}
    ranked_ids = set(RANKED)
    for _ in range(100):
        busy = [w for w in workers if w.queue]
        if not busy:
            break
        for worker in busy:
            holding = {
                w.gateway.id
                for w in workers
                if any(collection[i] in ranked_ids for i in w.queue)
                or any(
                    not done and nodeid in ranked_ids
                    for unit in sched.assigned_work.get(w, {}).values()
                    for nodeid, done in unit.items()
                )
            }
            assert len(holding) <= rank_workers, f"rank tests held by {holding} at once"
            index = worker.queue.pop(0)
            assert collection[index] not in ran, f"{collection[index]} ran twice"
            ran[collection[index]] = worker.gateway.id
            sched.mark_test_complete(worker, index)
    assert not any(w.queue for w in workers)
    return ran


@pytest.fixture
def lane_files(tmp_path: Path) -> Path:
    (tmp_path / "gw0.json").write_text(json.dumps({"ranks": RANKED}))
    return tmp_path


def test_rank_tests_never_run_on_two_workers_at_once_and_the_rest_run_beside(lane_files):
    workers = [Worker("gw0"), Worker("gw1")]
    sched = scheduler(lane_files, workers)
    ran = run_to_the_end(sched, workers)
    assert sorted(ran) == sorted(COLLECTION)
    assert sched.tests_finished
    assert {ran[t] for t in ONE} - {ran[RANKED[0]]}, "no one-core test ran beside the rank tests"
    assert ran["t.py::Local::test_1"] == ran["t.py::Local::test_2"], "a class was split"


def test_more_rank_workers_when_asked(lane_files):
    workers = [Worker("gw0"), Worker("gw1"), Worker("gw2")]
    sched = scheduler(lane_files, workers, rank_workers=2)
    first = {w.gateway.id: [COLLECTION[i] for i in w.queue] for w in workers}
    with_ranks = [w for w, tests in first.items() if set(tests) & set(RANKED)]
    assert len(with_ranks) == 2, first  # RanksA and RanksB side by side
    ran = run_to_the_end(sched, workers, rank_workers=2)
    assert sorted(ran) == sorted(COLLECTION)


def test_without_a_lane_file_every_test_counts_as_one_with_ranks(tmp_path):
    workers = [Worker("gw0"), Worker("gw1")]
    sched = scheduler(tmp_path / "nothing-here", workers)
    assert workers[1].shutting_down and not workers[1].queue
    assert sorted(run_to_the_end(sched, workers)) == sorted(COLLECTION)


def test_a_crashed_workers_rank_tests_go_to_another(lane_files):
    workers = [Worker("gw0"), Worker("gw1")]
    sched = scheduler(lane_files, workers)
    holder = next(w for w in workers if any(COLLECTION[i] in RANKED for i in w.queue))
    other = workers[1 - workers.index(holder)]
    other.shutting_down = False
    holder.queue.clear()
    crashed = sched.remove_node(holder)
    assert crashed in RANKED
    ran = run_to_the_end(sched, [other])
    assert set(RANKED) <= set(ran), "the crashed worker's rank tests were lost"


def test_lane_of_a_class():
    from harness import DTensorTestBase, LocalDTensorTestBase

    class Ranked(DTensorTestBase):
        pass

    class Local(LocalDTensorTestBase):
        pass

    assert lanes.lane_of(Ranked) == lanes.RANKS
    assert lanes.lane_of(Local) == lanes.ONE
    assert lanes.lane_of(None) == lanes.ONE
    assert lanes.lane_of(int) == lanes.ONE


FILE = """
import torch
from harness import DTensorTestBase, LocalDTensorTestBase, with_comms
from torch.distributed.tensor import Shard, distribute_tensor

class RanksA(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    def check_sum(self):
        mesh = self.build_device_mesh()
        d = distribute_tensor(torch.arange(8.0), mesh, [Shard(0)])
        self.assertEqual(d.full_tensor().sum().item(), 28.0)

    @with_comms
    def test_1(self):
        self.check_sum()

    @with_comms
    def test_2(self):
        self.check_sum()

class RanksB(RanksA):
    pass

class Local(LocalDTensorTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_1(self):
        mesh = self.build_device_mesh()
        d = distribute_tensor(torch.arange(8.0), mesh, [Shard(0)])
        self.assertEqual(d.full_tensor().sum().item(), 28.0)
"""

CONFTEST = """
import json, os, time, pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = time.monotonic()
    yield
    with open(os.environ["LANES_LOG"], "a") as log:
        log.write(json.dumps([item.nodeid, os.environ.get("PYTEST_XDIST_WORKER"),
                              start, time.monotonic()]) + "\\n")
"""


def test_pytest_n_2_keeps_rank_tests_to_one_worker_at_a_time(tmp_path):
    (tmp_path / "test_lanes_file.py").write_text(textwrap.dedent(FILE))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LANES_LOG": str(log)}
    env.pop("HARNESS_MODE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 5, calls
    ranked = [c for c in calls if "::Ranks" in c[0]]
    for a in ranked:
        for b in ranked:
            if a[1] != b[1]:
                assert a[3] <= b[2] or b[3] <= a[2], f"{a} and {b} ran at once"
    first_ranked_worker = next(c[1] for c in calls if "RanksA" in c[0])
    local_worker = next(c[1] for c in calls if "::Local::" in c[0])
    assert local_worker != first_ranked_worker, "the LocalTensor class waited for the ranks"
