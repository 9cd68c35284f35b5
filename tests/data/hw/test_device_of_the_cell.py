"""PyTorch's device-type idiom on whatever cell runs it (tests/test_hw_classes.py runs it
on the declared accelerator acme, tests/data/acme/): each instantiated class is for the
cell's device type, its ranks' groups are on the cell's backend, and its hw class counts."""

import os

import torch
import torch.distributed as dist
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.testing._internal.common_device_type import instantiate_device_type_tests

from harness import DTensorTestBase, HardwareClassification, with_comms


class OnTheCellsDevice(DTensorTestBase):
    hw_classification = HardwareClassification.ACCELERATOR

    @property
    def world_size(self):
        return 2

    @with_comms
    def test_device_backend_and_mesh(self, device):
        self.assertEqual(torch.device(device).type, os.environ["HARNESS_DEVICE"])
        self.assertEqual(self.device_type, os.environ["HARNESS_DEVICE"])
        self.assertEqual(dist.get_backend(), os.environ["HARNESS_BACKEND"])
        mesh = self.build_device_mesh()
        self.assertEqual(mesh.device_type, self.device_type)
        full = torch.arange(4.0, device=device)
        sharded = distribute_tensor(full, mesh, [Shard(0)])
        self.assertEqual(sharded.redistribute(mesh, [Replicate()]).to_local(), full)


class DeviceAgnostic(DTensorTestBase):
    hw_classification = HardwareClassification.GENERIC

    def test_device_agnostic(self):
        pass


instantiate_device_type_tests(OnTheCellsDevice, globals())
