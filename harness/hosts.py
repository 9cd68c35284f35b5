"""What this host offers a cell: one answer to each question.

- :func:`device_count`: how many devices of an accelerator this host has
  (HARNESS_HOST_DEVICES, else the table's torch-free probe, refined by torch
  where torch is installed and asked);
- :func:`backend_available`: whether a collective backend is registered and
  built here, after the cell's plugins are imported;
- :func:`check_cell`: whether this host can serve a cell, raising one
  UsageError line (exit 2) when it cannot. ``harness run``, the launchers,
  containers and ``harness doctor`` all call it.
- :func:`import_plugins` / :func:`preflight`: the accelerator's plugin modules
  and the checks that need torch, done once in the parent before any rank.

Importing this module imports no torch; the functions that need torch import
it when called.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from harness import accelerators
from harness.accelerators import Accelerator
from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.matrix import Cell

#: Where a host hides its devices from the probes, say how many there are.
OVERRIDE = "HARNESS_HOST_DEVICES"
#: Plugin modules of the active cell, comma-separated (set by Cell.harness_env).
PLUGINS_ENV = "HARNESS_PLUGINS"
UNLIMITED = sys.maxsize


class PluginError(UsageError):
    """An accelerator's plugin module did not import."""


# --- plugins ----------------------------------------------------------------------

_imported: dict[str, Any] = {}
_failed: dict[str, str] = {}


def plugin_modules(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The active cell's plugin modules (HARNESS_PLUGINS) and ``extra``, in order."""
    names = [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]
    return tuple(dict.fromkeys([*names, *extra]))


def import_plugins(modules: Iterable[str] | None = None) -> list[Any]:
    """Import each plugin module once per process, before any process group starts.

    A module that fails raises PluginError naming it and its error; the failure is
    remembered, so a process asking again gets the same line, not a second import.
    """
    modules = plugin_modules() if modules is None else tuple(modules)
    loaded = []
    for name in modules:
        if name in _failed:
            raise PluginError(_failed[name])
        if name not in _imported:
            try:
                _imported[name] = importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001 - SystemExit in a plugin is a failure too
                if isinstance(exc, KeyboardInterrupt):
                    raise
                first = (str(exc).strip().splitlines() or [""])[0]
                _failed[name] = (
                    f"accelerator plugin {name!r} did not import: {type(exc).__name__}: {first}; "
                    f"install the vendor's package or fix `plugin` in the matrix."
                )
                raise PluginError(_failed[name]) from None
        loaded.append(_imported[name])
    return loaded


def plugin_version(module: str) -> str | None:
    """The installed version of the package that provides ``module``, best effort."""
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None)
    if version:
        return str(version)
    top = module.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []) + [top]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


# --- devices ----------------------------------------------------------------------


def torch_installed() -> bool:
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def device_count(accel: Accelerator | str, *, use_torch: bool = True) -> int:
    """Devices of ``accel`` this host has; ``sys.maxsize`` for rank-unit accelerators.

    HARNESS_HOST_DEVICES answers first (hosts that expose devices elsewhere).
    Else the table's torch-free probe (device nodes, sysfs) capped by the
    visible-devices variable; torch refines it where it is installed and
    ``use_torch`` (a container's torch is not the host's: containers pass False).
    An accelerator without a probe is counted by torch alone.
    """
    facts = accelerators.get(accel) if isinstance(accel, str) else accel
    if not facts.binds_devices:
        return UNLIMITED
    override = os.environ.get(OVERRIDE, "").strip()
    if override:
        if not override.isdigit():
            raise UsageError(f"{OVERRIDE}={override!r} must be a whole number.")
        return int(override)
    probed = accelerators.probe_count(facts)
    if use_torch and torch_installed():
        counted = torch_device_count(facts.device, facts.plugins)
        if counted is not None:
            return counted
    return probed or 0


def torch_device_count(device: str, plugins: Iterable[str] = ()) -> int | None:
    """What torch's device module says (after the plugins); None when torch cannot say."""
    try:
        import_plugins(plugin_modules(plugins))
        import torch
    except (ImportError, UsageError):
        return None
    if device in ("cpu", "meta"):
        return UNLIMITED
    try:
        module = torch.get_device_module(device)
    except (RuntimeError, AttributeError, ValueError):
        return 0
    try:
        if hasattr(module, "is_available") and not module.is_available():
            return 0
        return int(module.device_count())
    except Exception:  # a broken driver counts as no device, not a crash
        return 0


def device_types() -> list[str]:
    """Every device type a kit-made backend (threaded, fake) must serve: cpu, the
    known accelerators' and the active cell's (HARNESS_DEVICE)."""
    types = ["cpu", *(a.device for a in accelerators.known().values())]
    active = os.environ.get("HARNESS_DEVICE", "").strip()
    return list(dict.fromkeys([*types, active] if active else types))


# --- backends ---------------------------------------------------------------------


def backend_available(backend: str, plugins: Iterable[str] = ()) -> bool:
    """Whether every backend in ``backend`` (``cpu:gloo,cuda:nccl`` too) is usable here.

    Asked of ``dist.is_backend_available`` after the plugins are imported, so a
    vendor's registered backend counts as a built-in one does.
    """
    try:
        import_plugins(plugin_modules(plugins))
        import torch.distributed as dist
    except (ImportError, UsageError):
        return False
    if not dist.is_available():
        return False
    for _, name in accelerators.mixed_parts(backend):
        if name in ("fake",):
            continue
        try:
            if not dist.is_backend_available(name):
                return False
        except Exception:  # an unknown name, or a probe that crashes: not usable here
            return False
    return True


