import os; from torch.testing._internal.distributed._tensor.common_dtensor import with_comms, make_wrapped


def helper():
    from torch.testing._internal.distributed._tensor.common_dtensor import (DTensorTestBase,
                                                                            make_wrapped)
    return DTensorTestBase, make_wrapped, os, with_comms
