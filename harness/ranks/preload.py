"""Imported once by the fork server, so that no rank pays for it.

DTensor imports torch._dynamo and friends on its first operation (seconds of
CPU per rank). None of these touch an accelerator at import, which keeps the
fork server safe to fork from on GPU hosts.
"""

import importlib
import os
import sys

from harness.ranks.spawn import PARENT_ENV


def _die_with_the_run() -> None:
    """The fork server ends the moment the test run does, even by SIGKILL; its
    ranks follow it (each asked for PR_SET_PDEATHSIG on the server)."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the run died before the request: follow it now
        os._exit(1)


_die_with_the_run()

LAZY_BY_DTENSOR = (
    "torch._dynamo",
    "torch._inductor.config",
    "torch.distributed.tensor.parallel",
    "torch.distributed.fsdp",
    "torch.distributed._functional_collectives",
    "numpy.random",
)

for _name in LAZY_BY_DTENSOR:
    try:
        importlib.import_module(_name)
    except Exception:  # an optional piece missing costs speed, not correctness
        pass
