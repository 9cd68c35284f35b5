"""Running one test on its ranks: a fresh group (process mode) or the class's pool.

Both paths share :class:`~harness.ranks.group.RankGroup` and
:func:`~harness.ranks.outcome.verdict`; they differ only in lifetime. A pool
survives failures and skips; when a rank crashed, hung or was stopped it is
replaced before the next test, so one bad test never poisons the rest.
"""

from __future__ import annotations

from harness.ranks.group import RankGroup, pg_timeout_for
from harness.ranks.outcome import RankOutcome, Verdict, verdict
from harness.ranks.runner import Job


def _note(group: RankGroup | None, timed_out: bool) -> str:
    """How a timed-out test's limit was counted, when load stretched it."""
    clock = group.clock if group is not None else None
    return clock.note() if timed_out and clock is not None else ""


def run_in_processes(job: Job) -> Verdict:
    """Process mode: spawn ``world_size`` ranks for this one test, then reap them."""
    group = RankGroup.for_job(job)
    outcomes, timed_out = group.run_once(job.timeout)
    return verdict(
        outcomes,
        world_size=job.world_size,
        test_name=job.name,
        timeout=job.timeout,
        timed_out=timed_out,
        rerun=job.rerun,
        clock_note=_note(group, timed_out),
    )


def run_in_pool(job: Job) -> Verdict:
    """Pool mode: send the test to its class's ranks, starting them if need be."""
    pool = pool_for(job.cls, job.world_size, max(job.timeout, job.class_timeout))
    return pool.run(job.method, timeout=job.timeout, test_name=job.name, rerun=job.rerun)


class Pool:
    """Pool mode: one group per class, tests sent to it, replaced after a crash or hang."""

    def __init__(self, cls: type, world_size: int, timeout: float) -> None:
        self.cls = cls
        self.world_size = world_size
        self.timeout = timeout
        self.group: RankGroup | None = None
        self.spawns = 0

    def _start(self, test_name: str, rerun: str) -> Verdict | None:
        self.group = RankGroup(
            self.cls, self.world_size, pool=True, pg_timeout=pg_timeout_for(self.timeout)
        )
        self.spawns += 1
        outcomes, timed_out = self.group.collect(self.timeout)
        if all(o.status == "ready" for o in outcomes):
            return None
        self.group.drain_output()
        note = _note(self.group, timed_out)
        self.close()
        for o in outcomes:
            if o.status == "ready":
                o.status = "stopped"
        return verdict(
            outcomes,
            world_size=self.world_size,
            test_name=f"{test_name} (starting the class's ranks)",
            timeout=self.timeout,
            timed_out=timed_out,
            rerun=rerun,
            clock_note=note,
        )

    def run(self, method: str, *, timeout: float, test_name: str, rerun: str) -> Verdict:
        if self.group is None or self.group.dead:
            failed_start = self._start(test_name, rerun)
            if failed_start is not None:
                return failed_start
        group = self.group
        assert group is not None
        try:
            group.send(method)
        except (BrokenPipeError, OSError):
            outcomes = [
                RankOutcome(r, "crashed", exitcode=p.exitcode) for r, p in enumerate(group.procs)
            ]
            self.close()
            return verdict(
                outcomes,
                world_size=self.world_size,
                test_name=test_name,
                timeout=timeout,
                timed_out=False,
                rerun=rerun,
            )
        outcomes, timed_out = group.collect(timeout)
        group.drain_output()
        result = verdict(
            outcomes,
            world_size=self.world_size,
            test_name=test_name,
            timeout=timeout,
            timed_out=timed_out,
            rerun=rerun,
            clock_note=_note(group, timed_out),
        )
        # Keep the ranks only if they all reported and any failure was a plain
        # assertion; after an error inside a collective the group may be broken.
        if group.dead or (result.status == "failed" and not result.assertion):
            self.close()
        return result

    def close(self) -> None:
        group, self.group = self.group, None
        if group is not None:
            group.stop(timeout=10.0)


_POOLS: dict[type, Pool] = {}


def pool_for(cls: type, world_size: int, timeout: float) -> Pool:
    pool = _POOLS.get(cls)
    if pool is None or pool.world_size != world_size:
        if pool is not None:
            pool.close()
        pool = _POOLS[cls] = Pool(cls, world_size, timeout)
    return pool


def close_pool(cls: type) -> None:
    pool = _POOLS.pop(cls, None)
    if pool is not None:
        pool.close()


def close_all_pools() -> None:
    for cls in list(_POOLS):
        close_pool(cls)
