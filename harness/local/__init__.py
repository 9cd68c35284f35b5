"""LocalTensor mode: one process simulates every rank of a DTensor test.

``torch.distributed._local_tensor`` keeps one shard per simulated rank and
computes collectives locally, so an 8- or 16-rank test runs on one CPU or one
GPU. This package is the kit's only door to it: torch's names are re-exported
here behind a version gate (torch >= 2.10), and the kit adds what a test suite
needs around them -- :func:`simulate` (a fake process group, the mode, per-rank
``dist.get_rank``), the ``Local*`` test bases, and :func:`run_locally`, which
the bases call when a ``-Nsim`` cell or ``--harness-mode=local`` asks for it.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.local.gaps import NotSimulable, simulation_gap
from harness.local.helpers import (
    map_local_for_rank,
    map_local_tensor_for_rank,
    rank_symint,
    reduce_local_int,
)
from harness.local.simulate import Simulation, simulate

# torch's own LocalTensor names, resolved on first use so ``import harness.local``
# works on any torch and the version error appears where the feature is used.
_TORCH_NAMES = ("LocalTensor", "LocalTensorMode", "LocalIntNode", "LocalRunnerMode")

# names on the bases' floor or the runner's, imported only when used
_BASE_NAMES = {
    "LocalDTensorTestBase": "harness.local.bases",
    "LocalDTensorOpTestBase": "harness.local.bases",
    "LocalDTensorContinuousTestBase": "harness.local.bases",
    "create_local_tensor_test_class": "harness.local.bases",
    "local_variant": "harness.local.runner",
    "run_locally": "harness.local.runner",
}

__all__ = [
    *_TORCH_NAMES,
    *_BASE_NAMES,
    "NotSimulable",
    "Simulation",
    "map_local_for_rank",
    "map_local_tensor_for_rank",
    "rank_symint",
    "reduce_local_int",
    "simulate",
    "simulation_gap",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from harness import compat

        value = getattr(compat.local_tensor_module(), name)
    elif name in _BASE_NAMES:
        value = getattr(importlib.import_module(_BASE_NAMES[name]), name)
    else:
        raise AttributeError(f"module 'harness.local' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
