"""The simulation context: everything a test body needs to run as N ranks.

:func:`simulate` is what the ``Local*`` bases and :func:`run_locally` enter
around a test, and what a script can use directly::

    with simulate(8) as sim:
        mesh = sim.build_mesh()
        dt = distribute_tensor(torch.randn(16, 4), mesh, [Shard(0)])

It registers c10d's ``fake`` backend (torch only registers it from its testing
package), starts a fake process group on an in-memory store, enters
LocalTensorMode over ranks ``0..N-1`` (one that steps aside while the body enters
its own over the same ranks), answers ``dist.get_rank()`` per rank, and
on the way out puts back everything it changed: the DTensor RNG tracker,
record-function hooks, ``dist.get_rank`` and the process group.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from harness import compat
from harness.local.helpers import rank_symint


@dataclass
class Simulation:
    """What :func:`simulate` hands the body: the ranks, the mode, a mesh builder."""

    world_size: int
    device_type: str
    mode: Any
    rank: Any = field(repr=False)

    def build_mesh(self, shape: tuple[int, ...] | None = None, **kwargs: Any) -> Any:
        """``init_device_mesh`` outside the mode, as a real rank 0 would build it."""
        from torch.distributed.device_mesh import init_device_mesh

        with self.mode.disable():
            return init_device_mesh(self.device_type, shape or (self.world_size,), **kwargs)


def _check_world_size(world_size: Any) -> int:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"simulate(world_size={world_size!r}): use a whole number >= 1")
    return world_size


@functools.cache
def _kit_mode_class() -> type:
    """LocalTensorMode that steps aside while a test's own mode over the same ranks is on top.

    A test that enters ``LocalTensorMode(world_size)`` itself (as PyTorch's tests
    of a class deriving from ``LocalDTensorTestBase`` do; PyTorch's base enters
    none around them) would otherwise run every op through both modes: the
    kit's turns each rank's plain result of the test's mode into a LocalTensor
    of its own, so a shard becomes a LocalTensor of LocalTensors and the work
    grows with the square of the ranks. While an equal mode is on top the
    kit's passes each op through untouched, so the test sees one mode, as
    under PyTorch's harness. A mode over other ranks nests as before.
    """
    lt = compat.local_tensor_module()

    class KitLocalTensorMode(lt.LocalTensorMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            top = lt.local_tensor_mode()
            if top is not self and top is not None and top.ranks == self.ranks:
                return func(*args, **(kwargs or {}))
            return super().__torch_dispatch__(func, types, args, kwargs)

    return KitLocalTensorMode


def init_fake_process_group(world_size: int) -> bool:
    """Start the fake default group for ``world_size`` ranks; False if one is up.

    A group that is already up must have the same size, or the simulation
    would answer collectives for the wrong world: that is refused.
    """
    compat.register_fake_backend()
    if dist.is_initialized():
        current = dist.get_world_size()
        if current != world_size or dist.get_backend() != "fake":
            raise RuntimeError(
                f"LocalTensor mode needs its own fake process group of {world_size} "
                f"ranks, but a {dist.get_backend()} group of {current} is already "
                "initialized in this process; destroy it first."
            )
        return False
    dist.init_process_group("fake", rank=0, world_size=world_size, store=dist.HashStore())
    return True


@contextlib.contextmanager
def _per_rank_get_rank(lt: Any) -> Iterator[None]:
    """``dist.get_rank(group)`` answers for every simulated rank while the mode is on.

    Under the fake group the real function says 0 for everyone, so a test that
    computes with ``dist.get_rank()`` would silently act as rank 0 N times. Only
    the ``torch.distributed`` attribute is replaced (what test code calls);
    c10d's own internal calls still see the fake group's rank 0, which the
    mode's mesh patches expect.
    """
    original = dist.get_rank
    if getattr(original, "_harness_local", False):  # nested simulate()
        yield
        return

    def get_rank(group: Any = None) -> Any:
        mode = lt.enabled_local_tensor_mode()
        if mode is None:
            return original(group)
        if group is None or group is dist.GroupMember.WORLD:
            return rank_symint(mode.ranks)
        return rank_symint(_group_ranks(group, mode.ranks))

    get_rank._harness_local = True  # type: ignore[attr-defined]
    get_rank.__doc__ = original.__doc__
    dist.get_rank = get_rank
    try:
        yield
    finally:
        dist.get_rank = original


def _group_ranks(group: Any, ranks: frozenset[int]) -> dict[int, int]:
    """Each simulated rank's rank in its copy of ``group`` (-1 if it has none).

    The process group object was made by rank 0; the ranks outside it hold the
    sibling group of the same shape (a DeviceMesh dimension), which is how
    LocalTensorMode runs collectives on it too.
    """
    members = dist.get_process_group_ranks(group)
    answer = {r: -1 for r in ranks}
    try:
        relative, offsets, _ = compat.local_tensor_collective_groups()(group)
    except (AssertionError, RuntimeError, ValueError):  # permuted: members only
        relative, offsets = members, [0]
    for offset in offsets:
        for index, rel in enumerate(relative):
            if offset + rel in answer:
                answer[offset + rel] = index
    return answer


@contextlib.contextmanager
def simulate(
    world_size: int,
    device_type: str = "cpu",
    *,
    seed: int | None = None,
    init_process_group: bool = True,
) -> Iterator[Simulation]:
    """Run the body once, as ``world_size`` ranks, under LocalTensorMode.

    ``seed`` seeds torch before the mode copies the RNG state to every rank
    (None keeps the caller's state: a test's ``setUp`` has seeded it already).
    ``init_process_group=False`` leaves the fake group to the caller.
    """
    world_size = _check_world_size(world_size)
    lt = compat.local_tensor_module()
    if device_type != "cpu":
        torch.get_device_module(device_type)  # a clear error for an unknown device
    owned_pg = init_process_group and init_fake_process_group(world_size)
    if seed is not None:
        torch.manual_seed(seed)
    if "torch._dynamo" in sys.modules:  # a compiled test must not reuse last test's graphs
        torch.compiler.reset()
    compat.set_record_function(False)
    mode = _kit_mode_class()(frozenset(range(world_size)))
    try:
        with _per_rank_get_rank(lt), mode:
            yield Simulation(world_size, device_type, mode, rank_symint(world_size))
    finally:
        compat.reset_dtensor_rng_tracker()
        compat.set_record_function(True)
        if owned_pg and dist.is_initialized():
            dist.destroy_process_group()
