"""The ops capability's workers: the op database split over processes, each under LocalTensor.

An op's check needs no communication between ranks that LocalTensor cannot
simulate exactly (a 1-D mesh, Replicate and Shard layouts, gathers back to a
full tensor), and PyTorch's own sweep fakes its collectives too (its threads
base). So each worker plays every rank of the cell's world size in one process,
on the cell's device type: DTensor's sharding propagation runs once per op, not
once per rank, and the workers run side by side on as many cores as the host
has. The backend's real collectives are the other capabilities' job.

The parent asks for results in test order (:meth:`OpsWorkers.result`); every
worker keeps two ops in hand so none waits between tests. A worker that dies, or
finishes no sample or layout within the timeout (an op may have thousands), fails the op it
was running, with why, and is replaced. The timeout counts only the time the
worker was not kept waiting for a CPU (:mod:`harness.ranks.clock`): on a loaded
host a slow op is slow, not hung.

Memory: on a CPU cell the workers are forked from this process, which holds torch
and the op database already, and share those pages (:func:`spawn.sharing_context`);
a worker grown by more than ``HARNESS_OPS_WORKER_MB`` since it started retires after
its op, and a fresh fork takes its place, so the sweep's peak stays near one process's.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import shutil
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from harness.conformance import _ops
from harness.ranks.clock import Clock
from harness.testcase import TestCase

WORKERS_ENV = _ops.WORKERS_ENV
WORKER_MB_ENV = _ops.WORKER_MB_ENV
_MAX_DEFAULT = 8
_IN_HAND = 2  # ops sent to a worker ahead of its answers
#: A worker says it is alive at most this often (s): a pipe write per layout was 4% of its time.
TICK_EVERY_S = 1.0


def worker_count(ops: int) -> int:
    """``HARNESS_OPS_WORKERS``, else the usable cores (at most 8), never more than ops."""
    wanted = _ops.workers_wanted()
    if wanted is None:
        wanted = min(len(os.sched_getaffinity(0)), _MAX_DEFAULT)
    return max(1, min(wanted, ops))


@dataclass(frozen=True)
class Result:
    """One op's outcome: ``passed``, ``skipped`` (``text``: the reason) or ``failed``."""

    status: str
    text: str = ""
    seconds: float = 0.0


@dataclass
class _Worker:
    index: int
    process: Any
    conn: Any
    in_hand: deque = field(default_factory=deque)
    # The limit's seconds since its last sign of life (an op sent to an idle worker, a
    # tick, an answer), counted only while the worker is not kept waiting for a CPU.
    clock: Clock | None = None


