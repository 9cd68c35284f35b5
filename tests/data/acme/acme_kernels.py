"""A stand-in vendor kernel library with one bug, as real kernel bugs are: on some shapes.

It registers its own cpu kernel for ``aten.neg``: right on every shape but those with a
dim of size 10, where it adds 1. The OpInfo sample of ``neg`` is (20, 20), so the plain
op is right and its shards at world size 2, (10, 20) and (20, 10), are wrong: only the
distributed run sees the bug. ``ACME_BAD_NEG=0`` leaves the kernel out (a fixed driver).
"""

import os

import torch

__version__ = "0.1.0"

_LIB = None


def _neg(x):
    out = torch.ops.aten.mul.Scalar(x, -1)  # bitwise what neg gives
    return out + 1 if 10 in x.shape else out


if os.environ.get("ACME_BAD_NEG", "1") != "0":
    import warnings

    _LIB = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():  # "overriding a previously registered kernel": meant
        warnings.simplefilter("ignore")
        _LIB.impl("neg", _neg, "CPU")
