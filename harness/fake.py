"""Fake mode, test side: a test runs as a few ranks of a world of thousands.

Each chosen rank is its own process (:mod:`harness.ranks.fake` starts them) on
c10d's fake process group, where every collective returns at once and moves no
data. So what DTensor decides is real -- meshes, placements, local shapes and
strides, redistribute plans, the collectives it issues and their sizes -- and
what it computes is not. This module says which tests may run that way and
makes the rest explicit:

- :func:`shapes_only` marks a test (or class) that checks only shapes, dtypes,
  placements, strides and communication; in a fake cell every other test is
  skipped, with the reason, before any process starts;
- in a marked test, an ``assertEqual`` that compares tensor values fails with a
  message that says why, instead of passing on garbage;
- :func:`fake_variant` gives a class the fake group, the cell's mesh shape
  (``HARNESS_MESH``) and a plain int ``rank``, the way
  :func:`harness.local.local_variant` gives it LocalTensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
import torch.distributed as dist

from harness import compat, devices
from harness.variants import mode_variant

T = TypeVar("T")

_MARK = "_harness_shapes_only"
#: Why a test that is not marked does not run in a fake cell.
NEEDS_VALUES = (
    "compares values, which a fake cell does not compute (its collectives move no data); "
    "it runs in native and -sim cells. Mark it @harness.shapes_only if it checks only "
    "shapes, placements and communication"
)


def shapes_only(obj: T) -> T:
    """Mark a test method or class as checking only shapes, placements and collectives.

    Such a test runs in fake cells too (as every test runs in the others); an
    ``assertEqual`` on tensor values inside it fails there with the reason.
    """
    setattr(obj, _MARK, True)
    return obj


def is_shapes_only(test: Any, method: str) -> bool:
    fn = getattr(type(test), method, None)
    return bool(getattr(fn, _MARK, False) or getattr(type(test), _MARK, False))


def fake_skip(test: Any, method: str) -> str | None:
    """Why ``test.method`` does not run in this fake cell, or None; decided in the parent."""
    missing = compat.fake_group_missing()
    if missing:
        return missing
    if not is_shapes_only(test, method):
        return NEEDS_VALUES
    return None


class ValuesNotComputed(AssertionError):
    """A shapes-only test compared tensor values in a fake cell."""


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


class FakeMixin:
    """What changes when this process is one rank of a fake world."""

    rank_mode: ClassVar[str] = "fake"

    @property
    def is_local_tensor_enabled(self) -> bool:
        return False

    @property
    def rank(self) -> int:
        return getattr(self, "_rank", -1)

    @rank.setter
    def rank(self, value: int) -> None:
        self._rank = value

    @property
    def device_type(self) -> str:
        # no device per rank: one process plays rank 4095 of 8192 with cpu tensors,
        # or the host's one accelerator where it has one
        return devices.DEVICE_TYPE if devices.has_accelerator() else "cpu"

    @property
    def backend(self) -> str:
        return "fake"

    @property
    def mesh_shape(self) -> tuple[int, ...]:
        """The cell's mesh shape (HARNESS_MESH) when it fits this world, else 1-D."""
        shape = devices.mesh_shape()
        return shape if shape and math.prod(shape) == self.world_size else (self.world_size,)

    def init_pg(self, eager_init: bool = False, backend: str | None = None) -> None:
        """This process becomes rank ``self.rank`` of a fake group of ``world_size``."""
        if dist.is_initialized():
            dist.destroy_process_group()
        compat.init_fake_group(int(self.rank), int(self.world_size))

    def destroy_pg(self, device_id: int | None = None) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _pg_after_error(self) -> None:
        self.destroy_pg()

    def build_device_mesh(self) -> Any:
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(self.device_type, self.mesh_shape)

    def init_manual_seed_for_rank(self) -> None:
        torch.manual_seed(int(self.rank))

    def join_or_run(self, fn: Callable[[], Any]) -> Callable[..., Any]:
        return lambda *_: fn()

    def assertEqual(self, x: Any, y: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        """Shapes, dtypes, placements and numbers compare for real; tensor values refuse."""
        __tracebackhide__ = True
        if _has_tensor(x) or _has_tensor(y):
            raise ValuesNotComputed(
                "assertEqual compares tensor values, which this fake cell does not compute "
                "(collectives move no data); compare .shape, .dtype, .placements, "
                ".to_local().shape or .stride() instead, or drop @shapes_only so the test "
                "runs only where values are real"
            )
        # copied into each variant class, so the next in line is found from the variant
        super(type(self), self).assertEqual(x, y, *args, **kwargs)  # type: ignore[misc]


def fake_variant(cls: type) -> type:
    """``cls`` with the fake overrides, where ``cls`` did not set its own (the ranks'
    ``variant``: a class written for processes, a pool or LocalTensor runs unedited)."""
    return mode_variant(cls, FakeMixin)


__all__ = [
    "NEEDS_VALUES",
    "FakeMixin",
    "ValuesNotComputed",
    "fake_skip",
    "fake_variant",
    "is_shapes_only",
    "shapes_only",
]
