"""torch's own ``requires_capabilities`` (torch >= 2.15, ``common_device_type``) under the kit.

A test decorated with torch's decorator is admitted or skipped by the kit's rules: a
capability the kit knows (``distributed.backend``, ``device.accelerator``, ...) is decided
by the kit's check, in the parent before any rank starts, with the kit's reason; one only
torch knows (``dtype.bf16``, ``attention.mem_efficient_attention``) by torch's device-type
test base for the device. torch 2.15.0's ``Capability`` has only the latter; its newer
files name the former as strings of the same spelling, as these tests do.
"""

from __future__ import annotations

import unittest

import pytest
import torch
from torch.testing._internal.common_device_type import instantiate_device_type_tests

from harness import DTensorOpTestBase, DTensorTestBase, compat, with_comms

torch_requires = compat.torch_requires_capabilities()
if torch_requires is None:
    pytest.skip(
        f"torch {torch.__version__} has no requires_capabilities in common_device_type "
        "(torch >= 2.15); the kit's own harness.requires_capabilities works on every torch",
        allow_module_level=True,
    )
from torch.testing._internal.common_device_type import Capability as TorchCapability  # noqa: E402


class TorchDecorated(DTensorOpTestBase):
    world_size = 2

    @torch_requires("distributed.backend")
    def test_backend_the_kit_admits(self, device):
        self.assertEqual(torch.ones(2, device=device).sum().item(), 2.0)

    @torch_requires("device.accelerator")
    def test_accelerator_the_kit_refuses_on_cpu(self, device):
        raise AssertionError("ran on a cell without an accelerator")

    @torch_requires(TorchCapability.dtype.bf16)
    def test_bf16_torchs_cpu_base_supports(self, device):
        self.assertEqual(torch.ones(2, device=device, dtype=torch.bfloat16).dtype, torch.bfloat16)

    @torch_requires(TorchCapability.attention.mem_efficient_attention)
    def test_mem_efficient_attention_torchs_cpu_base_lacks(self, device):
        raise AssertionError("ran although torch's cpu base says no")

    @torch_requires("distributed.nothing_declares_this")
    def test_undeclared_fails_as_in_torch(self, device):
        pass


# made the way PyTorch's files make them, in a scope of their own: the tests below run
# them one by one (pytest would only report torch's skip as a skip, not its reason)
_made = {"TorchDecorated": TorchDecorated}
instantiate_device_type_tests(TorchDecorated, _made, only_for=("cpu",))
TorchDecoratedCPU = _made["TorchDecoratedCPU"]
TorchDecoratedCPU.__test__ = False


class PlainKitClass(DTensorTestBase):
    """No instantiate_device_type_tests: torch's decorator still asks the kit."""

    world_size = 2

    @torch_requires("device.accelerator")
    @with_comms
    def test_accelerator(self):
        raise AssertionError("ran on a cell without an accelerator")


PlainKitClass.__test__ = False


def _run(cls: type, name: str) -> unittest.TestResult:
    result = unittest.TestResult()
    cls(name).run(result)
    return result


def test_a_capability_the_kit_knows_is_admitted_by_the_kit():
    result = _run(TorchDecoratedCPU, "test_backend_the_kit_admits_cpu")
    assert result.wasSuccessful() and not result.skipped, result.errors + result.failures


def test_a_capability_the_kit_knows_is_refused_with_the_kits_reason():
    result = _run(TorchDecoratedCPU, "test_accelerator_the_kit_refuses_on_cpu_cpu")
    assert not result.failures and not result.errors
    [(_, reason)] = result.skipped
    assert reason.startswith("requires device.accelerator: needs an accelerator device"), reason


def test_a_capability_only_torch_knows_is_torchs_base_answer():
    admitted = _run(TorchDecoratedCPU, "test_bf16_torchs_cpu_base_supports_cpu")
    assert admitted.wasSuccessful() and not admitted.skipped, admitted.failures
    refused = _run(TorchDecoratedCPU, "test_mem_efficient_attention_torchs_cpu_base_lacks_cpu")
    [(_, reason)] = refused.skipped
    assert reason == (
        "requires attention.mem_efficient_attention: torch's cpu test base does not support it"
    )


def test_a_capability_nobody_declares_fails_naming_it_as_torch_does():
    result = _run(TorchDecoratedCPU, "test_undeclared_fails_as_in_torch_cpu")
    assert not result.skipped
    text = "".join(t for _, t in result.failures + result.errors)
    assert "distributed.nothing_declares_this" in text


def test_a_kit_class_without_instantiation_answers_torchs_decorator():
    assert PlainKitClass.get_capabilities()["distributed.backend"] is True
    result = _run(PlainKitClass, "test_accelerator")
    [(_, reason)] = result.skipped
    assert reason.startswith("requires device.accelerator:"), reason
