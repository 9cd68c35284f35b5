"""Op coverage: every OpInfo of the installed torch, plain and as DTensors, one test per op.

Opt-in where tests run (``--harness-ops all`` or ``HARNESS_OPS=all``; names or
globs run a subset), always on in ``harness certify``. Each op's samples run on
plain tensors and in every layout DTensorConverter yields on a 1-D mesh of the
cell's world size; see :mod:`harness.conformance._ops` for the verdicts. DTensor's
own failures come from the record ``xfails/torch-<minor>.toml``, for the cell's world
size only, and are strict there: a listed op that passes fails, so the record cannot
go stale. ``harness certify`` marks none (``HARNESS_OPS_VERDICTS=raw``): every op
reports what it ran to, and the report judges it against the reference.

Where torch has LocalTensor (2.10 and later) the ops run in worker processes, each
simulating every rank (:mod:`harness.conformance._ops_workers`); on an older
torch, or with ``HARNESS_OPS_ON=ranks``, on the cell's pool of rank processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import compat, devices, with_comms
from harness.conformance import _ops, _ops_workers
from harness.conformance._base import ConformanceTestBase
from harness.testcase import TestCase

#: Workers where torch can simulate the ranks; the cell's rank processes where it
#: cannot, or where HARNESS_OPS_ON=ranks asks for them.
_IN_WORKERS = _ops.runs_in_workers()
#: The cell's world size: what the workers simulate and the known failures were found at.
_WORLD_SIZE = devices.cell_world_size() or devices.NUM_DEVICES


def _ran_on(ops: int) -> str:
    """Where the ops ran, for the report: a reader must know the collectives were
    simulated (workers) or real (the cell's ranks on its backend)."""
    if _IN_WORKERS:
        n = _ops_workers.worker_count(ops)
        return (
            f"{n} LocalTensor worker process{'es' if n > 1 else ''}, each simulating "
            f"{_WORLD_SIZE} ranks on {devices.DEVICE_TYPE} (collectives simulated); {_known()}"
        )
    backend = os.environ.get("HARNESS_BACKEND", "").strip() or "the cell's backend"
    return (
        f"the cell's {_WORLD_SIZE} rank processes on {devices.DEVICE_TYPE}, {backend}; {_known()}"
    )


def _known() -> str:
    if _ops.raw_verdicts():
        return "no op marked: the report judges each against the reference"
    return _EXPECTED.note(_WORLD_SIZE)


class OpsTest(TestCase if _IN_WORKERS else ConformanceTestBase):  # type: ignore[misc]
    """One test per OpInfo; the op database is run ahead, in the order collected."""

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _workers(cls, request):
        if not _IN_WORKERS:
            yield
            return
        planned = [getattr(item.obj, "harness_op", None) for item in request.session.items]
        keys = _EXPECTED.slowest_first(k for k in planned if k in _OPS and k not in _NOT_RUN)
        workers = _ops_workers.OpsWorkers(
            keys,
            world_size=_WORLD_SIZE,
            device_type=devices.DEVICE_TYPE,
            timeout=devices.default_timeout(),
            preload=__name__,  # the fork server imports the op database once
        )
        cls._harness_ops_workers = workers
        try:
            yield
        finally:
            workers.close()


def _op_test(key: str):
    if _IN_WORKERS:

        def test(self):
            result = self._harness_ops_workers.result(key)
            if result.status == "skipped":
                self.skipTest(result.text)
            if result.status == "failed":
                raise AssertionError(result.text)

        return test

    @with_comms
    def test(self):
        mesh = self.mesh((self.world_size,))
        _ops.check_opinfo(self, mesh, _OPS[key], self.device_type, self._outside_local)

    return test


def _skipped(reason: str):
    def test(self):
        self.skipTest(reason)

    return test


def _known_hang(reason: str):
    """A failure without running: the record says the op never returns here."""

    def test(self):
        raise AssertionError(f"not run: {reason}")

    return test


def _expectations() -> _ops.Expectations:
    chosen = os.environ.get(_ops.EXPECTATIONS_ENV)
    return _ops.load_expectations(
        Path(chosen) if chosen else _ops.expectations_file(compat.torch_version()),
        (_ops.op_key(op) for op in compat.op_database()),
        _WORLD_SIZE,
        compat.torch_version(),
    )


def _build() -> dict:
    ops = _ops.selected_ops(os.environ.get(_ops.ENV))
    if not ops:
        return ops
    source = _EXPECTED.path.name if _EXPECTED.path else "no expectations file"
    strict = _EXPECTED.strict(_WORLD_SIZE)
    raw = _ops.raw_verdicts()
    ran_on = _ran_on(sum(key not in _NOT_RUN for key in ops))  # what the workers get
    for key in ops:
        name = _ops.method_name(key)
        if hasattr(OpsTest, name):
            raise RuntimeError(f"two OpInfos map to the test name {name}; rename one")
        if key in _EXPECTED.skip:
            method = _skipped(f"{key}: {_EXPECTED.skip[key]} ({source})")
        elif key in _EXPECTED.hangs:
            where = f"{source} [world.{_WORLD_SIZE}]"
            method = _known_hang(f"{key}: {_EXPECTED.hangs[key]} ({where})")
        else:
            method = _op_test(key)
        if key in _EXPECTED.xfail and not raw:
            method = pytest.mark.xfail(
                reason=f"DTensor's own ({source}, world size {_WORLD_SIZE}): "
                f"{_EXPECTED.xfail[key]}",
                strict=strict,
            )(method)
        method.__name__ = name
        method.__qualname__ = f"OpsTest.{name}"
        method.harness_op = key  # type: ignore[attr-defined]
        method.harness_ran_on = ran_on  # type: ignore[attr-defined]
        setattr(OpsTest, name, method)
    return ops


_EXPECTED = _expectations() if _ops.selection(os.environ.get(_ops.ENV)) else _ops.Expectations(None)
#: Ops no worker gets: the record skips them, or says they hang at this world size.
_NOT_RUN = frozenset(_EXPECTED.skip) | frozenset(_EXPECTED.hangs)
_OPS = _build()
