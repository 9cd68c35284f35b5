"""Communication as an assertion: which collectives a step issues, where, and how big.

:class:`CommLedger` is torch's :class:`~torch.distributed.tensor.debug.CommDebugMode`
that also writes down, for every collective it counts, its kind (``all_gather``,
``reduce_scatter``, ``all_reduce``, ``all_to_all``, ``broadcast``, ...), the mesh
dimension whose group it ran on, and the bytes this rank handed to it. What it
records is decided by DTensor, not by the backend, so the same expectation holds
on real ranks (a native cell), on simulated ones (a ``-sim`` cell) and on one
rank of a fake world of thousands (a ``fake`` cell)::

    with self.assertCollectives({"all_gather": 1}, mesh=mesh, mesh_dim="tp",
                                bytes_per_rank=local.nbytes):
        dt.redistribute(mesh["tp"], [Replicate()])

Expectations are data: ``{kind: count}`` for one mesh dimension, or
``{(kind, mesh_dim): count}`` for a step that talks over several; a count may be
``(count, bytes)`` to state the bytes this rank hands to that kind on that dimension.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.tensor.debug import CommDebugMode

#: torch's collective op names -> the kind a test states (functional, c10d and DTensor's own).
KINDS: dict[str, str] = {
    "all_gather_into_tensor": "all_gather",
    "all_gather_into_tensor_coalesced": "all_gather",
    "all_gather_tensor": "all_gather",
    "allgather": "all_gather",
    "allgather_": "all_gather",
    "_allgather_base": "all_gather",
    "_allgather_base_": "all_gather",
    "allgather_into_tensor_coalesced_": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_tensor_coalesced": "reduce_scatter",
    "reduce_scatter_": "reduce_scatter",
    "_reduce_scatter_base_": "reduce_scatter",
    "reduce_scatter_tensor_coalesced_": "reduce_scatter",
    "all_reduce": "all_reduce",
    "all_reduce_coalesced": "all_reduce",
    "allreduce_": "all_reduce",
    "allreduce_coalesced_": "all_reduce",
    "all_to_all_single": "all_to_all",
    "alltoall_": "all_to_all",
    "alltoall_base_": "all_to_all",
    "shard_dim_alltoall": "all_to_all",
    "broadcast": "broadcast",
    "broadcast_": "broadcast",
    "scatter_": "scatter",
    "gather_": "gather",
    "send": "send",
    "recv_": "recv",
    "barrier": "barrier",
}


@dataclass(frozen=True)
class Collective:
    """One collective this rank issued."""

    kind: str
    #: the mesh dimension (its name, else its index) whose group it ran on; None
    #: when the group is not one of the ledger's mesh's dimensions
    mesh_dim: str | int | None
    #: bytes this rank handed to it (its input, summed over a coalesced list)
    bytes: int
    op: str = ""


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        try:
            return int(value.numel()) * value.element_size()
        except (TypeError, RuntimeError):  # a per-rank size under LocalTensor
            return int(max(value._local_tensors.values(), key=torch.numel).nbytes)
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def _input(func: Any, args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """What this rank hands the collective: the argument named input (c10d's in-place
    ops take the output first), else the first."""
    for i, arg in enumerate(func._schema.arguments):
        if arg.name.startswith("input"):
            return kwargs.get(arg.name, args[i] if i < len(args) else None)
    return args[0] if args else None


def _group_name(func: Any, args: tuple, kwargs: Mapping[str, Any]) -> str | None:
    """The group a collective ran on: its ``group_name`` argument or its ProcessGroup's."""
    import torch.distributed as dist

    for i, arg in enumerate(func._schema.arguments):
        value = kwargs.get(arg.name, args[i] if i < len(args) else None)
        if arg.name in ("group_name", "group") and isinstance(value, str):
            return value
        if isinstance(value, torch.ScriptObject) or isinstance(value, dist.ProcessGroup):
            try:
                pg = (
                    value
                    if isinstance(value, dist.ProcessGroup)
                    else dist.ProcessGroup.unbox(value)
                )
                return pg.group_name
            except (RuntimeError, TypeError, AttributeError):
                continue
    return None


