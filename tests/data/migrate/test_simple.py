# A file whose every helper the kit provides: only the module name changes.
import torch
from torch.testing._internal.common_utils import run_tests
from torch.testing._internal.distributed._tensor.common_dtensor import DTensorTestBase, with_comms


class SimpleTest(DTensorTestBase):  # comments stay
    @with_comms
    def test_it(self):
        self.assertEqual(torch.ones(2), torch.ones(2))


if __name__ == "__main__":
    run_tests()
