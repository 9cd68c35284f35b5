"""Which device, backend and world size a test runs with.

Detection follows upstream's policy (the current ``torch.accelerator``, its
default collective backend, four ranks unless fewer accelerators exist), and
the active matrix cell overrides it: ``harness run`` and the pytest plugin set
``HARNESS_DEVICE``, ``HARNESS_BACKEND``, ``HARNESS_WORLD_SIZE``, ``HARNESS_MODE``
and ``HARNESS_TIMEOUT``, which also cross into rank processes and containers.
"""

from __future__ import annotations

import os
import sys

from harness import accelerators, hosts

# The active cell's accelerator plugins (HARNESS_PLUGINS) come before torch is
# asked anything: every process that runs a test (the parent, each rank, the
# fork server, torchrun's ranks) imports this module before a process group.
hosts.import_plugins()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

#: The built-in accelerators' own backends, which need one device per rank (the
#: table's; :func:`needs_accelerator` asks torch, so a vendor's backend counts too).
ACCELERATOR_DIST_BACKENDS = list(
    dict.fromkeys(a.backend for a in accelerators.BUILTINS.values() if a.binds_devices)
)

#: Per-test timeout when neither the cell, the class nor the test sets one.
DEFAULT_TIMEOUT = 300.0

_UNLIMITED = sys.maxsize


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return value


def detected_accelerator() -> str | None:
    """The accelerator torch sees (cuda, xpu, hpu, a PrivateUse1 name), or None."""
    accel = getattr(torch, "accelerator", None)
    if accel is None or not accel.is_available():
        return None
    current = accel.current_accelerator()
    return None if current is None else current.type


def host_device_count(device_type: str) -> int:
    """How many ranks of ``device_type`` this host can serve, without spawning.

    CPU ranks are processes, so CPU has no device limit (``sys.maxsize``).
    ROCm reports itself as ``cuda``; ``rocm`` (any accelerator name) is accepted.
    The one answer lives in :func:`harness.hosts.torch_device_count`.
    """
    if device_type in accelerators.BUILTINS:
        device_type = accelerators.BUILTINS[device_type].device
    return hosts.torch_device_count(device_type) or 0


def bind_device(device_type: str, index: int) -> None:
    """Make device ``index`` of ``device_type`` this process's current one.

    Through ``torch.accelerator`` when ``device_type`` is the current accelerator
    (cuda, xpu, hpu, a PrivateUse1 device such as npu), else its device module.
    """
    current = detected_accelerator()
    if current == device_type:
        torch.accelerator.set_device_index(index)
    else:
        torch.get_device_module(device_type).set_device(index)


def is_rocm() -> bool:
    return getattr(torch.version, "hip", None) is not None


def default_backend(device_type: str) -> str:
    """The backend torch pairs with ``device_type``, after the plugins registered theirs."""
    return hosts.default_backend(device_type)


def backend_available(backend: str) -> bool:
    """Whether every backend named in ``backend`` (``cpu:gloo,cuda:nccl`` too) is usable."""
    return hosts.backend_available(backend)


def needs_accelerator(backend: str) -> bool:
    """Whether ``backend`` has a part that cannot run on cpu (one device per rank)."""
    for _, name in accelerators.mixed_parts(backend):
        capable = dist.Backend.backend_capability.get(name.lower())
        if capable is None:  # not registered (yet): the table's word
            capable = ["cpu"] if name not in ACCELERATOR_DIST_BACKENDS else []
        if "cpu" not in capable:
            return True
    return False


def _detect() -> tuple[str, int, str, int]:
    accel = detected_accelerator()
    device_type = os.environ.get("HARNESS_DEVICE", "").strip() or accel or "cpu"
    if device_type in accelerators.BUILTINS:  # an accelerator's name (rocm): its device type
        device_type = accelerators.BUILTINS[device_type].device
    count = host_device_count(device_type) if device_type != "cpu" else 0
    backend = os.environ.get("HARNESS_BACKEND", "").strip() or default_backend(device_type)
    world = _env_int("HARNESS_WORLD_SIZE")
    if world is None:
        world = min(4, max(2, count)) if (device_type == "cuda" and is_rocm()) else 4
        if device_type != "cpu" and count > 1:
            world = min(world, count)
    return device_type, count, backend, world


# DEVICE_COUNT counts accelerators (0 on CPU); NUM_DEVICES is the default world
# size: the cell's, else upstream's policy.
DEVICE_TYPE, DEVICE_COUNT, PG_BACKEND, NUM_DEVICES = _detect()


def cell_world_size() -> int | None:
    """The active cell's world size (its device budget), or None outside a cell."""
    return _env_int("HARNESS_WORLD_SIZE")


def harness_mode() -> str:
    """``native`` (each class as it says), ``local`` (LocalTensor for all) or ``fake``
    (a few ranks of the world, each its own process, on the fake process group)."""
    mode = os.environ.get("HARNESS_MODE", "native").strip().lower() or "native"
    if mode not in ("native", "local", "fake"):
        raise ValueError(f"HARNESS_MODE={mode!r}: use 'native', 'local' or 'fake'")
    return mode


def _int_list(name: str) -> tuple[int, ...]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ()
    try:
        return tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"{name}={raw!r}: use comma-separated whole numbers") from None


def mesh_shape() -> tuple[int, ...]:
    """The active fake cell's mesh shape (HARNESS_MESH), or () for a 1-D mesh."""
    return _int_list("HARNESS_MESH")


def fake_ranks(world_size: int) -> tuple[int, ...]:
    """The ranks a fake cell runs: HARNESS_FAKE_RANKS below ``world_size``, else the
    first, the middle and the last (the ones whose shards are uneven first)."""
    chosen = tuple(r for r in _int_list("HARNESS_FAKE_RANKS") if 0 <= r < world_size)
    return chosen or tuple(sorted({0, (world_size - 1) // 2, world_size - 1}))


def default_timeout() -> float:
    raw = os.environ.get("HARNESS_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"HARNESS_TIMEOUT={raw!r} is not a number of seconds") from None
    return value if value > 0 else DEFAULT_TIMEOUT


def has_accelerator() -> bool:
    return DEVICE_TYPE != "cpu" and DEVICE_COUNT > 0


__all__ = [
    "ACCELERATOR_DIST_BACKENDS",
    "DEVICE_COUNT",
    "DEVICE_TYPE",
    "NUM_DEVICES",
    "PG_BACKEND",
    "backend_available",
    "bind_device",
    "cell_world_size",
    "default_backend",
    "default_timeout",
    "fake_ranks",
    "harness_mode",
    "host_device_count",
    "mesh_shape",
]
