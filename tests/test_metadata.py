"""What the project says about itself: no address it does not own."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# Addresses the project never owned: its metadata, docs, images and CI templates once
# pointed at them (issue 26). Vendor examples (acme) are examples, not ours.
_MADE_UP = re.compile(r"github\.com/dtensor-harness|pypi\.org/project/dtensor-harness")


def test_no_made_up_project_address_anywhere():
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if files.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    hits = []
    for name in filter(None, files.stdout.split("\0")):
        path = ROOT / name
        if path.is_file() and not path.is_symlink() and path.suffix not in (".whl", ".png"):
            text = path.read_text(encoding="utf-8", errors="replace")
            hits += [f"{name}: {m.group(0)}" for m in _MADE_UP.finditer(text)]
    assert not hits, hits
