"""Sharding-rule validators and a scoped override of an op's sharding strategy.

The validators answer "is this input/output placement assignment a correct
sharding rule for this op on this sample?" numerically, by running the op on
local shards and comparing with the op on full tensors. Strategy authors use
them to check a rule before registering it; op_strategy_context registers one
for the duration of a test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, distribute_tensor
from torch.utils import _pytree as pytree

from harness import compat

_FWD_TOL = {"atol": 1e-5, "rtol": 1e-5}
_BWD_TOL = {"atol": 1e-5, "rtol": 1.3e-6}

# Errors that mean "DTensor cannot run this op backward", not "the rule is wrong".
_NOT_APPLICABLE = (
    "does not have a sharding strategy registered",
    "got mixed torch.Tensor and DTensor",
)


def _layout(placement: Placement | Sequence[Placement]) -> tuple[Placement, ...]:
    """One placement (1-D meshes, upstream's form) or a sequence, one per mesh dim."""
    return (placement,) if isinstance(placement, Placement) else tuple(placement)


def _tensors(args: Any, kwargs: Any) -> list[torch.Tensor]:
    return [leaf for leaf in pytree.tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]


def _swap_tensors(args: Any, kwargs: Any, replacements: Sequence[Any]) -> tuple[Any, Any]:
    """Replace the tensor leaves of (args, kwargs), in order, by ``replacements``."""
    supply = iter(replacements)
    return pytree.tree_map(
        lambda leaf: next(supply) if isinstance(leaf, torch.Tensor) else leaf, (args, kwargs)
    )


def validate_sharding_rule_sample(
    op: Callable,
    full_args: Any,
    full_kwargs: Any,
    input_placements: Sequence[Any],
    output_placements: Sequence[Any],
    device_mesh: DeviceMesh,
) -> bool:
    """True when running ``op`` on local shards yields the claimed output placements.

    Each tensor leaf of ``(full_args, full_kwargs)``, in order, is distributed
    with its entry of ``input_placements``; ``op`` runs on the plain local
    shards; each tensor output is read as a DTensor with its entry of
    ``output_placements`` (Partial included), gathered, and compared with
    ``op`` on the full tensors (shape and values, atol=rtol=1e-5, NaN == NaN).
    """
    shards = [
        distribute_tensor(t, device_mesh, _layout(p)).to_local()
        for t, p in zip(_tensors(full_args, full_kwargs), input_placements)
    ]
    local_args, local_kwargs = _swap_tensors(full_args, full_kwargs, shards)
    reference = _tensors(op(*full_args, **full_kwargs), {})
    local_out = _tensors(op(*local_args, **local_kwargs), {})
    replicate = (Replicate(),) * device_mesh.ndim
    for ref, local, placement in zip(reference, local_out, output_placements):
        claimed = DTensor.from_local(local, device_mesh, _layout(placement))
        full = claimed.redistribute(device_mesh, replicate).to_local()
        if ref.shape != full.shape or not torch.allclose(ref, full, equal_nan=True, **_FWD_TOL):
            return False
    return True


def _backward_of_sum(output: Any) -> bool:
    """Backprop the sum of the differentiable outputs; False when there are none."""
    outs = [t for t in _tensors(output, {}) if t.is_floating_point() and t.requires_grad]
    if not outs:
        return False
    sum(t.sum() for t in outs).backward()
    return True


def _fresh_leaves(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    leaves = [t.detach().clone() for t in tensors]
    for leaf in leaves:
        if leaf.is_floating_point():
            leaf.requires_grad_(True)
    return leaves


def validate_sharding_rule_sample_backward(
    op: Callable,
    full_args: Any,
    full_kwargs: Any,
    input_placements: Sequence[Any],
    device_mesh: DeviceMesh,
) -> bool | None:
    """Do the input gradients through DTensor match the plain ones for this layout?

    Backpropagates the sum of the floating-point outputs, once on plain tensors
    and once on DTensors distributed with ``input_placements``, and compares
    each input's gradient (atol=1e-5, rtol=1.3e-6). Returns None where the
    check does not apply (no floating-point input, nothing differentiable, or
    DTensor has no backward strategy for the op), else True or False.
    """
    tensors = _tensors(full_args, full_kwargs)
    if len(input_placements) != len(tensors):
        raise ValueError(
            f"input_placements has {len(input_placements)} entries for {len(tensors)} tensor inputs"
        )
    if not any(t.is_floating_point() for t in tensors):
        return None

    ref_leaves = _fresh_leaves(tensors)
    ref_args, ref_kwargs = _swap_tensors(full_args, full_kwargs, ref_leaves)
    try:
        if not _backward_of_sum(op(*ref_args, **ref_kwargs)):
            return None
    except RuntimeError:
        return None

    dist_leaves = [
        distribute_tensor(leaf, device_mesh, _layout(p))
        for leaf, p in zip(_fresh_leaves(tensors), input_placements)
    ]
    d_args, d_kwargs = _swap_tensors(full_args, full_kwargs, dist_leaves)
    try:
        if not _backward_of_sum(op(*d_args, **d_kwargs)):
            return None
    except Exception as exc:  # DTensor raises plain Exceptions for missing rules
        if any(marker in str(exc) for marker in _NOT_APPLICABLE):
            return None
        raise

    for ref, dist in zip(ref_leaves, dist_leaves):
        if not ref.is_floating_point() or ref.grad is None:
            continue
        if dist.grad is None:
            return False
        grad = dist.grad.full_tensor() if isinstance(dist.grad, DTensor) else dist.grad
        if grad.shape != ref.grad.shape or not torch.allclose(
            ref.grad, grad, equal_nan=True, **_BWD_TOL
        ):
            return False
    return True


_MISSING = object()
_STRATEGY_TABLES = (
    "op_strategy_funcs",
    "op_to_schema_info",
    "op_single_dim_strategy_funcs",
    "op_to_schema_info_for_single_dim_strategy",
)


@contextlib.contextmanager
def op_strategy_context(
    op_overload: torch._ops.OpOverload, strategy_func: Callable, schema_info: Any = None
) -> Iterator[None]:
    """Register ``strategy_func`` as ``op_overload``'s sharding strategy for a block.

    The propagator's cache is cleared on entry, so the new strategy is used
    even for an op already seen with the same input layouts.
    On exit -- normal or by exception -- the op's previous strategies and schema
    info (or their absence) are restored and the propagator's cache is
    cleared, so later tests see DTensor as it was.
    """
    propagator = compat.sharding_propagator()
    # A single-dim strategy (newer torch, e.g. pointwise ops) would shadow the
    # registered one: it is set aside too, and put back on exit.
    tables = [
        table for name in _STRATEGY_TABLES if (table := getattr(propagator, name, None)) is not None
    ]
    saved = [table.pop(op_overload, _MISSING) for table in tables]
    try:
        compat.register_op_strategy()(op_overload, schema_info=schema_info)(strategy_func)
        compat.clear_sharding_prop_cache()()  # earlier calls may have cached the old rule
        yield
    finally:
        for table, previous in zip(tables, saved):
            if previous is _MISSING:
                table.pop(op_overload, None)
            else:
                table[op_overload] = previous
        compat.clear_sharding_prop_cache()()
