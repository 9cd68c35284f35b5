"""Stand-in for an upstream file newer than the installed torch: it does not import."""

from torch.distributed.tensor._a_module_no_torch_has import feature  # noqa: F401
from torch.testing._internal.distributed._tensor.common_dtensor import DTensorOpTestBase


class NewerTest(DTensorOpTestBase):
    def test_feature(self):
        pass
