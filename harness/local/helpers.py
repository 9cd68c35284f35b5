"""Per-rank values under LocalTensorMode, that also run unchanged on real ranks.

A test written for N processes sees one ``rank`` int; under LocalTensorMode the
same line sees every rank at once (a ``LocalIntNode``). These helpers let a test
compute something rank-dependent once and get the right answer in both worlds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from harness import compat


def _lt() -> Any:
    return compat.local_tensor_module()


def rank_symint(ranks: int | frozenset[int] | dict[int, int]) -> Any:
    """A SymInt holding each simulated rank's own value (``{r: r}`` by default)."""
    if isinstance(ranks, int):
        ranks = frozenset(range(ranks))
    values = dict(ranks) if isinstance(ranks, dict) else {r: r for r in sorted(ranks)}
    if len(set(values.values())) == 1:  # one rank: a plain int is the honest answer
        return next(iter(values.values()))
    return torch.SymInt(_lt().LocalIntNode(values))


def map_local_tensor_for_rank(tensor: Any, rank: Any, func: Callable[[Any, Any], Any]) -> Any:
    """``func(tensor, rank)`` on each rank's own shard and rank number.

    Outside LocalTensorMode it is a plain call; inside, ``func`` runs once per
    simulated rank with that rank's local tensor and int rank, and the results
    are joined back (tensors into a LocalTensor, ints into a LocalIntNode).
    """
    return _lt().maybe_run_for_local_tensor(func)(tensor, rank)


def map_local_for_rank(rank: Any, func: Callable[[Any], Any]) -> Any:
    """``func(rank)`` once per simulated rank (a plain call outside the mode)."""
    return _lt().maybe_run_for_local_tensor(func)(rank)


def reduce_local_int(val: Any, func: Callable[[dict[int, int]], Any]) -> Any:
    """Fold a per-rank int into one value: ``func({rank: value, ...})``.

    A plain int (every rank agrees, or a real single rank) is passed as the
    value of each simulated rank, or of rank 0 outside the mode.
    """
    node = getattr(val, "node", None)
    local_ints = getattr(node, "_local_ints", None)
    if local_ints is not None:
        return func(dict(local_ints))
    mode = _lt().enabled_local_tensor_mode()
    ranks = sorted(mode.ranks) if mode is not None else [0]
    return func(dict.fromkeys(ranks, int(val)))
