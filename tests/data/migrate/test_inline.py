import os; from torch.testing._internal.distributed._tensor.common_dtensor import with_comms, redistribute


def helper():
    from torch.testing._internal.distributed._tensor.common_dtensor import (DTensorTestBase,
                                                                            redistribute)
    return DTensorTestBase, redistribute, os, with_comms
