"""One set of rank processes, seen from the parent: start, send, collect, kill.

Process mode makes a group per test; pool mode keeps one per class. Collecting
waits on every rank's pipe and process sentinel at once, so a rank that
crashes is noticed at once, and a rank that fails gives the others a short
grace to report (their tracebacks, where they differ) before they are stopped
with their stacks. At the deadline every live rank dumps its Python stack
(faulthandler on SIGUSR1) and is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing.connection import wait
from typing import Any

from harness.ranks import reaper, spawn
from harness.ranks.clock import Clock
from harness.ranks.outcome import RankOutcome
from harness.ranks.runner import Job
from harness.ranks.worker import RankSpec, log_path, rank_main, stack_path

#: Seconds other ranks get to report after one rank failed or crashed.
GRACE_SECONDS = 2.0
#: Seconds other ranks get after one rank skipped.
SKIP_GRACE_SECONDS = 0.5
#: Seconds a rank gets to write its stack after SIGUSR1.
STACK_SECONDS = 1.0


def pg_timeout_for(test_timeout: float) -> float:
    """The process-group timeout: below the test's, so a stuck collective raises first."""
    margin = max(1.0, min(30.0, 0.2 * test_timeout))
    return max(1.0, test_timeout - margin)


def class_ref(cls: type) -> tuple[str, str | None, str]:
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    return cls.__module__, file, cls.__qualname__


