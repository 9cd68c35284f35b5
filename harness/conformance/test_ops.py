"""Op coverage: every OpInfo of the installed torch, plain and as DTensors, one test per op.

Opt-in where tests run (``--harness-ops all`` or ``HARNESS_OPS=all``; names or
globs run a subset), always on in ``harness certify``. Each op's samples run on
plain tensors and in every layout DTensorConverter yields on a 1-D mesh of the
cell's ranks; see :mod:`harness.conformance._ops` for the verdicts. Known
failures come from ``xfails/torch-<minor>.toml`` and are strict at the world size
they were found at: a listed op that passes there fails, so the file cannot go stale.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import with_comms
from harness.conformance import _ops
from harness.conformance._base import ConformanceTestBase


class OpsTest(ConformanceTestBase):
    """One test per OpInfo; the pool keeps the ranks for the whole database."""


def _op_test(key: str):
    @with_comms
    def test(self):
        op = _OPS[key]
        mesh = self.mesh((self.world_size,))
        _ops.check_opinfo(self, mesh, op, self.device_type, self._outside_local)

    return test


def _skipped(reason: str):
    def test(self):
        self.skipTest(reason)

    return test


def _build() -> dict:
    ops = _ops.selected_ops(os.environ.get(_ops.ENV))
    if not ops:
        return ops
    from harness import compat

    chosen = os.environ.get(_ops.EXPECTATIONS_ENV)
    expected = _ops.load_expectations(
        Path(chosen) if chosen else _ops.expectations_file(compat.torch_version()),
        (_ops.op_key(op) for op in compat.op_database()),
    )
    source = expected.path.name if expected.path else "no expectations file"
    from harness import devices

    strict = expected.strict(devices.cell_world_size() or devices.NUM_DEVICES)
    for key in ops:
        name = _ops.method_name(key)
        if hasattr(OpsTest, name):
            raise RuntimeError(f"two OpInfos map to the test name {name}; rename one")
        if key in expected.skip:
            method = _skipped(f"{key}: {expected.skip[key]} ({source})")
        else:
            method = _op_test(key)
        if key in expected.xfail:
            method = pytest.mark.xfail(
                reason=f"known failure ({source}): {expected.xfail[key]}", strict=strict
            )(method)
        method.__name__ = name
        method.__qualname__ = f"OpsTest.{name}"
        method.harness_op = key  # type: ignore[attr-defined]
        setattr(OpsTest, name, method)
    return ops


_OPS = _build()
