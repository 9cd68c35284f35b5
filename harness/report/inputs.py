"""The TOML files a user hands a report (waivers, reference records): their bytes and
their tables, or one UsageError line naming the file and the fix."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from harness.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read(path: Path, what: str, fix: str) -> bytes:
    """``path``'s bytes; ``what`` names the file in the error, ``fix`` says how to give one."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {str(path)!r} not found; {fix}.") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def tables(raw: bytes, source: str) -> dict[str, Any]:
    """``raw`` as TOML; ``source`` names it in the error."""
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{source}: not valid TOML ({exc}).") from None
