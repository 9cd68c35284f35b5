"""Where rank processes come from: a fork server that already imported torch.

Upstream spawns a fresh interpreter per rank per test, and each one imports
torch (about 1.5 s of CPU each). We start one ``multiprocessing`` fork server
per test run (per xdist worker), preloaded with torch, torch.distributed.tensor
and the first test module, and fork every rank from it: a rank starts in tens
of milliseconds, from a process that never touched an accelerator.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.forkserver as _forkserver
import os
import sys
import threading

# Read by harness.ranks.preload in the fork server: the pid whose death must end it.
PARENT_ENV = "HARNESS_FORKSERVER_PARENT"
# Also read there: the run's sys.path (Python 3.11's fork server starts with its own,
# so a test module in a folder pytest put on the path would be imported by every rank
# instead of once), and the modules to import after torch, comma-separated.
PATH_ENV = "HARNESS_FORKSERVER_PATH"
MODULES_ENV = "HARNESS_FORKSERVER_MODULES"

# Modules every rank needs; harness.devices is left out on purpose: it reads the
# cell's environment, which a rank applies before importing it.
BASE_PRELOAD = (
    "torch",
    "torch.distributed",
    "torch.distributed.tensor",
    "harness.ranks.preload",
    "harness.testcase",
    "harness.ranks.worker",
)


def server_running() -> bool:
    server = getattr(_forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None) is not None


def _no_accelerator() -> bool:
    from harness import devices  # the parent may touch the driver; it never forks

    return devices.detected_accelerator() is None


def start_method() -> str:
    """``forkserver`` (fast), or ``spawn`` via HARNESS_START_METHOD (a fresh interpreter per rank)."""
    method = os.environ.get("HARNESS_START_METHOD", "forkserver").strip() or "forkserver"
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"HARNESS_START_METHOD={method!r}: use 'forkserver' or 'spawn'")
    return method


def context(
    test_module: str | None = None,
    *,
    search_path: tuple[str, ...] = (),
    cpu_host: bool | None = None,
):
    """The fork-server context, its server started; the first call decides what the
    server preloads: torch, and ``test_module`` found on ``search_path`` + sys.path.
    ``cpu_host``: the caller knows the host has no accelerator (None: ask torch)."""
    if start_method() == "spawn":
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    if not server_running():
        safe = _no_accelerator() if cpu_host is None else cpu_host
        preload = list(BASE_PRELOAD)
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) and safe:
            preload.insert(0, "__main__")  # imported once, not once per rank
        modules: list[str] = []
        if test_module and test_module != "__main__" and safe:
            # a test module imports harness.devices, which asks the driver for
            # devices; after that, forked ranks could not use CUDA. The cell's
            # plugins come first, as in the parent: a device one registers must be
            # there when the module imports torch's device-type test bases
            from harness import hosts

            modules = [*hosts.plugin_modules(), test_module]
        ctx.set_forkserver_preload(preload)
        # The server dies with this process (PR_SET_PDEATHSIG), not seconds later when
        # it notices EOF and unloads torch; only when started from the main thread,
        # since the signal comes when the starting *thread* ends.
        if threading.current_thread() is threading.main_thread():
            os.environ[PARENT_ENV] = str(os.getpid())
        else:
            os.environ.pop(PARENT_ENV, None)
        _start_server(modules, [*search_path, *sys.path])
    return ctx


def _start_server(modules: list[str], path: list[str]) -> None:
    """Start the server now, telling it (through its environment) what else to import
    and from where; the variables are the server's alone, not the ranks' or the run's."""
    os.environ[MODULES_ENV] = ",".join(modules)
    os.environ[PATH_ENV] = os.pathsep.join(path)
    try:
        _forkserver.ensure_running()
    finally:
        os.environ.pop(MODULES_ENV, None)
        os.environ.pop(PATH_ENV, None)


def sharing_context(test_module: str | None, device_type: str):
    """A context whose children share this process's memory: ``fork``, where that is safe.

    The ops workers need what this process already holds (torch and the op
    database, about 390 MB); forked from here they share those pages instead of
    each fork-server child holding its own copy beside the parent's. Safe means:
    Linux, the default start method, a CPU cell on a host with no accelerator (a
    process that touched a driver must not fork), and no other Python thread
    (one could hold a lock the child would wait on forever). Otherwise the fork
    server, as for ranks. ``gc.freeze()`` first: a collection in a child would
    otherwise write to, and so copy, every page the objects live on.
    """
    if (
        sys.platform.startswith("linux")
        and start_method() == "forkserver"
        and device_type == "cpu"
        and threading.active_count() == 1
        and _no_accelerator()
    ):
        gc.freeze()
        return multiprocessing.get_context("fork")
    return context(test_module)


def forget_server_liveness() -> None:
    """In a rank: close the fork server's liveness pipe, which the rank inherited.

    The server exits when the write end of that pipe reaches EOF, i.e. when every
    holder has closed it. multiprocessing hands it to each forked child, so while
    any rank lived, a SIGKILLed test run left the server (and with it, through
    PR_SET_PDEATHSIG, every rank) running until the ranks ended on their own. With
    the run as its only holder, the run's death ends the server, and the server's
    death ends the ranks.
    """
    server = getattr(_forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is None:
        return
    try:
        os.close(fd)
    except OSError:
        pass
    server._forkserver_alive_fd = None


def warm_up(test_module: str, search_path: tuple[str, ...] = (), *, cpu_host: bool) -> None:
    """Start the fork server now, preloading ``test_module``, rather than at the first
    rank test: its import of torch (seconds) then runs beside pytest's collection."""
    context(test_module, search_path=search_path, cpu_host=cpu_host)
