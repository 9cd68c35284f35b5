"""PyTorch's device-type idiom over the kit's bases, as torch 2.15's DTensor files use it.

``instantiate_device_type_tests(Cls, globals(), only_for=/except_for=, allow_xpu=)``
makes ``ClsCPU`` (one class per device type) whose tests take a ``device`` argument
and whose ``device_type`` is that class's. These are the kit's own tests of the idiom
over its threads, process and pool bases (and, under ``--harness-mode local``, their
LocalTensor variants).
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.testing._internal.common_device_type import instantiate_device_type_tests

from harness import DTensorContinuousTestBase, DTensorOpTestBase, DTensorTestBase, with_comms


class ShardsOnEveryDevice:
    """One test body, run on each base: shard on the instantiated device, gather back."""

    world_size = 2

    def check(self, device: str) -> None:
        self.assertEqual(self.device_type, torch.device(device).type)
        mesh = self.build_device_mesh()
        self.assertEqual(mesh.device_type, self.device_type)
        full = torch.arange(8.0, device=device)
        sharded = distribute_tensor(full, mesh, [Shard(0)])
        self.assertEqual(sharded.to_local().shape, (8 // self.world_size,))
        self.assertEqual(sharded.redistribute(mesh, [Replicate()]).to_local(), full)


class ThreadsByDevice(ShardsOnEveryDevice, DTensorOpTestBase):
    @with_comms
    def test_shard(self, device):
        self.check(device)


class ProcessByDevice(ShardsOnEveryDevice, DTensorTestBase):
    @with_comms
    def test_shard(self, device):
        self.check(device)


class PoolByDevice(ShardsOnEveryDevice, DTensorContinuousTestBase):
    def test_shard(self, device):
        self.check(device)


instantiate_device_type_tests(ThreadsByDevice, globals(), only_for=("cpu",))
instantiate_device_type_tests(ProcessByDevice, globals(), except_for=("cuda", "xpu", "mps"))
instantiate_device_type_tests(PoolByDevice, globals(), only_for=("cpu",), allow_xpu=True)
# (it takes each generic class out of the module: only the instantiated classes run)


def test_one_class_per_device_type_and_only_those_asked_for():
    made = sorted(name for name in globals() if name.endswith("ByDeviceCPU"))
    assert made == ["PoolByDeviceCPU", "ProcessByDeviceCPU", "ThreadsByDeviceCPU"]
    assert not [name for name in globals() if name.endswith(("CUDA", "XPU", "MPS"))]
    assert {globals()[name].device_type for name in made} == {"cpu"}