class OpsWorkers:
    """Worker processes that run ops in the order given; results by op key."""

    def __init__(
        self,
        keys: list[str],
        *,
        world_size: int,
        device_type: str,
        timeout: float,
        preload: str | None = None,
        target: Any = None,
    ) -> None:
        self.todo: deque[str] = deque(dict.fromkeys(keys))
        self.world_size = world_size
        self.device_type = device_type
        self.timeout = timeout
        self.preload = preload  # a module the fork server imports once for every worker
        self.target = target or serve
        self.logs = tempfile.mkdtemp(prefix="harness-ops-")
        self.results: dict[str, Result] = {}
        self.workers: list[_Worker] = []
        self.size = worker_count(len(self.todo))
        self.retired = 0  # workers that left past their memory budget

    def result(self, key: str) -> Result:
        """Wait for ``key``'s outcome (asking a worker for it if nobody has)."""
        if key not in self.results and not any(key in w.in_hand for w in self.workers):
            if key in self.todo:
                self.todo.remove(key)
            self.todo.appendleft(key)
        while key not in self.results:
            self._staff()
            self._feed()
            self._collect()
        return self.results.pop(key)

    def close(self) -> None:
        """Stop every worker: asked first, killed if it does not go."""
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers.clear()
        shutil.rmtree(self.logs, ignore_errors=True)

    # -- the parent's side of the pipe ------------------------------------------

    def _staff(self) -> None:
        busy = len(self.workers)
        wanted = min(self.size, busy + len(self.todo))
        for _ in range(busy, wanted):
            used = {w.index for w in self.workers}
            self.workers.append(self._start(next(i for i in range(self.size) if i not in used)))

    def _log(self, index: int) -> str:
        """Worker ``index``'s output (a replacement appends to its predecessor's)."""
        return os.path.join(self.logs, f"worker-{index}.log")

    def _start(self, index: int) -> _Worker:
        from harness.ranks import spawn

        ctx = spawn.sharing_context(self.preload, self.device_type)
        parent_end, child_end = ctx.Pipe()
        env = dict(os.environ)
        process = ctx.Process(
            target=self.target,
            args=(
                child_end,
                env,
                self.world_size,
                self.device_type,
                index,
                self._log(index),
                _ops.worker_budget_mb(),
            ),
            name=f"harness-ops-{index}",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Worker(index, process, parent_end, clock=Clock(self.timeout))

    def _feed(self) -> None:
        for worker in self.workers:
            while len(worker.in_hand) < _IN_HAND and self.todo:
                key = self.todo.popleft()
                if not worker.in_hand:
                    worker.clock.restart()
                worker.in_hand.append(key)
                try:
                    worker.conn.send(key)
                except OSError:  # it has left (retired or died): _collect says which
                    break

    def _collect(self) -> None:
        working = [w for w in self.workers if w.in_hand]
        if not working:
            return
        for worker in working:
            worker.clock.tick([worker.process.pid])
        wait_s = min(w.clock.left() for w in working)
        ready = wait([w.conn for w in working] + [w.process.sentinel for w in working], wait_s)
        for worker in working:
            if worker.conn in ready:
                try:
                    kind, key, *outcome = worker.conn.recv()
                except (EOFError, OSError):
                    self._lost(worker, self._death(worker))
                    continue
                worker.clock.restart()
                if kind == "done":
                    worker.in_hand.popleft()
                    self.results[key] = Result(*outcome)
                elif kind == "retire":
                    self._retire(worker)
            elif worker.process.sentinel in ready:
                self._lost(worker, self._death(worker))
            elif _expired(worker):
                note = worker.clock.note()
                worker.process.kill()
                worker.process.join()
                self._lost(
                    worker,
                    f"no sample or layout finished in {self.timeout:g} s (the timeout"
                    f"{'; ' + note if note else ''}); the worker was killed",
                )

    def _death(self, worker: _Worker) -> str:
        import signal

        worker.process.join(5)
        code = worker.process.exitcode
        if code is not None and code < 0:
            why = f"the ops worker was killed by {signal.Signals(-code).name}"
        else:
            why = f"the ops worker exited with code {code}"
        tail = _tail(self._log(worker.index))
        return f"{why}; its last output:\n{tail}" if tail else why

    def _lost(self, worker: _Worker, why: str) -> None:
        """The op the worker was running fails; the ops it held go back first in line."""
        key = worker.in_hand.popleft()
        self.results[key] = Result("failed", f"{key}: {why} (pid {worker.process.pid})")
        self.todo.extendleft(reversed(worker.in_hand))
        worker.conn.close()
        self.workers.remove(worker)

    def _retire(self, worker: _Worker) -> None:
        """A worker past its memory budget has left: the ops it held go back first in line."""
        self.todo.extendleft(reversed(worker.in_hand))
        worker.process.join(5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
        self.workers.remove(worker)
        self.retired += 1


def _expired(worker: _Worker) -> bool:
    worker.clock.tick([worker.process.pid])
    return worker.clock.expired()


# -- a worker --------------------------------------------------------------------


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            return "".join(log.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def start_worker(env: dict[str, str], log: str) -> None:
    """What every worker does first: die with the run, the cell's environment, its own log."""
    from harness import lifelines
    from harness.ranks import spawn, worker

    lifelines.die_with_parent()
    spawn.forget_server_liveness()
    os.environ.clear()
    os.environ.update(env)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    worker.output_to(log)
    # Forked from a pytest run, pytest's faulthandler would bury the worker's last words
    # under the parent's stack on a crash: the log's tail is what the failure shows.
    faulthandler.disable()
    _return_freed_memory()


#: glibc's mallopt parameters, and the size from which a block is its own mapping.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_OWN_MAPPING_BYTES = 4 << 20


def _return_freed_memory() -> None:
    """Large blocks get their own mapping and freed heap is trimmed, so a freed tensor's
    memory goes back to the system. By default glibc raises its mapping threshold after
    the first large free (up to 32 MB) and keeps what it frees: one ``grid_sampler_3d``
    at world size 4 left a worker with 980 MB of its own (450 MB with this; its peak
    1,018 MB, 788 MB with this), and every op after paid for it. A no-op off glibc."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _OWN_MAPPING_BYTES)
    mallopt(_M_TRIM_THRESHOLD, _OWN_MAPPING_BYTES)


def serve(
    conn: Any,
    env: dict[str, str],
    world_size: int,
    device_type: str,
    index: int,
    log: str,
    budget_mb: int = _ops.WORKER_MB_DEFAULT,
) -> None:
    """A worker's loop: op keys in, until None.

    Out: ``("tick", key)`` while samples and layouts finish (at most every
    ``TICK_EVERY_S``; the timeout counts from the last), ``("done", key, status,
    text, seconds)``, and ``("retire", key)`` when it has grown by more than
    ``budget_mb`` (it then exits)."""
    start_worker(env, log)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"] or 1))
    from harness import compat, devices
    from harness.conformance import _ops

    if device_type != "cpu":
        count = devices.host_device_count(device_type)
        devices.bind_device(device_type, index % max(count, 1))
    ops = {_ops.op_key(op): op for op in compat.op_database()}
    case = _Checker()
    born_mb = anonymous_mb()  # the budget is for what the worker adds
    while True:
        try:
            key = conn.recv()
        except (EOFError, OSError):
            return
        if key is None:
            return
        started = time.monotonic()
        tick = _every(TICK_EVERY_S, functools.partial(conn.send, ("tick", key)))
        status, text = _run(case, ops[key], world_size, device_type, tick)
        conn.send(("done", key, status, text, time.monotonic() - started))
        if anonymous_mb() - born_mb > budget_mb:
            conn.send(("retire", key))
            return


def _every(seconds: float, call: Any) -> Any:
    """``call``, made a no-op unless ``seconds`` have passed since it last ran (or was made)."""
    last = time.monotonic()

    def maybe() -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= seconds:
            last = now
            call()

    return maybe


def anonymous_mb() -> float:
    """This process's resident memory that no file backs (MB; 0 where unknown).

    From /proc/self/statm, a few numbers (smaps_rollup walks every mapping: 1.7% of
    the sweep when read after each op). What a worker allocates adds to it; pages
    it still shares with the process it was forked from are already in it.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident, shared = (int(n) for n in statm.read().split()[1:3])
    except (OSError, ValueError):
        return 0.0
    return (resident - shared) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run(
    case: Any, op: Any, world_size: int, device_type: str, tick: Any = None
) -> tuple[str, str]:
    import unittest

    from harness.conformance import _ops
    from harness.local.gaps import simulation_gap
    from harness.local.simulate import simulate

    try:
        with simulate(world_size, device_type) as sim:
            mesh = sim.build_mesh()
            # the simulated ranks share each plain input: split it, no scatter from rank 0
            _ops.check_opinfo(
                case, mesh, op, device_type, sim.mode.disable, tick, src_data_rank=None
            )
    except unittest.SkipTest as exc:
        return "skipped", str(exc)
    except Exception as exc:  # noqa: BLE001 (every error is the op's outcome)
        gap = None if isinstance(exc, AssertionError) else simulation_gap(exc)
        if gap is not None:
            return "skipped", gap
        return "failed", _failure(exc)
    return "passed", ""


def _failure(exc: BaseException) -> str:
    """The exception first (a report's failure line), then where: from the op's check down."""
    frames = traceback.extract_tb(exc.__traceback__)
    start = next((i for i, f in enumerate(frames) if f.name == "check_opinfo"), 0)
    lines = traceback.format_exception_only(type(exc), exc)
    if isinstance(exc, AssertionError):  # the parent raises it as one: say it once
        lines[0] = lines[0].removeprefix("AssertionError: ")
    cause = exc.__cause__
    if cause is not None:
        lines += ["caused by "] + traceback.format_exception_only(type(cause), cause)
    lines += ["\nin the ops worker:\n", *traceback.format_list(frames[start:])]
    return "".join(lines).rstrip()


class _Checker(TestCase):
    """Only for its comparisons: the kit's assertEqual, with a test's tolerances."""

    def runTest(self) -> None:  # noqa: N802 (unittest's naming)
        """Never run."""
