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

import torch
import torch.distributed as dist

#: Backends that need one accelerator per rank.
ACCELERATOR_DIST_BACKENDS = ["nccl", "xccl", "hccl"]

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
    ROCm reports itself as ``cuda``; ``rocm`` is accepted as its alias.
    """
    if device_type in ("cpu", "meta"):
        return _UNLIMITED
    if device_type == "rocm":
        device_type = "cuda"
    try:
        module = torch.get_device_module(device_type)
    except (RuntimeError, AttributeError):
        return 0
    try:
        if hasattr(module, "is_available") and not module.is_available():
            return 0
        return int(module.device_count())
    except Exception:  # a broken driver counts as no device, not a crash
        return 0


def is_rocm() -> bool:
    return getattr(torch.version, "hip", None) is not None


def default_backend(device_type: str) -> str:
    try:
        return dist.get_default_backend_for_device(device_type)
    except (ValueError, RuntimeError, AttributeError):
        return dist.Backend.default_device_backend_map.get(device_type, "gloo")


def backend_available(backend: str) -> bool:
    """Whether every backend named in ``backend`` (``cpu:gloo,cuda:nccl`` too) is built."""
    checks = {
        "gloo": dist.is_gloo_available,
        "nccl": dist.is_nccl_available,
        "mpi": dist.is_mpi_available,
        "ucc": getattr(dist, "is_ucc_available", lambda: False),
        "xccl": getattr(dist, "is_xccl_available", lambda: False),
        "fake": lambda: True,
    }
    if not dist.is_available():
        return False
    for part in backend.split(","):
        name = part.split(":")[-1].strip()
        check = checks.get(name)
        if check is not None and not check():
            return False
    return True


def needs_accelerator(backend: str) -> bool:
    return any(name in backend for name in ACCELERATOR_DIST_BACKENDS)


def _detect() -> tuple[str, int, str, int]:
    accel = detected_accelerator()
    device_type = os.environ.get("HARNESS_DEVICE", "").strip() or accel or "cpu"
    if device_type == "rocm":
        device_type = "cuda"
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
    """``native`` (run each class as it says) or ``local`` (LocalTensor for all)."""
    mode = os.environ.get("HARNESS_MODE", "native").strip().lower() or "native"
    if mode not in ("native", "local"):
        raise ValueError(f"HARNESS_MODE={mode!r}: use 'native' or 'local'")
    return mode


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
    "cell_world_size",
    "default_backend",
    "default_timeout",
    "harness_mode",
    "host_device_count",
]