class CommLedger(CommDebugMode):
    """CommDebugMode that keeps each collective's kind, mesh dimension and bytes."""

    def __init__(self, mesh: Any = None) -> None:
        super().__init__()
        self.records: list[Collective] = []
        self._dims: dict[str, str | int] = {}
        if mesh is not None:
            names = mesh.mesh_dim_names
            for i in range(mesh.ndim):
                self._dims[mesh.get_group(i).group_name] = names[i] if names else i

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        counted = sum(self.comm_counts.values())
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if sum(self.comm_counts.values()) > counted:
            op = func._overloadpacket.__name__
            kind = KINDS.get(op, re.sub(r"_+$", "", op))
            group = _group_name(func, args, kwargs or {})
            sent = _nbytes(_input(func, args, kwargs or {}))
            self.records.append(
                Collective(kind, self._dims.get(group) if group else None, sent, op)
            )
        return out

    def counts(self) -> Counter:
        """``{(kind, mesh_dim): count}`` of what was issued."""
        return Counter((c.kind, c.mesh_dim) for c in self.records)

    def bytes_per_rank(self) -> int:
        """Bytes this rank handed to every collective it issued."""
        return sum(c.bytes for c in self.records)

    def table(self) -> str:
        """What was issued, one line per (kind, mesh dim), for failure messages."""
        if not self.records:
            return "  (no collectives)"
        totals: dict[tuple[str, Any], list[int]] = {}
        for c in self.records:
            entry = totals.setdefault((c.kind, c.mesh_dim), [0, 0])
            entry[0] += 1
            entry[1] += c.bytes
        return "\n".join(
            f"  {kind} on mesh dim {dim!r}: {n} call(s), {size} bytes from this rank"
            for (kind, dim), (n, size) in totals.items()
        )

    def mismatch(
        self,
        expected: Mapping[Any, int | tuple[int, int]],
        *,
        mesh_dim: str | int | None = None,
        bytes_per_rank: int | None = None,
    ) -> str | None:
        """Why what was issued differs from ``expected``, or None when it matches.

        Plain kinds with no ``mesh_dim`` compare counts of kinds on any dimension.
        """
        any_dim = mesh_dim is None and not any(isinstance(k, tuple) for k in expected)
        want: Counter = Counter()
        want_bytes: dict[Any, int] = {}  # where a value is (count, bytes)
        for key, value in expected.items():
            kind, dim = key if isinstance(key, tuple) else (key, mesh_dim)
            kind = KINDS.get(kind, kind)
            slot = kind if any_dim else (kind, self._label(dim))
            count, size = value if isinstance(value, tuple) else (value, None)
            want[slot] += count
            if size is not None:
                want_bytes[slot] = want_bytes.get(slot, 0) + size
        got: Counter = Counter()
        got_bytes: Counter = Counter()
        for c in self.records:
            slot = c.kind if any_dim else (c.kind, c.mesh_dim)
            got[slot] += 1
            got_bytes[slot] += c.bytes
        problems = []
        if +got != +want:
            shown = ", ".join(f"{key}: {n}" for key, n in sorted(want.items(), key=str))
            problems.append(f"expected {shown or 'no collectives'}")
        for slot, size in sorted(want_bytes.items(), key=str):
            if got_bytes[slot] != size:
                problems.append(f"expected {size} bytes for {slot}, got {got_bytes[slot]}")
        if bytes_per_rank is not None and self.bytes_per_rank() != bytes_per_rank:
            problems.append(
                f"expected {bytes_per_rank} bytes from this rank, got {self.bytes_per_rank()}"
            )
        if not problems:
            return None
        return "; ".join(problems) + "; issued:\n" + self.table()

    def _label(self, dim: str | int | None) -> str | int | None:
        """A dimension's index names the same dimension as its name."""
        labels = list(self._dims.values())
        if isinstance(dim, int) and 0 <= dim < len(labels):
            return labels[dim]
        return dim


@contextlib.contextmanager
def expect_collectives(
    expected: Mapping[Any, int | tuple[int, int]],
    *,
    mesh: Any = None,
    mesh_dim: str | int | None = None,
    bytes_per_rank: int | None = None,
) -> Iterator[CommLedger]:
    """A context (generator) that fails with the ledger when the block's collectives differ."""
    if mesh is None and (mesh_dim is not None or any(isinstance(k, tuple) for k in expected)):
        raise TypeError("assertCollectives: a mesh dimension needs mesh=, the mesh it names")
    with CommLedger(mesh) as ledger:
        yield ledger
    why = ledger.mismatch(expected, mesh_dim=mesh_dim, bytes_per_rank=bytes_per_rank)
    if why is not None:
        raise AssertionError(f"collectives differ: {why}")


__all__ = ["KINDS", "CommLedger", "Collective", "expect_collectives"]