class RankGroup:
    """Rank processes running tests of ``cls``: every rank of ``world_size``, or only
    ``ranks`` of it (fake mode runs a few ranks of a large world)."""

    def __init__(
        self,
        cls: type,
        world_size: int,
        *,
        pool: bool,
        pg_timeout: float,
        first_test: str | None = None,
        ranks: list[int] | None = None,
        extra: dict[str, Any] | None = None,
        target: Any = rank_main,
        env: dict[str, str] | None = None,
    ) -> None:
        self.world_size = world_size
        #: the rank each process plays; processes are indexed 0..len(ranks)-1 here
        self.ranks = list(range(world_size)) if ranks is None else list(ranks)
        self.workdir = tempfile.mkdtemp(prefix="harness-ranks-")
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self._log_offsets = [0] * len(self.ranks)
        self.dead = False
        self.closed = False
        self.clock: Clock | None = None  # the last collect's: how its limit was counted
        module, file, qualname = class_ref(cls)
        ctx = spawn.context(module)
        env = dict(os.environ if env is None else env)
        reaper.register(self)
        try:
            for rank in self.ranks:
                spec = RankSpec(
                    module=module,
                    file=file,
                    qualname=qualname,
                    rank=rank,
                    world_size=world_size,
                    workdir=self.workdir,
                    env=env,
                    pool=pool,
                    pg_timeout=pg_timeout,
                    first_test=first_test,
                    extra=dict(extra or {}),
                )
                parent_end, child_end = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=target, args=(spec, child_end), name=f"rank {rank}")
                proc.start()
                child_end.close()
                self.procs.append(proc)
                self.conns.append(parent_end)
        except BaseException:
            self.kill()
            raise

    @classmethod
    def for_job(
        cls, job: Job, *, ranks: list[int] | None = None, extra: dict[str, Any] | None = None
    ) -> RankGroup:
        """A fresh group that runs ``job``'s one test (process mode, a batch of fake ranks)."""
        return cls(
            job.cls,
            job.world_size,
            pool=False,
            pg_timeout=pg_timeout_for(job.timeout),
            first_test=job.method,
            ranks=ranks,
            extra=extra,
        )

    def run_once(self, timeout: float) -> tuple[list[RankOutcome], bool]:
        """Collect a fresh group's one result per rank, then reap it whatever happened."""
        try:
            outcomes, timed_out = self.collect(timeout)
            self.join()
            self.drain_output()
        finally:
            self.kill()
        return outcomes, timed_out

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def send(self, message: Any) -> None:
        for conn in self.conns:
            conn.send(message)

    def collect(self, timeout: float, *, expect: str = "result") -> tuple[list[RankOutcome], bool]:
        """Wait for one message per rank; returns (outcomes, timed_out).

        ``timeout`` counts only the time the ranks were not kept waiting for a CPU
        (:class:`~harness.ranks.clock.Clock`): a computing rank on a loaded host is
        not hung. Ranks that have not answered by then (or GRACE_SECONDS after
        another rank failed) are stopped: their stacks are read and they are
        killed, so the group is dead afterwards.
        """
        clock = Clock(timeout)  # counts the limit only while the ranks are not starved
        self.clock = clock
        pending = set(range(len(self.ranks)))
        outcomes: dict[int, RankOutcome] = {}
        trouble_at: float | None = None
        grace = GRACE_SECONDS
        try:
            while pending:
                clock.tick(self.procs[r].pid for r in pending)
                if clock.expired():
                    break
                remaining = clock.left()
                if trouble_at is not None:
                    remaining = min(remaining, trouble_at + grace - time.monotonic())
                    if remaining <= 0:
                        break
                waitables = [self.conns[r] for r in pending] + [
                    self.procs[r].sentinel for r in pending
                ]
                for ready in wait(waitables, timeout=remaining):
                    rank = self._rank_of(ready)
                    if rank not in pending:
                        continue
                    outcome = self._receive(rank)
                    if outcome is None:
                        continue
                    outcomes[rank] = outcome
                    pending.discard(rank)
                    if outcome.status not in ("passed", "ready") and trouble_at is None:
                        trouble_at = time.monotonic()
                        if outcome.status == "skipped":  # nothing to learn from the others
                            grace = SKIP_GRACE_SECONDS
            timed_out = bool(pending) and clock.expired()
            if pending:
                stacks = self._dump_stacks(sorted(pending))
                status = "hung" if timed_out else "stopped"
                for index in pending:
                    outcomes[index] = RankOutcome(
                        self.ranks[index], status, stack=stacks.get(index, "")
                    )
                self.terminate()
        except BaseException:  # Ctrl-C included: never leave ranks behind
            self.kill()
            raise
        if any(o.status in ("crashed", "broken") for o in outcomes.values()):
            self.terminate()
        return [outcomes[r] for r in sorted(outcomes)], timed_out

    def _rank_of(self, ready: Any) -> int:
        """The index (into ``procs``) of the process ``ready`` belongs to."""
        for index, (conn, proc) in enumerate(zip(self.conns, self.procs)):
            if ready is conn or ready == proc.sentinel:
                return index
        return -1

    def _receive(self, index: int) -> RankOutcome | None:
        conn, proc = self.conns[index], self.procs[index]
        rank = self.ranks[index]
        try:
            if conn.poll():
                return RankOutcome.from_report({**conn.recv(), "rank": rank})
        except (EOFError, OSError):
            pass
        proc.join(timeout=1.0)
        if proc.exitcode is None and proc.is_alive():
            return None  # pipe closed but still running: wait for the sentinel
        return RankOutcome(
            rank,
            "crashed",
            exitcode=proc.exitcode,
            stack=self._read(stack_path(self.workdir, rank)),
            order=time.time(),
        )

    def _dump_stacks(self, indices: list[int]) -> dict[int, str]:
        """Every listed process's stack, by index."""
        for index in indices:
            try:
                os.kill(self.procs[index].pid, signal.SIGUSR1)
            except (ProcessLookupError, TypeError):
                pass
        paths = {i: stack_path(self.workdir, self.ranks[i]) for i in indices}
        end = time.monotonic() + STACK_SECONDS
        while time.monotonic() < end:
            if all(self._read(path) for path in paths.values()):
                time.sleep(0.05)  # let the last thread's frames land
                break
            time.sleep(0.02)
        return {i: self._read(path) for i, path in paths.items()}

    @staticmethod
    def _read(path: str) -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def new_output(self, index: int) -> str:
        """What process ``index`` printed since the last call."""
        try:
            with open(log_path(self.workdir, self.ranks[index]), "rb") as f:
                f.seek(self._log_offsets[index])
                data = f.read()
        except OSError:
            return ""
        self._log_offsets[index] += len(data)
        return data.decode(errors="replace")

    def drain_output(self) -> None:
        """Copy what the ranks printed since the last call to our stdout, prefixed by rank."""
        for index, rank in enumerate(self.ranks):
            text = self.new_output(index)
            if text.strip():
                sys.stdout.write("".join(f"[rank {rank}] {line}\n" for line in text.splitlines()))
        sys.stdout.flush()

    def join(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(timeout=max(0.0, end - time.monotonic()))
        if any(p.is_alive() for p in self.procs):
            self.terminate()

    def stop(self, timeout: float) -> None:
        """End the group: tell live ranks there is no more work (``None``), give them
        ``timeout`` seconds to leave, then kill what is left and remove the files."""
        if not self.dead:
            try:
                self.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.join(timeout=timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL every live rank, reap them, and remove the group's files."""
        self.terminate()
        self.close()

    def terminate(self) -> None:
        """SIGKILL every live rank and reap them; files stay for drain_output."""
        if self.closed:
            return
        self.dead = True
        for proc in self.procs:
            if proc.is_alive():
                try:
                    proc.kill()
                except (ProcessLookupError, AttributeError):
                    pass
        for proc in self.procs:
            try:
                proc.join(timeout=5.0)
            except ValueError:  # already closed
                pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = self.dead = True
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.close()
            except ValueError:  # still running: kill() reaps it
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)
        reaper.unregister(self)
