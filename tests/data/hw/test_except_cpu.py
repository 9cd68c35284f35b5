"""``instantiate_device_type_tests(..., except_for="cpu")``, as PyTorch's accelerator
files write it: on a cell of the declared accelerator ``widget`` (matrix.toml here),
the class made is widget's, in every rank."""

import os

import torch
from torch.testing._internal.common_device_type import instantiate_device_type_tests

from harness import DTensorTestBase, HardwareClassification


class OnTheAccelerator(DTensorTestBase):
    hw_classification = HardwareClassification.ACCELERATOR

    @property
    def world_size(self):
        return 2

    def test_device_type(self, device):
        self.assertEqual(self.device_type, os.environ["HARNESS_DEVICE"])
        self.assertEqual(torch.device(device).type, os.environ["HARNESS_DEVICE"])
        self.assertEqual(int(os.environ["WORLD_SIZE"]), 2)


instantiate_device_type_tests(OnTheAccelerator, globals(), except_for="cpu")
