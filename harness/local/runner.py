"""LocalTensor mode's runner: one process plays every rank of a test.

What changes when one process simulates the ranks (:class:`LocalMixin`), the
variant of any test class with those changes (:func:`local_variant`), and the
runner the bases' mode table names for ``local`` (:func:`run_job`). It knows
nothing of the bases, so the bases can name it and :mod:`harness.local.bases`
can build the ``Local*`` classes on both. A body that hits a known LocalTensor
limitation is skipped with the reason (see :mod:`harness.local.gaps`).
"""

from __future__ import annotations

import contextlib
import unittest
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from harness import compat, devices
from harness.local.gaps import NotSimulable, simulation_gap
from harness.local.helpers import rank_symint
from harness.local.simulate import init_fake_process_group, simulate
from harness.outcomes import skip_reason_for_exit_code
from harness.variants import mode_variant

# unittest (and pytest's unittest support) leave this module's frames out of a failure's
# traceback, so a side worker's shows the test's own, as a rank's does
__unittest = True


class LocalMixin:
    """What changes when one process plays every rank."""

    rank_mode: ClassVar[str] = "local"

    @property
    def is_local_tensor_enabled(self) -> bool:
        return True

    @property
    def rank(self) -> Any:
        return rank_symint(self.world_size)

    @rank.setter
    def rank(self, value: Any) -> None:
        """Ranks are simulated; a runner assigning one has nothing to set."""

    @property
    def device_type(self) -> str:
        # one device serves every simulated rank, so the count does not matter
        return devices.DEVICE_TYPE if devices.has_accelerator() else "cpu"

    def _get_local_tensor_mode(self) -> Any:
        return compat.local_tensor_module().LocalTensorMode(frozenset(range(self.world_size)))

    def init_pg(self, eager_init: bool = False, backend: str | None = None) -> None:
        """A fake group over all simulated ranks (the runner has usually made it)."""
        self._harness_local_owns_pg = init_fake_process_group(self.world_size)

    def destroy_pg(self, device_id: int | None = None) -> None:
        if getattr(self, "_harness_local_owns_pg", False) and dist.is_initialized():
            dist.destroy_process_group()
        self._harness_local_owns_pg = False

    def build_device_mesh(self) -> Any:
        from torch.distributed.device_mesh import init_device_mesh

        with _mode_disabled():
            return init_device_mesh(self.device_type, (self.world_size,))

    def init_manual_seed_for_rank(self) -> None:
        if compat.local_tensor_module().enabled_local_tensor_mode() is not None:
            torch.manual_seed(self.rank)  # each simulated rank gets its own seed
        else:
            torch.manual_seed(0)

    def join_or_run(self, fn: Callable[[], Any]) -> Callable[..., Any]:
        return lambda *_: fn()

    # ``if self.rank == rank`` is False for every simulated rank at once, which
    # would turn these checks into silent passes: compare that rank's values.
    def assertEqualOnRank(self, x: Any, y: Any, msg: Any = None, *, rank: int = 0) -> None:  # noqa: N802
        self.assertEqual(_on_rank(x, rank), _on_rank(y, rank), msg=msg)

    def assertNotEqualOnRank(self, x: Any, y: Any, msg: Any = None, *, rank: int = 0) -> None:  # noqa: N802
        self.assertNotEqual(_on_rank(x, rank), _on_rank(y, rank), msg=msg)


def _on_rank(value: Any, rank: int) -> Any:
    """``value`` as simulated rank ``rank`` holds it (LocalTensors, per-rank ints)."""
    local_tensors = getattr(value, "_local_tensors", None)
    if isinstance(local_tensors, dict):
        return local_tensors[rank]
    local_ints = getattr(getattr(value, "node", None), "_local_ints", None)
    if isinstance(local_ints, dict):
        return local_ints[rank]
    if isinstance(value, (list, tuple)):
        return type(value)(_on_rank(v, rank) for v in value)
    if isinstance(value, dict):
        return {k: _on_rank(v, rank) for k, v in value.items()}
    return value


def _mode_disabled() -> contextlib.AbstractContextManager:
    return compat.local_tensor_module().maybe_disable_local_tensor_mode()


def local_variant(cls: type) -> type:
    """``cls`` with the local overrides, where ``cls`` did not set its own.

    Used for the mode override: a class written for processes is run as its
    LocalTensor variant without editing it. What the test class itself defines
    (a ``device_type``, a ``build_device_mesh``) is kept; what it inherits from
    the kit is replaced.
    """
    return mode_variant(cls, LocalMixin)


def run_locally(case: Any, method_name: str) -> Any:
    """Run ``case.method_name`` once as all of its ranks (the bases' local mode).

    A known LocalTensor limitation becomes a skip naming it, and so does a torch
    without LocalTensor (< 2.10); every other exception is the test's own failure
    and propagates unchanged.
    """
    __tracebackhide__ = True
    missing = compat.local_tensor_missing()
    if missing:
        raise unittest.SkipTest(missing)
    original, direct = type(case), getattr(case, "_harness_direct", False)
    case.__class__ = local_variant(original)
    case._harness_direct = True  # the body itself, not the bases' dispatch again
    try:
        with simulate(case.world_size, case.device_type):
            try:
                return getattr(case, method_name)()
            except SystemExit as exc:  # sys.exit(TEST_SKIPS[...].exit_code), as ranks do
                reason = skip_reason_for_exit_code(exc.code)
                if reason is None:
                    raise
                raise unittest.SkipTest(reason) from None
            except Exception as exc:
                reason = simulation_gap(exc)
                if reason is None:
                    raise
                raise NotSimulable(reason) from exc
    finally:
        case.__class__ = original
        case._harness_direct = direct


def run_job(job: Any) -> Any:
    """The ``local`` row of the bases' mode table: a :class:`harness.ranks.Job` in this process.

    The body's own exception propagates unchanged; otherwise the test passed.
    """
    __tracebackhide__ = True
    from harness.ranks import side
    from harness.ranks.outcome import Verdict

    done = side.take(job.cls, job.method)  # the side lane ran it beside the rank tests
    if done is not None:
        side.replay(done)
        done.raise_if_not_passed(job.name, job.rerun)
        return Verdict("passed")
    test = job.test
    test._harness_direct = True
    try:
        run_locally(test, job.method)
    finally:
        test._harness_direct = False
    return Verdict("passed")


__all__ = ["LocalMixin", "local_variant", "run_job", "run_locally"]
