"""Test classes for tests/test_requirements.py (kept out of collection)."""

from harness import Capability, DTensorTestBase, requires_capabilities, with_comms


class NeedsAccelerator(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @requires_capabilities(Capability.device.accelerator)
    @with_comms
    def test_on_devices(self):
        raise AssertionError("must not run")

    @requires_capabilities(Capability.distributed.backend, Capability.distributed.dtensor)
    @with_comms
    def test_on_any_backend(self):
        pass


@requires_capabilities(Capability.distributed.backend)
class WholeClass(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_collective(self):
        pass
