"""Requirement checks without ranks: a test using these fails if any rank is spawned.

Skips are decided in the parent before spawning; to prove it, the runners that
start ranks are swapped for one that raises (the ``no_spawning`` fixture in
conftest.py), and a test case is run in-process with :func:`run`.
"""

from __future__ import annotations

import unittest


class Spawned(Exception):
    """A rank was started where the parent should have decided alone."""


def refuse(job):
    raise Spawned(f"a rank was spawned for {job.name}")


def run(cls: type, name: str) -> unittest.TestResult:
    """One test method of ``cls``, run here, with its result."""
    result = unittest.TestResult()
    cls(name).run(result)
    return result
