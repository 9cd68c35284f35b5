"""``python -m harness ...`` in a fresh process, as a user's shell runs it (imported
by name: tests/ is on sys.path, like spawn_guard)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def harness(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Its exit code and output, captured; ``env`` is added to this process's environment."""
    return python("-m", "harness", *args, cwd=cwd, env=env, timeout=timeout)


def python(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python ARGS`` (this interpreter), as :func:`harness` runs the CLI."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