# One probe in a child Python: on torch 2.7, destroying a gloo group after its refused
# ReduceOp.AVG can hang in ~ProcessGroupGloo (seen in a pytest parent and in pool ranks),
# so the child reports and leaves with os._exit, and a stuck one only costs its timeout.
_REDUCE_PROBE = """
import datetime, importlib, os, sys
import torch
import torch.distributed as dist
backend, op, plugins = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in plugins:
    importlib.import_module(name)
try:
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
except Exception:
    print("unknown", flush=True); os._exit(0)
try:
    dist.all_reduce(torch.ones(1), op=getattr(dist.ReduceOp, op))
    print("yes", flush=True)
except (RuntimeError, ValueError):
    print("no", flush=True)
os._exit(0)
"""


@functools.cache
def reduce_op_supported(backend: str, op: str) -> bool | None:
    """Whether ``backend`` reduces with ``ReduceOp.<op>``, asked of the backend itself.

    A child Python (with this process's plugins) makes a one-rank group of
    ``backend`` on an in-memory store and all-reduces one cpu float, so what answers
    is what the backend really is (a vendor's name over gloo answers as gloo does).
    None when it cannot be asked here without touching an accelerator: ``backend``
    serves no cpu, this process is a rank (``RANK`` set: the parent decides the
    marks), or the child cannot make the group or does not answer in 120 s.
    """
    if "RANK" in os.environ:
        return None
    try:
        import_plugins()
        import torch.distributed as dist
    except (ImportError, UsageError):
        return None
    if not dist.is_available():
        return None
    for device, name in accelerators.mixed_parts(backend):
        serves = dist.Backend.backend_capability.get(name.lower(), [])
        if device in ("", "cpu") and "cpu" in serves:
            break
    else:
        return None
    import subprocess

    plugins = list(_imported)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _REDUCE_PROBE, backend, op, *plugins],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    answer = (done.stdout.split() or ["unknown"])[-1]
    return {"yes": True, "no": False}.get(answer)


def default_backend(device: str) -> str:
    """The backend torch pairs with ``device`` (after plugins), else gloo."""
    import torch.distributed as dist

    try:
        return dist.get_default_backend_for_device(device)
    except (ValueError, RuntimeError, AttributeError):
        return dist.Backend.default_device_backend_map.get(device, "gloo")


def device_type_known(device: str) -> str | None:
    """None when torch knows the device type ``device``, else why not."""
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        return (str(exc).strip().splitlines() or [""])[0]
    return None


# --- can this host serve the cell ---------------------------------------------------


def check_cell(
    cell: Cell,
    *,
    ranks_here: int | None = None,
    devices: Iterable[str] | None = None,
    use_torch: bool = True,
) -> None:
    """Refuse, before anything starts, a cell this host cannot serve.

    ``ranks_here``: ranks this node runs (a launcher's share; default the cell's
    need); ``devices``: the indices chosen for a container; ``use_torch=False``
    when the ranks run in a container whose torch is not this host's.
    """
    if cell.devices_needed == 0:
        return
    if ranks_here is not None:
        needed = ranks_here
    elif devices is not None:
        needed = len(list(devices))
    else:
        needed = cell.devices_needed
    if not use_torch and not cell.spec.count and not os.environ.get(OVERRIDE, "").strip():
        return  # nothing here can count its devices; the run inside (its torch) checks again
    have = device_count(cell.spec, use_torch=use_torch)
    if have >= needed:
        return
    if ranks_here is not None:
        raise UsageError(
            f"this node runs {ranks_here} rank(s) of {cell.name} but shows {have} "
            f"{cell.accelerator} device(s); lower --nproc-per-node or use a node with more."
        )
    probed = accelerators.probe_count(cell.spec)
    seen = f" (torch sees {have}, the device nodes {probed})" if probed not in (None, have) else ""
    raise UsageError(
        f"cell {cell.name} needs {needed} {cell.accelerator} device(s); this host shows "
        f"{have}{seen}. Pick a cell that fits (`harness matrix list`), e.g. a -sim cell, which "
        f"simulates the ranks on one device, or set {OVERRIDE} if the devices are there "
        f"but hidden from this check."
    )


def preflight(cell: Cell) -> None:
    """The checks that need torch, in the parent before any rank: the plugins import,
    torch knows the device type, the cell's backend is registered and available.

    Skipped for built-in accelerators without plugins (their facts are the kit's),
    so a cpu cell's parent imports no torch.
    """
    spec = cell.spec
    if spec.builtin and not spec.plugins:
        return
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"cell {cell.name} needs torch to check its accelerator {cell.accelerator!r} "
            f"({exc}); install the cell's torch ({cell.torch})."
        ) from None
    import_plugins(plugin_modules(spec.plugins))
    why = device_type_known(cell.device)
    if why is not None:
        raise UsageError(
            f"cell {cell.name}: torch does not know device type {cell.device!r} ({why}); "
            f"the accelerator's plugin ({', '.join(spec.plugins) or 'none set'}) must "
            f"register it (`plugin` in [accelerators.{cell.accelerator}])."
        )
    if not backend_available(cell.backend, spec.plugins):
        import torch.distributed as dist

        registered = ", ".join(sorted({b.lower() for b in dist.Backend.backend_list})) or "none"
        raise UsageError(
            f"cell {cell.name}: backend {cell.backend!r} is not available after importing "
            f"{', '.join(spec.plugins) or 'no plugin'} (registered: {registered}); the plugin "
            f"must call dist.Backend.register_backend, or fix `backend` in the matrix."
        )


__all__ = [
    "OVERRIDE",
    "PLUGINS_ENV",
    "PluginError",
    "backend_available",
    "check_cell",
    "default_backend",
    "device_count",
    "device_type_known",
    "device_types",
    "import_plugins",
    "plugin_modules",
    "plugin_version",
    "preflight",
    "torch_device_count",
]
