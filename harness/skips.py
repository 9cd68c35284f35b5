"""Why a test is skipped, decided in the parent before any rank is spawned.

Upstream decides "too few GPUs" inside each spawned rank (a skipped test then
costs a full spawn) and its decorators read a module constant, not the class's
world size. Here the requirement decorators only mark the test; the bases ask
:func:`requirement_skip` before spawning, and the same decorators still skip
when called inside a rank, in threads or in LocalTensor mode.
"""

from __future__ import annotations

import functools
import os
import unittest
from collections.abc import Callable
from typing import Any, TypeVar

from harness import devices, requirements
from harness.outcomes import (  # noqa: F401 (re-exported: the bases and tests use them here)
    TEST_SKIPS,
    TestSkip,
    multi_gpu_skip,
    skip_reason_for_exit_code,
)
from harness.ranks import external

# unittest leaves this module's frames out of failure tracebacks
__unittest = True

T = TypeVar("T")


def accelerator_budget() -> int:
    """Accelerators a test may use: the host's, capped by the active cell's world size."""
    accel = devices.detected_accelerator()
    if accel is None:
        return 0
    count = devices.host_device_count(accel)
    granted = external.accelerator_budget(count)  # under a launcher: every node's devices
    if granted is not None:
        count = granted
    cell = devices.cell_world_size()
    return min(count, cell) if cell is not None else count


def _needs(x: int | str, allow_cpu: bool) -> Callable[[T], T]:
    def decorator(func: T) -> T:
        @functools.wraps(func)  # type: ignore[arg-type]
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            test = args[0] if args else None
            reason = _accelerator_shortfall(test, x, allow_cpu)
            if reason is not None:
                raise unittest.SkipTest(reason)
            return func(*args, **kwargs)  # type: ignore[operator]

        wrapper._harness_needs_accelerators = (x, allow_cpu)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def _accelerator_shortfall(test: Any, x: int | str, allow_cpu: bool) -> str | None:
    need = x
    if need == "world_size":
        need = getattr(test, "world_size", devices.NUM_DEVICES)
    have = accelerator_budget()
    if have >= int(need):
        return None
    if allow_cpu and devices.detected_accelerator() is None:
        return None
    return multi_gpu_skip(int(need)).message


def skip_if_lt_x_gpu(x: int, *, allow_cpu: bool = False) -> Callable[[T], T]:
    """Skip unless ``x`` accelerators are available (and granted by the cell).

    ``allow_cpu=True`` runs the test on hosts with no accelerator at all.
    """
    return _needs(int(x), allow_cpu)


def skip_unless_torch_gpu(method: T) -> T:
    """Skip unless there is one accelerator per rank of *this class's* world size."""
    return _needs("world_size", False)(method)


def requires_nccl() -> Callable[[T], T]:
    """Skip unless this torch was built with the NCCL backend (upstream's ``requires_nccl``).

    For a test or a whole class; decided where the decorator is applied, so no rank
    is spawned to find out.
    """
    return _requires_backend("nccl")


def requires_gloo() -> Callable[[T], T]:
    """Skip unless this torch was built with the Gloo backend (upstream's ``requires_gloo``)."""
    return _requires_backend("gloo")


def _requires_backend(backend: str) -> Callable[[T], T]:
    import torch
    import torch.distributed as dist

    built = getattr(dist, f"is_{backend}_available", lambda: False)()
    reason = f"needs the {backend} backend; torch {torch.__version__} was built without it"
    return unittest.skipUnless(built, reason)


def needs(
    *, ranks: int = 1, even: bool = False, divides: int | None = None, local: bool | str = True
) -> Callable[[T], T]:
    """Mark a test with what it needs of the world size (decided before any rank starts).

    ``divides``: the world size must divide this number (e.g. heads of a model).
    ``local=False`` (or the reason, as a string): the test has no meaning when one
    process simulates the ranks.
    """

    def decorator(func: T) -> T:
        func._harness_needs_world = {  # type: ignore[attr-defined]
            "ranks": ranks, "even": even, "divides": divides, "local": local,
        }  # fmt: skip
        return func

    return decorator


def world_shortfall(need: dict | None, world: int, simulated: bool) -> str | None:
    """Why a test marked with :func:`needs` cannot run at this world size, or None."""
    if not need:
        return None
    if world < need["ranks"]:
        return f"needs at least {need['ranks']} ranks; the cell has {world}"
    if need["even"] and world % 2:
        return f"needs an even world size; the cell has {world}"
    if need["divides"] and need["divides"] % world:
        return f"needs a world size that divides {need['divides']}; the cell has {world}"
    if simulated and need["local"] is not True:
        why = need["local"] or "needs one process per rank"
        return f"not simulated in LocalTensor mode: {why}"
    return None


# -- the checks, in the order their reasons are reported ----------------------------------
def _cell_grants(test: Any, method: str, local: bool) -> str | None:
    world = int(test.world_size)
    cell = devices.cell_world_size()
    if cell is not None and world > cell:
        name = os.environ.get("HARNESS_CELL") or f"HARNESS_WORLD_SIZE={cell}"
        return f"needs world size {world}; the cell {name} grants {cell}"
    return None


def _accelerators(test: Any, method: str, local: bool) -> str | None:
    marked = getattr(getattr(type(test), method, None), "_harness_needs_accelerators", None)
    return None if marked is None else _accelerator_shortfall(test, *marked)


def _capabilities(test: Any, method: str, local: bool) -> str | None:
    """``@requires_capabilities``, decided here rather than in a rank."""
    return requirements.unmet(requirements.required_by(test, method))


def _backend(test: Any, method: str, local: bool) -> str | None:
    if local:
        return None  # one process simulates the ranks: no collective backend runs
    try:
        backend = test.backend
    except Exception:  # a backend property that needs a rank: decide in the rank
        backend = None
    if callable(backend):
        backend = backend()
    if isinstance(backend, str) and backend:
        world = int(test.world_size)
        if not devices.backend_available(backend):
            return f"{TEST_SKIPS['backend_unavailable'].message} ({backend})"
        if devices.needs_accelerator(backend) and accelerator_budget() < world:
            return f"{multi_gpu_skip(world).message} for backend {backend}"
    return None


def _world_needs(test: Any, method: str, local: bool) -> str | None:
    marked = getattr(getattr(type(test), method, None), "_harness_needs_world", None)
    return world_shortfall(marked, int(test.world_size), simulated=local)


_CHECKS = (_cell_grants, _accelerators, _capabilities, _backend, _world_needs)


def requirement_skip(
    test: unittest.TestCase, method: str, *, local: bool = False, fake: bool = False
) -> str | None:
    """Why ``test`` cannot run here, decided without spawning; None when it can.

    ``local``: the ranks are simulated in this process (LocalTensor mode);
    ``fake``: each rank runs on the fake group, which needs no backend or device.
    """
    for check in _CHECKS:
        if fake and check in (_accelerators, _backend):
            continue
        reason = check(test, method, local)
        if reason is not None:
            return reason
    return None
