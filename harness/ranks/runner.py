"""The one interface every mode's runner has: ``runner(job) -> Verdict``.

The bases (the floor above) decide everything about a test that needs them --
its timeout, its rerun line, a requirement skip -- and hand it down as a
:class:`Job`; a runner only runs it (fresh processes, the class's pool,
threads, the launcher's ranks, or LocalTensor in ``harness.local``). The
bases' table of modes names one runner per mode, so a new mode is one module
with such a function and one row there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from harness.ranks.outcome import Verdict


@dataclass(frozen=True)
class Job:
    """One test to run on its ranks, as the parent's base decided it."""

    #: the test case in the parent (its class is what ranks import and run)
    test: Any
    method: str
    world_size: int
    #: seconds this test may take on its ranks
    timeout: float
    #: the one command that reruns just this test, for the failure message
    rerun: str
    #: seconds the class's ranks may take to start (pool mode)
    class_timeout: float = 0.0
    #: a requirement skip the parent found: only runners whose ranks must meet for
    #: every test (external) receive a job that has one; the others never start
    skip: str | None = None

    @property
    def cls(self) -> type:
        return type(self.test)

    @property
    def name(self) -> str:
        return f"{self.cls.__qualname__}.{self.method}"


class Runner(Protocol):
    """Runs ``job`` on its ranks and returns the verdict over all of them.

    A runner that runs the body in this very process (LocalTensor) may instead
    let the body's own exception through unchanged, with its traceback.
    """

    def __call__(self, job: Job) -> Verdict: ...
