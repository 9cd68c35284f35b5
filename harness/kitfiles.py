"""The files the kit ships beside its code: the starter matrix and the image recipes.

In a checkout they are the repository's own (``harness/data`` links to
``matrix.toml`` and ``docker/``); in a wheel they are package data. So every
command works from a plain ``pip install``, outside any checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
PACKAGE = Path(__file__).resolve().parent
#: What an image build copies from the kit's source tree (see docker/*.Dockerfile).
CONTEXT_FILES = ("pyproject.toml", "README.md", "LICENSE")


def starter_matrix() -> Path:
    """The matrix the kit ships: every built-in accelerator, as `harness init` writes it."""
    return DATA / "matrix.toml"


def docker_dir() -> Path:
    return DATA / "docker"


def source_tree() -> Path | None:
    """The checkout this kit runs from, if it runs from one (an editable install)."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "docker").is_dir() else None


def build_context(dest: Path) -> Path:
    """A build context for the images made from the installed kit alone.

    It holds what the Dockerfiles copy: docker/, the harness package (without its
    data), the starter matrix, and the project files shipped under ``data/``.
    """
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "data")
    shutil.copytree(PACKAGE, dest / "harness", ignore=ignore)
    shutil.copytree(docker_dir(), dest / "docker")
    for script in (dest / "docker").glob("*.sh"):
        script.chmod(0o755)  # wheels need not keep the mode bits
    shutil.copyfile(starter_matrix(), dest / "matrix.toml")
    for name in CONTEXT_FILES:
        shipped = DATA / name
        if shipped.is_file():
            shutil.copyfile(shipped, dest / name)
    return dest
