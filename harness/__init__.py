"""dtensor-harness: a public, versioned kit for testing PyTorch DTensor.

Everything a test author imports comes from here. The torch-side API is
re-exported lazily (PEP 562), so ``import harness.matrix`` -- used by noxfiles
and ``harness doctor`` where torch may be absent -- stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness._version import __version__

# public name -> submodule that defines it. One table, so the API is reviewable
# in one place and nothing imports torch until a name is used.
_EXPORTS: dict[str, str] = {
    # matrix (torch-free)
    "Matrix": "harness.matrix",
    "Cell": "harness.matrix",
    "MatrixError": "harness.matrix",
    "load_matrix": "harness.matrix",
    # devices
    "DEVICE_TYPE": "harness.devices",
    "DEVICE_COUNT": "harness.devices",
    "PG_BACKEND": "harness.devices",
    "NUM_DEVICES": "harness.devices",
    "ACCELERATOR_DIST_BACKENDS": "harness.devices",
    # test bases
    "DTensorTestBase": "harness.bases",
    "DTensorOpTestBase": "harness.bases",
    "DTensorContinuousTestBase": "harness.bases",
    "DTensorTestMixin": "harness.bases",
    "with_comms": "harness.bases",
    "skip_unless_torch_gpu": "harness.bases",
    "skip_if_lt_x_gpu": "harness.bases",
    "requires_nccl": "harness.skips",
    "requires_gloo": "harness.skips",
    "TEST_SKIPS": "harness.bases",
    "TestSkip": "harness.bases",
    "run_subtests": "harness.bases",
    "timeout_after": "harness.bases",
    "run_tests": "harness.testcase",
    # requirements stated as capabilities (decided in the parent, before any rank)
    "Capability": "harness.requirements",
    "requires_capabilities": "harness.requirements",
    # torch 2.15's hw_classification enum (torch's own where it has one, else the kit's twin)
    "HardwareClassification": "harness.testcase",
    # accelerators (torch-free)
    "Accelerator": "harness.accelerators",
    # LocalTensor mode
    "shapes_only": "harness.fake",
    "CommLedger": "harness.comms",
    "Collective": "harness.comms",
    "ValuesNotComputed": "harness.fake",
    "LocalTensor": "harness.local",
    "LocalTensorMode": "harness.local",
    "LocalIntNode": "harness.local",
    "map_local_tensor_for_rank": "harness.local",
    "map_local_for_rank": "harness.local",
    "reduce_local_int": "harness.local",
    "LocalDTensorTestBase": "harness.local",
    "LocalDTensorOpTestBase": "harness.local",
    "LocalDTensorContinuousTestBase": "harness.local",
    "create_local_tensor_test_class": "harness.local",
    # reference models
    "RMSNormPython": "harness.models",
    "MLPModule": "harness.models",
    "MLPStacked": "harness.models",
    "ModelArgs": "harness.models",
    "Attention": "harness.models",
    "FeedForward": "harness.models",
    "Experts": "harness.models",
    "ExpertLayer": "harness.models",
    "TransformerBlock": "harness.models",
    "Transformer": "harness.models",
    "TensorParallelForExpert": "harness.models",
    "ExpertParallel": "harness.models",
    "ExpertParallelWithTP": "harness.models",
    # converter and op checks
    "DTensorConverter": "harness.converter",
    "validate_sharding_rule_sample": "harness.converter",
    "validate_sharding_rule_sample_backward": "harness.converter",
    "op_strategy_context": "harness.converter",
    # shard order
    "shard_order_to_placement": "harness.shard_order",
    "generate_shard_orders": "harness.shard_order",
    "redistribute_with_shard_order": "harness.shard_order",
    "distribute_with_shard_order": "harness.shard_order",
    "make_full_tensor": "harness.shard_order",
    # upstream's names for the two above, so a moved test keeps its calls
    "redistribute": "harness.shard_order",
    "patched_distribute_tensor": "harness.shard_order",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
