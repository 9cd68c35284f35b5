"""Shard orders: which mesh dims shard a tensor dim, and in what device order.

A placement list says *that* tensor dim d is sharded over mesh dims i and j;
a shard order also says *in which order* (first split over i, then each piece
over j, or the other way round), which changes what every rank holds. torch
represents it as a tuple of ``ShardOrderEntry(tensor_dim, mesh_dims)``. These
helpers generate every order and move tensors between them; they need a torch
with ShardOrderEntry and raise :class:`harness.compat.TorchFeatureMissing`
otherwise.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor

from harness import compat

__all__ = [
    "distribute_with_shard_order",
    "generate_shard_orders",
    "make_full_tensor",
    "patched_distribute_tensor",
    "redistribute",
    "redistribute_with_shard_order",
    "shard_order_to_placement",
]

ShardOrder = tuple  # tuple[ShardOrderEntry, ...]


def shard_order_to_placement(
    shard_order: ShardOrder | None, mesh: DeviceMesh
) -> tuple[Placement, ...]:
    """The placements a shard order implies: Shard(d) on each mesh dim it uses, else Replicate."""
    placements: list[Placement] = [Replicate()] * mesh.ndim
    for entry in shard_order or ():
        for mesh_dim in entry.mesh_dims:
            placements[mesh_dim] = Shard(entry.tensor_dim)
    return tuple(placements)


def _ordered_partitions(items: Sequence[int], parts: int) -> Iterator[list[tuple[int, ...]]]:
    """Cut ``items`` into ``parts`` non-empty consecutive runs, every way."""
    for cuts in itertools.combinations(range(1, len(items)), parts - 1):
        bounds = (0, *cuts, len(items))
        yield [tuple(items[a:b]) for a, b in zip(bounds, bounds[1:])]


def generate_shard_orders(mesh: DeviceMesh, tensor_rank: int) -> Iterator[ShardOrder]:
    """Every shard order that uses all of ``mesh``'s dims on a rank-``tensor_rank`` tensor.

    Each mesh dim shards exactly one tensor dim; a tensor dim sharded by
    several mesh dims gets them in every order. Equivalently: order the mesh
    dims (a permutation), cut the sequence into runs, and hand the runs to
    increasing tensor dims. Each order is yielded once, entries sorted by
    tensor dim.
    """
    entry_type = compat.shard_order_entry()
    for device_order in itertools.permutations(range(mesh.ndim)):
        for parts in range(1, min(mesh.ndim, tensor_rank) + 1):
            for runs in _ordered_partitions(device_order, parts):
                for tensor_dims in itertools.combinations(range(tensor_rank), parts):
                    yield tuple(
                        entry_type(tensor_dim=d, mesh_dims=run) for d, run in zip(tensor_dims, runs)
                    )


def redistribute_with_shard_order(
    dtensor_input: DTensor,
    device_mesh: DeviceMesh,
    placements: Sequence[Placement] | None,
    shard_order: ShardOrder | None,
    use_graph_based_transform: bool = True,
) -> DTensor:
    """Redistribute to ``placements`` in ``shard_order`` (forward only, no autograd).

    ``placements=None`` derives them from the shard order; ``shard_order=None``
    means the default (mesh-dim) order. Returns the input itself when nothing
    changes.
    """
    if placements is None:
        placements = shard_order_to_placement(shard_order, device_mesh)
    # DTensor's public redistribute has no shard-order argument (torch 2.13):
    # build the target spec by hand and run the spec-to-spec transform. A shallow
    # copy: the target shares the source's mesh and tensor meta, and copying a
    # mesh built inside a test's own LocalTensorMode (its rank map a LocalTensor)
    # recursed without end when the kit's mode was on around it.
    source = dtensor_input._spec
    target = copy.copy(source)
    target.placements = tuple(placements)
    target.shard_order = tuple(shard_order) if shard_order is not None else ()
    if target == source:
        return dtensor_input
    local = compat.redistribute_local_tensor()(
        dtensor_input.to_local(),
        source,
        target,
        use_graph_based_transform=use_graph_based_transform,
    )
    result = DTensor.from_local(local, device_mesh, run_check=False)
    result._spec = target
    return result


def distribute_with_shard_order(
    input_tensor: torch.Tensor,
    device_mesh: DeviceMesh,
    placements: Sequence[Placement] | None,
    shard_order: ShardOrder | None,
    use_graph_based_transform: bool = True,
    src_data_rank: int | None = 0,
) -> DTensor:
    """``distribute_tensor`` that lands in ``shard_order`` rather than the default order."""
    if placements is None:
        placements = shard_order_to_placement(shard_order, device_mesh)
    placements = tuple(placements)
    dtensor = distribute_tensor(input_tensor, device_mesh, placements, src_data_rank=src_data_rank)
    # Start from the plain mesh-dim order (not _StridedShard's encoding of one),
    # then move to the requested order.
    dtensor._spec.use_strided_shard_as_shard_order = False
    dtensor._spec.__post_init__()
    return redistribute_with_shard_order(
        dtensor, device_mesh, placements, shard_order, use_graph_based_transform
    )


def make_full_tensor(dtensor_input: DTensor) -> torch.Tensor:
    """The full tensor of a DTensor in any shard order (``full_tensor()`` assumes the default)."""
    mesh = dtensor_input.device_mesh
    return redistribute_with_shard_order(dtensor_input, mesh, None, ()).to_local()


# Upstream's names, so a test moves over by changing only its import.
redistribute = redistribute_with_shard_order
patched_distribute_tensor = distribute_with_shard_order
