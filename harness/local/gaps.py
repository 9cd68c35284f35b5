"""Tell a test that cannot be simulated from a test that fails.

LocalTensorMode runs one program for all ranks, so some tests written for N
processes have no meaning there: point-to-point send/recv between ranks,
branching on the rank, collectives on a group whose ranks are permuted (torch
2.13 and older; 2.15 simulates them), ops the mode does not implement. Those
end in an error raised inside torch's LocalTensor code; :func:`simulation_gap`
recognises them so the runner reports a skip with the reason, never a failure
of the code under test, and never a pass. Anything else is a real failure and
stays one.
"""

from __future__ import annotations

import unittest
from types import TracebackType

_LOCAL_TENSOR_DIR = "_local_tensor"
_RANK_AS_INT = (
    "the test uses the rank as a plain int or branches on it ({}); one process "
    "cannot follow every rank's branch (use harness.local.map_local_for_rank)"
)


class NotSimulable(unittest.SkipTest):
    """Raise in a test (or let the harness raise) to skip it in LocalTensor mode."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not simulated in LocalTensor mode: {reason}")


def _frames(tb: TracebackType | None) -> list[tuple[str, str]]:
    out = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((code.co_filename, code.co_name))
        tb = tb.tb_next
    return out


def simulation_gap(exc: BaseException) -> str | None:
    """The reason ``exc`` marks a known LocalTensor limitation, or None."""
    text = str(exc)
    if isinstance(exc, AttributeError) and "'LocalIntNode' object" in text:
        return _RANK_AS_INT.format(f"{type(exc).__name__}: {text[:120]}")
    frames = _frames(exc.__traceback__)
    in_local = [name for path, name in frames if _LOCAL_TENSOR_DIR in path]
    if not in_local:
        return None
    innermost = in_local[-1]
    if innermost == "_prepare_collective_groups":
        return (
            f"a collective on a process group with permuted ranks {text} "
            "(LocalTensorMode needs sorted group ranks, pytorch/pytorch#192332)"
        )
    p2p = {"_local_send", "_local_recv_", "_local_recv_any_source_", "current"}
    if innermost in p2p or "__src_rank__" in text or "LocalRunnerMode" in text:
        return (
            "point-to-point send/recv between ranks needs LocalRunnerMode "
            "(one thread per rank), which a test written for N processes does not use"
        )
    if isinstance(exc, NotImplementedError):
        return f"LocalTensorMode does not implement {text or 'an op this test uses'}"
    if "LocalIntNode" in text or innermost in {"ge", "le", "gt", "lt"}:
        return _RANK_AS_INT.format(f"{type(exc).__name__}: {text[:120]}")
    if "must be equal for all ranks" in text:
        return f"ranks returned different non-tensor values ({text[:120]})"
    return None
