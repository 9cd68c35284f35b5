"""Stand-in for an upstream file in a subfolder that imports a helper beside it."""

from _helpers import ramp
from torch.distributed.tensor import Shard, distribute_tensor
from torch.testing._internal.distributed._tensor.common_dtensor import (
    DTensorOpTestBase,
    with_comms,
)


class LayoutsTest(DTensorOpTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_row_shards(self):
        mesh = self.build_device_mesh()
        sharded = distribute_tensor(ramp(6).reshape(2, 3), mesh, [Shard(0)])
        self.assertEqual(sharded.to_local().shape, (1, 3))
