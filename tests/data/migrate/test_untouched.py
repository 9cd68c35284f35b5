from torch.testing._internal.common_utils import run_tests
from torch.testing._internal.common_distributed import MultiProcessTestCase

# mentions torch.testing._internal.distributed._tensor.common_dtensor in a comment only
S = "from torch.testing._internal.distributed._tensor.common_dtensor import with_comms"
