"""Where rank processes come from: a fork server that already imported torch.

Upstream spawns a fresh interpreter per rank per test, and each one imports
torch (about 1.5 s of CPU each). We start one ``multiprocessing`` fork server
per test run (per xdist worker), preloaded with torch, torch.distributed.tensor
and the first test module, and fork every rank from it: a rank starts in tens
of milliseconds, from a process that never touched an accelerator.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver as _forkserver
import sys

# Modules every rank needs; harness.devices is left out on purpose: it reads the
# cell's environment, which a rank applies before importing it.
BASE_PRELOAD = (
    "torch",
    "torch.distributed",
    "torch.distributed.tensor",
    "harness.testcase",
    "harness.ranks.worker",
)


def _server_running() -> bool:
    server = getattr(_forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None) is not None


def context(test_module: str | None = None):
    """The fork-server context; the first call decides what the server preloads."""
    ctx = multiprocessing.get_context("forkserver")
    if not _server_running():
        preload = list(BASE_PRELOAD)
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None):
            preload.insert(0, "__main__")  # imported once, not once per rank
        if test_module and test_module != "__main__":
            preload.append(test_module)
        ctx.set_forkserver_preload(preload)
    return ctx


def warm_up(test_module: str | None = None) -> None:
    """Start the fork server now (its one-time cost) rather than inside a test."""
    ctx = context(test_module)
    if not _server_running():
        _forkserver.ensure_running()
    del ctx
