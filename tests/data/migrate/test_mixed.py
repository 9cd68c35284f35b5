"""Names the kit lacks stay with PyTorch; aliases and comments survive."""

from torch.testing._internal.common_distributed import (
    MultiProcessTestCase,  # kept: not the kit's
    skip_if_lt_x_gpu,
)
from torch.testing._internal.distributed._tensor.common_dtensor import (
    # the bases
    DTensorTestBase as Base,
    make_wrapped,
    with_comms,
)


class MixedTest(Base):
    @with_comms
    @skip_if_lt_x_gpu(2)
    def test_it(self):
        make_wrapped(print, [])
        MultiProcessTestCase
