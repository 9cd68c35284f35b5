"""What an older torch's DTensor gets wrong, as known, linked, version-gated expected failures.

A row names the first torch without the gap, the backends it concerns (None: every
one), why, and the upstream link. On an affected torch the test is a strict xfail:
it reports the reason and the link, and fails loudly the day it passes, so a gap
that was fixed (or a row that is wrong) does not hide. docs/torch-versions.md lists
where each row was seen.
"""

from __future__ import annotations

from harness import compat

#: op-sweep name -> (first fixed torch, backends or None, why, link)
OP_GAPS: dict[str, tuple[tuple[int, int], tuple[str, ...] | None, str, str]] = {
    "mean dim 1": (
        (2, 8),
        ("gloo",),
        "DTensor reduces a mean's Partial(avg) with ReduceOp.AVG, which gloo lacks before torch 2.8",
        "https://github.com/pytorch/pytorch/pull/149781",
    ),
    "addmv": (
        (2, 11),
        None,
        "DTensor has no sharding strategy for aten.addmv.default and no decomposition "
        "fallback before torch 2.11 (seen on 2.7.1)",
        "https://github.com/pytorch/pytorch/pull/171652",
    ),
}


def op_gap(name: str, backend: str, mode: str) -> str | None:
    """The xfail reason for op ``name`` on the installed torch and ``backend``, or None."""
    row = OP_GAPS.get(name)
    if row is None or mode == "local":  # simulated cells use the fake backend
        return None
    fixed, backends, why, link = row
    if compat.torch_version() >= fixed:
        return None
    if backends is not None and not any(b in backend for b in backends):
        return None
    return f"known gap of torch < {fixed[0]}.{fixed[1]}: {why} ({link})"
