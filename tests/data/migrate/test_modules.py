import torch.testing._internal.distributed._tensor.common_dtensor as cd
from torch.testing._internal import common_distributed, common_utils
from torch.testing._internal.distributed._tensor import common_dtensor


class T(cd.DTensorTestBase):
    @cd.with_comms
    def test_it(self):
        common_utils.run_tests
        common_distributed.TEST_SKIPS
        common_dtensor.make_wrapped
