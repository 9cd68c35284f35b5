"""The ``Local*`` test bases: the kit's bases with every rank simulated in this process.

A ``Local*`` base (or any base when the cell's mode is ``local``) runs its test
body once in this process under :func:`~harness.local.simulate`, where ``rank``
is a per-rank SymInt, the process group is fake, meshes are built outside the
mode and ``init_manual_seed_for_rank`` seeds every simulated rank with its own
number, as real ranks would be seeded. What changes, and the runner the bases
call, live in :mod:`harness.local.runner`, which does not import the bases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from harness import bases
from harness.local.gaps import NotSimulable
from harness.local.runner import LocalMixin, local_variant, run_locally


class LocalDTensorTestBase(LocalMixin, bases.DTensorTestBase):
    """DTensorTestBase with every rank simulated in this process."""


class LocalDTensorOpTestBase(LocalMixin, bases.DTensorOpTestBase):
    """DTensorOpTestBase with every rank simulated in this process."""


class LocalDTensorContinuousTestBase(LocalMixin, bases.DTensorContinuousTestBase):
    """DTensorContinuousTestBase with every rank simulated in this process."""


def create_local_tensor_test_class(
    cls: type,
    skipped_tests: Iterable[str] | None = None,
    base_class: type = LocalDTensorTestBase,
) -> type:
    """``<Name>WithLocalTensor``: the tests of ``cls`` on simulated ranks.

    The new class has ``base_class`` first, then ``cls``'s own bases, and a
    copy of ``cls``'s body, so the test's own methods win over the base. Tests
    named in ``skipped_tests`` are reported as skips, not silently dropped.
    """
    skipped = set(skipped_tests or ())
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    for name in skipped:
        if hasattr(cls, name):  # a name the class lacks must not become a new test
            body[name] = _skipped(name, cls.__name__)
    body["rank_mode"] = "local"
    name = f"{cls.__name__}WithLocalTensor"
    body["__qualname__"] = name
    new_bases = (base_class, *(b for b in cls.__bases__ if b is not base_class))
    return type(name, new_bases, body)


def _skipped(name: str, owner: str) -> Callable[[Any], None]:
    def test(self: Any) -> None:
        raise NotSimulable(f"{owner}.{name} is in this class's skipped_tests")

    test.__name__ = name
    return test


__all__ = [
    "LocalDTensorContinuousTestBase",
    "LocalDTensorOpTestBase",
    "LocalDTensorTestBase",
    "create_local_tensor_test_class",
    "local_variant",
    "run_locally",
]
