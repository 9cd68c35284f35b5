"""A scenario file (tests/data/ranks) run by pytest in a fresh process, whose ranks
record their pids (imported by name: tests/ is on sys.path, like spawn_guard)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def scenario_env(pids: Path) -> dict[str, str]:
    """Each rank writes its pid into ``pids``; one thread a rank; no cell's mode leaks in."""
    env = {**os.environ, "SCENARIO_PIDS": str(pids), "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_MODE", None)
    return env


def pytest_argv(*args: str) -> list[str]:
    """``python -m pytest -p no:cacheprovider -q ARGS``."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
