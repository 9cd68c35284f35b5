"""Start the ranks' fork server while pytest collects, not at the first rank test.

The server imports torch and the test module once for every rank it will fork: about
2 s of one core. Started by the first rank test, the run waits for it there, the
other core idle. Started when pytest begins collecting the first file that names a
rank base, it imports beside pytest's own import of that file, on the other core.

What it must preload is the module pytest is about to import, so its name is worked
out here the way pytest's default import mode does (the file's package, else its
folder on sys.path). A wrong guess costs speed, never an outcome: ranks import a
module the server lacks themselves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from harness import accelerators, hosts
from harness.ranks import external, spawn

#: A file naming one of these runs tests on rank processes (a class deriving from a
#: Local base is not matched: ``\b`` needs a word boundary before the D; the op base's
#: ranks are threads).
RANK_BASES = re.compile(rb"\b(?:DTensorTestBase|DTensorContinuousTestBase)\b")


def module_name(path: Path) -> tuple[Path, str]:
    """(the folder pytest puts on sys.path, the module's name) for ``path``, as
    pytest's ``prepend``/``append`` import modes name it: up through the folders that
    hold an ``__init__.py``."""
    root = path.parent
    parts = [path.stem]
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    return root, ".".join(parts)


def holds_rank_tests(path: Path) -> bool:
    try:
        return RANK_BASES.search(path.read_bytes()) is not None
    except OSError:
        return False


def wanted() -> bool:
    """Whether to start early, decided without importing torch (the point is to start
    before the run does): a cell whose ranks come from the server, on a host where the
    table's probes find no accelerator and no plugin adds one. Elsewhere the server
    starts at the first rank test, after torch has said it is safe to preload there.
    """
    return (
        os.environ.get("HARNESS_MODE", "").strip().lower() != "local"  # devices.harness_mode
        and spawn.start_method() == "forkserver"
        and external.launched() is None
        and not hosts.plugin_modules()
        and accelerators.none_probed()
    )


def start_for(path: Path) -> bool:
    """Start the server for the file ``path`` if it names a rank base; True once it runs."""
    if spawn.server_running():
        return True
    if not holds_rank_tests(path):
        return False
    root, name = module_name(path)
    spawn.warm_up(name, (os.fspath(root),), cpu_host=True)
    return True
