"""Test classes for tests/test_bases_skips.py (kept out of collection)."""

from harness import (
    DTensorContinuousTestBase,
    DTensorTestBase,
    requires_gloo,
    requires_nccl,
    skip_if_lt_x_gpu,
    skip_unless_torch_gpu,
    with_comms,
)
from harness.skips import needs


class Gpu2(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @skip_if_lt_x_gpu(2)
    @with_comms
    def test_needs_two(self):
        raise AssertionError("must not run")

    @skip_unless_torch_gpu
    @with_comms
    def test_one_per_rank(self):
        raise AssertionError("must not run")

    @skip_if_lt_x_gpu(2, allow_cpu=True)
    @with_comms
    def test_cpu_allowed(self):
        pass


class Gpu3(Gpu2):
    @property
    def world_size(self):
        return 3


class NcclOnly(DTensorTestBase):
    @property
    def backend(self):
        return "nccl"

    def test_collective(self):
        raise AssertionError("must not run")


class BigPool(DTensorContinuousTestBase):
    world_size = 8

    def test_anything(self):
        raise AssertionError("must not run")


class WorldNeeds(DTensorContinuousTestBase):
    world_size = 3

    @needs(even=True)
    def test_even(self):
        raise AssertionError("must not run")

    @needs(local="it counts processes")
    def test_not_simulated(self):
        pass


@requires_nccl()
class NcclBuilt(DTensorTestBase):
    @with_comms
    def test_collective(self):
        raise AssertionError("must not run without nccl")


class BackendBuilt(DTensorTestBase):
    @requires_nccl()
    @with_comms
    def test_nccl(self):
        raise AssertionError("must not run without nccl")

    @requires_gloo()
    @with_comms
    def test_gloo(self):
        raise AssertionError("ran")
