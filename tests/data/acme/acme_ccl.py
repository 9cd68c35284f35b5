"""A stand-in vendor plugin: registers the c10d backend ``acmeccl`` for cpu.

A real plugin (torch_npu, habana_frameworks.torch) registers its device and
its collective library on import; this one puts gloo underneath a new name.
With ACME_CCL_LOG set, every group it makes appends "pid rank size" there, so
a test can see that each rank really ran on it.
"""

import os

import torch.distributed as dist

__version__ = "0.3.1"

NAME = "acmeccl"


def _create(store, rank, size, timeout):
    log = os.environ.get("ACME_CCL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {rank} {size}\n")
    return dist.ProcessGroupGloo(store, rank, size, timeout)


if NAME.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(NAME, _create, devices=["cpu"])
