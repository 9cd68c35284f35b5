"""Which tests may share the host under ``pytest -n N``: the kit's xdist scheduler.

A test of a kit base in process, pool, threads or fake mode runs rank processes
(or rank threads) that fill the host's cores and, on an accelerator host, hold
its devices: two such tests at once oversubscribe the cores and share the
devices. Every other test (a LocalTensor test, a test with no ranks) runs in
its worker process alone, on one core. xdist's plain ``load`` mixes the two
freely; this scheduler keeps the rank tests to one worker at a time and gives
the one-core tests to the others, so a file's LocalTensor tests run beside its
rank tests instead of after them. A class's tests stay on one worker, as with
``--dist loadscope``, so a pool of ranks and a class's fixtures are made once.

The controller collects nothing, so each worker writes, after its collection,
which of its node ids run ranks (:func:`write_lanes`); the scheduler reads that
when it first schedules. Without it every test counts as a rank test: slower,
never wrong.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: The two lanes: tests that run rank processes or threads, and tests that run in
#: their worker alone.
RANKS, ONE = "ranks", "one"
#: Modes whose tests run ranks of their own (see :data:`harness.bases.RUNNERS`).
RANK_MODES = frozenset({"process", "pool", "threads", "fake", "external"})


def lane_of(cls: type | None) -> str:
    """RANKS for a test of a kit base whose mode runs ranks, else ONE."""
    if cls is None or not hasattr(cls, "rank_mode"):
        return ONE
    bases = sys.modules.get("harness.bases")  # a kit class imported it; never import torch here
    if bases is None:
        return ONE
    try:
        mode = bases.class_mode(cls)
    except ValueError:  # a bad HARNESS_MODE: the test itself says so; keep it apart
        return RANKS
    return RANKS if mode in RANK_MODES else ONE


def write_lanes(folder: str, worker: str, items: Iterable[Any]) -> Path:
    """In a worker, after collection: the node ids that run ranks, for the scheduler."""
    ranked = [item.nodeid for item in items if lane_of(getattr(item, "cls", None)) == RANKS]
    path = Path(folder) / f"{worker}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps({"ranks": ranked}), encoding="utf-8")
    os.replace(partial, path)  # the scheduler never reads half a file
    return path


def read_ranked(folder: str | None) -> set[str] | None:
    """The node ids that run ranks, from any worker's file; None when there is none."""
    if not folder or not os.path.isdir(folder):
        return None
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            try:
                return set(json.loads((Path(folder) / name).read_text(encoding="utf-8"))["ranks"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return None


def make_scheduler(config: Any, log: Any, folder: str, rank_workers: int = 1) -> Any:
    """The scheduler; ``rank_workers``: how many workers may hold rank tests at once.

    The class is built on first use: xdist is optional, and so imported late.
    """
    from xdist.scheduler import LoadScopeScheduling

    class RankLaneScheduling(LoadScopeScheduling):
        """xdist's loadscope, with at most ``rank_workers`` workers holding rank tests.

        A worker asking for work gets the next rank class when fewer than
        ``rank_workers`` other workers hold unfinished rank tests, else the next
        one-core class; with neither for it, it is shut down (after its pending
        tests), since the rank classes left must wait for a worker that holds ranks.
        """

        @functools.cached_property
        def _ranked_scopes(self) -> set[str] | None:
            """The scopes that run ranks; None when no worker said (then every scope does)."""
            ranked = read_ranked(folder)
            return None if ranked is None else {self._split_scope(nodeid) for nodeid in ranked}

        def _is_ranked(self, scope: str) -> bool:
            return self._ranked_scopes is None or scope in self._ranked_scopes

        def _holds_ranks(self, node: Any) -> bool:
            return any(
                self._is_ranked(scope) and not all(unit.values())
                for scope, unit in self.assigned_work.get(node, {}).items()
            )

        def _assign_work_unit(self, node: Any) -> None:
            """loadscope's, given the scope this node may take first in the queue."""
            holders = sum(self._holds_ranks(n) for n in self.assigned_work if n is not node)
            takes_ranks = holders < rank_workers
            scope = next((s for s in self.workqueue if self._is_ranked(s) and takes_ranks), None)
            if scope is None:
                scope = next((s for s in self.workqueue if not self._is_ranked(s)), None)
            if scope is None:
                node.shutdown()
                return
            self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return RankLaneScheduling(config, log)


# --- the side lane (harness.ranks.side): which LocalTensor tests may run beside pytest ---
#: Markers pytest acts on around a test's call, which a side worker would not see.
_PYTEST_MARKERS = ("skip", "skipif", "xfail", "usefixtures", "parametrize")


def _set_up_by_kit_or_unittest(cls: type) -> bool:
    """No class-level set-up or tear-down but unittest's and the kit's bases'."""
    for name in ("setUpClass", "tearDownClass"):
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if owner is not None and not owner.__module__.startswith(("unittest", "harness.")):
            return False
    module = sys.modules.get(cls.__module__)
    return not any(hasattr(module, name) for name in ("setUpModule", "tearDownModule"))


def runs_alone(item: Any) -> bool:
    """Whether a side worker, with plain unittest and no pytest, runs ``item`` as pytest
    would: a unittest method without fixtures, markers or set-up of its own."""
    cls = getattr(item, "cls", None)
    method = getattr(cls, getattr(item, "name", ""), None) if cls is not None else None
    if method is None or type(item).__name__ != "TestCaseFunction":
        return False
    if any(item.get_closest_marker(name) for name in _PYTEST_MARKERS):
        return False
    if getattr(cls, "__unittest_skip__", False) or getattr(method, "__unittest_skip__", False):
        return False
    fixtures = [
        name
        for name in getattr(item, "fixturenames", ())
        if not name.startswith("_") and name != "request"  # pytest's own for unittest items
    ]
    return not fixtures and _set_up_by_kit_or_unittest(cls)


def side_tasks(items: Iterable[Any]) -> list[Any]:
    """The run's LocalTensor tests a side worker may run, in pytest's order."""
    bases = sys.modules.get("harness.bases")
    if bases is None:  # no kit test was collected
        return []
    from harness.ranks.side import Task

    tasks = []
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or not hasattr(cls, "rank_mode") or not runs_alone(item):
            continue
        try:
            if bases.class_mode(cls) != "local":
                continue
        except ValueError:
            continue
        tasks.append(Task(cls, item.name, bases.timeout_for(cls, item.name)))
    return tasks
