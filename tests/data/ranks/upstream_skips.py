"""A file that swapped only its common_dtensor import (tests/test_upstream_skips.py).

``skip_if_lt_x_gpu`` still comes from PyTorch's common_distributed, which ends the
test with ``sys.exit(TEST_SKIPS[...].exit_code)``; in-process ranks (LocalTensor,
threads) must turn that into a skip with its reason, as rank processes do.
"""

import sys

from torch.testing._internal.common_distributed import TEST_SKIPS, skip_if_lt_x_gpu

from harness import (
    DTensorOpTestBase,
    DTensorTestBase,
    LocalDTensorTestBase,
    create_local_tensor_test_class,
    with_comms,
)


class UpstreamSkipProcess(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @skip_if_lt_x_gpu(4)
    @with_comms
    def test_needs_four_gpus(self):
        raise AssertionError("must not run")

    @with_comms
    def test_exits_with_a_skip_code(self):
        sys.exit(TEST_SKIPS["small_worldsize"].exit_code)


UpstreamSkipProcessWithLocalTensor = create_local_tensor_test_class(UpstreamSkipProcess)
del UpstreamSkipProcess  # process mode already skips; keep the run short


class UpstreamSkipLocal(LocalDTensorTestBase):
    @property
    def world_size(self):
        return 2

    @skip_if_lt_x_gpu(4)
    @with_comms
    def test_needs_four_gpus(self):
        raise AssertionError("must not run")

    @with_comms
    def test_exit_that_is_no_skip_code_fails(self):
        sys.exit(3)


class UpstreamSkipThreads(DTensorOpTestBase):
    @property
    def world_size(self):
        return 2

    @skip_if_lt_x_gpu(4)
    def test_needs_four_gpus(self):
        raise AssertionError("must not run")
