"""Container engines, and image build/run command lines derived from a cell.

Torch-free: nox calls this from outside the test environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

ENGINES = ("docker", "podman")
NO_ENGINE_HELP = (
    "no container engine answered: install docker or podman and start it "
    "(e.g. `apt-get install -y docker.io && dockerd &`), set HARNESS_CONTAINER_ENGINE, "
    "or run natively with `-- --native`."
)


@cache
def detect_engine() -> str | None:
    """The first engine whose daemon answers; HARNESS_CONTAINER_ENGINE picks one."""
    chosen = os.environ.get("HARNESS_CONTAINER_ENGINE")
    for engine in (chosen,) if chosen else ENGINES:
        if shutil.which(engine) and _answers(engine):
            return engine
    return None


def _answers(engine: str) -> bool:
    try:
        result = subprocess.run(
            [engine, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
