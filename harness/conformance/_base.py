"""What every conformance test shares: the pool base, world-size needs, per-rank data.

Pool mode (ranks spawned once per class) keeps a whole cell's certification
under a minute or two; a ``-sim`` cell runs the same classes under LocalTensor.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from harness import DTensorContinuousTestBase
from harness.skips import needs, world_shortfall  # noqa: F401 (the suite's one way to skip)

T = TypeVar("T")


class ConformanceTestBase(DTensorContinuousTestBase):
    """The pool base; tests mark what they need of the world size with :func:`needs`."""

    def per_rank(self, func: Callable[[int], Any]) -> Any:
        """``func(rank)`` for this rank; for every simulated rank in LocalTensor mode."""
        if self.is_local_tensor_enabled:
            from harness.local import map_local_for_rank

            return map_local_for_rank(self.rank, func)
        return func(int(self.rank))

    def assert_per_rank(self, actual: Any, expected: Callable[[int], Any]) -> None:
        """``actual`` (an int, or a list of them) equals ``expected(rank)`` on every rank."""
        if not self.is_local_tensor_enabled:
            self.assertEqual(actual, expected(int(self.rank)))
            return
        world = int(self.world_size)
        self.assertEqual(_by_rank(actual, world), {r: expected(r) for r in range(world)})

    def mesh(self, shape: tuple[int, ...], names: tuple[str, ...] | None = None):
        """A device mesh, built outside LocalTensorMode as a real rank builds it."""
        from torch.distributed.device_mesh import init_device_mesh

        with self._outside_local():
            return init_device_mesh(self.device_type, shape, mesh_dim_names=names)

    def _outside_local(self):
        if not self.is_local_tensor_enabled:
            return contextlib.nullcontext()
        from harness import compat

        return compat.local_tensor_module().maybe_disable_local_tensor_mode()


def _by_rank(value: Any, world: int) -> dict[int, Any]:
    """{rank: value} of a per-rank SymInt, or of a list of them, under LocalTensor."""
    from harness.local import reduce_local_int

    if isinstance(value, (list, tuple)):
        parts = [_by_rank(v, world) for v in value]
        return {r: [p[r] for p in parts] for r in range(world)}
    values = reduce_local_int(value, lambda d: d)
    return {r: values.get(r, values.get(0)) for r in range(world)}


def all_ranks(world: int, func: Callable[[int], torch.Tensor]) -> list[torch.Tensor]:
    """What every rank holds, computed locally: the inputs behind an expected value."""
    return [func(r) for r in range(world)]


def quiet(func: T) -> T:
    """Tolerate the deprecation warnings some c10d entry points print on every call."""

    @functools.wraps(func)  # type: ignore[arg-type]
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return func(*args, **kwargs)  # type: ignore[operator]

    return wrapper  # type: ignore[return-value]
