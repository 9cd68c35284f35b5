"""Imported once by the fork server, so that no rank pays for it.

DTensor imports torch._dynamo and friends on its first operation (seconds of
CPU per rank). None of these touch an accelerator at import, which keeps the
fork server safe to fork from on GPU hosts.
"""

import importlib
import os
import sys

from harness import lifelines
from harness.ranks.spawn import MODULES_ENV, PARENT_ENV, PATH_ENV


def _die_with_the_run() -> None:
    """The fork server ends the moment the test run does, even by SIGKILL; its
    ranks follow it (each asked for PR_SET_PDEATHSIG on the server)."""
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():  # the run died before the request: follow it now
        lifelines.die_with_parent(parent=int(parent))


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


def _import_the_run_s_modules() -> None:
    """The cell's plugins and the test module, from the run's sys.path.

    Here rather than in the server's own preload list, which stops the server on
    anything but an ImportError: a module that fails to import here (a skip at
    module level, a missing fixture's side effect) is imported again by each rank,
    which reports its error as the test's.
    """
    path = os.environ.get(PATH_ENV)
    if path is not None:
        sys.path[:] = path.split(os.pathsep)
    for name in filter(None, os.environ.get(MODULES_ENV, "").split(",")):
        try:
            importlib.import_module(name)
        except KeyboardInterrupt:
            raise
        except BaseException:  # pytest's module-level skip is one
            pass


_import_the_run_s_modules()
