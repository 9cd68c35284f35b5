"""What an older torch's DTensor gets wrong, as known, linked, version-gated expected failures.

A row names the first torch without the gap, the reduce op whose absence on the
cell's backend triggers it (None: every backend), why, and the upstream link.
Whether a backend lacks that op is asked of the backend itself
(:func:`harness.hosts.reduce_op_supported`), never read from its name, so a
vendor's backend over gloo gets gloo's rows. On an affected torch the test is a
strict xfail: it reports the reason and the link, and fails loudly the day it
passes, so a gap that was fixed (or a row that is wrong) does not hide.
docs/torch-versions.md lists where each row was seen.
"""

from __future__ import annotations

from typing import NamedTuple

from harness import compat, hosts


class Gap(NamedTuple):
    fixed: tuple[int, int]  # the first torch without the gap
    lacks: str | None  # the ReduceOp the backend must lack for the gap to show; None: any
    why: str
    link: str


#: op-sweep name -> its gap
OP_GAPS: dict[str, Gap] = {
    "mean dim 1": Gap(
        (2, 8),
        "AVG",
        "DTensor reduces a mean's Partial(avg) with ReduceOp.AVG, which this backend "
        "lacks (gloo before torch 2.8)",
        "https://github.com/pytorch/pytorch/pull/149781",
    ),
    "addmv": Gap(
        (2, 11),
        None,
        "DTensor has no sharding strategy for aten.addmv.default and no decomposition "
        "fallback before torch 2.11 (seen on 2.7.1)",
        "https://github.com/pytorch/pytorch/pull/171652",
    ),
}


def op_gap(name: str, backend: str, mode: str, device: str = "cpu") -> str | None:
    """The xfail reason for op ``name`` on the installed torch and ``backend``, or None.

    A row that needs the backend to lack a reduce op applies only where the backend
    says it does: asked on cpu, so on an accelerator device (not asked in the parent)
    such a row stays off and a failure shows as one.
    """
    row = OP_GAPS.get(name)
    if row is None or mode == "local":  # simulated cells use the fake backend
        return None
    if compat.torch_version() >= row.fixed:
        return None
    if row.lacks is not None and (
        device != "cpu" or hosts.reduce_op_supported(backend, row.lacks) is not False
    ):
        return None
    return f"known gap of torch < {row.fixed[0]}.{row.fixed[1]}: {row.why} ({row.link})"
