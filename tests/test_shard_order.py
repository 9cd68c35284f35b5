"""Shard-order helpers, on simulated 1-D, 2-D and 3-D meshes of 8 ranks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributed.tensor import Replicate, Shard

from harness import compat


def _lacks() -> str | None:
    """torch < 2.10 has neither the shard-order entry nor LocalTensor these tests run in."""
    try:
        compat.shard_order_entry()
    except compat.TorchFeatureMissing as exc:
        return str(exc)
    return compat.local_tensor_missing()


if _lacks():
    pytest.skip(_lacks(), allow_module_level=True)

from harness.local import simulate  # noqa: E402
from harness.shard_order import (  # noqa: E402
    distribute_with_shard_order,
    generate_shard_orders,
    make_full_tensor,
    shard_order_to_placement,
)

MESHES = [(8,), (2, 4), (4, 2), (2, 2, 2)]


def brute_force_count(mesh_ndim: int, tensor_rank: int) -> int:
    """Count shard orders another way: for every map mesh dim -> tensor dim,
    the mesh dims landing on one tensor dim can be ordered c! ways."""
    total = 0
    for owner in itertools.product(range(tensor_rank), repeat=mesh_ndim):
        total += math.prod(math.factorial(owner.count(d)) for d in range(tensor_rank))
    return total


# Closed forms for small cases, as a check on the brute force itself:
# 1-D mesh: pick the tensor dim (r); 2-D: r^2 maps, and the r maps putting both
# mesh dims on one tensor dim count twice (two orders) -> r^2 + r.
def test_brute_force_matches_closed_forms() -> None:
    for r in range(1, 5):
        assert brute_force_count(1, r) == r
        assert brute_force_count(2, r) == r * r + r
    assert brute_force_count(3, 1) == 6  # all three mesh dims on dim 0: 3! orders


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_generate_shard_orders_counts_and_validity(shape: tuple[int, ...]) -> None:
    with simulate(8) as sim:
        mesh = sim.build_mesh(shape)
        for rank in (1, 2, 3):
            orders = list(generate_shard_orders(mesh, rank))
            assert len(orders) == brute_force_count(len(shape), rank), (shape, rank)
            assert len(set(orders)) == len(orders), "an order was generated twice"
            for order in orders:
                used = [m for entry in order for m in entry.mesh_dims]
                assert sorted(used) == list(range(len(shape))), order
                dims = [entry.tensor_dim for entry in order]
                assert dims == sorted(set(dims)) and all(0 <= d < rank for d in dims)


def test_shard_order_to_placement() -> None:
    entry = compat.shard_order_entry()
    with simulate(8) as sim:
        mesh = sim.build_mesh((2, 2, 2))
        order = (entry(tensor_dim=0, mesh_dims=(2, 0)), entry(tensor_dim=1, mesh_dims=(1,)))
        assert shard_order_to_placement(order, mesh) == (Shard(0), Shard(1), Shard(0))
        assert shard_order_to_placement(None, mesh) == (Replicate(),) * 3
        assert shard_order_to_placement((), mesh) == (Replicate(),) * 3


def test_distribute_in_every_order_round_trips() -> None:
    with simulate(8) as sim:
        mesh = sim.build_mesh((2, 2, 2))
        full = torch.arange(8 * 4 * 4, dtype=torch.float32).reshape(8, 4, 4)
        orders = list(generate_shard_orders(mesh, 2))
        for order in orders:
            dt = distribute_with_shard_order(full, mesh, None, order)
            assert dt.placements == shard_order_to_placement(order, mesh)
            assert tuple(dt._spec.shard_order) == order
            assert torch.equal(make_full_tensor(dt), full), order


def test_a_mesh_built_inside_the_tests_own_mode_does_not_recurse() -> None:
    """PyTorch's test_utils.py builds its mesh under a LocalTensorMode of its own,
    nested in the one the kit runs the test in; that mesh's rank map is a
    LocalTensor, and deep-copying it recursed until Python gave up."""
    from torch.distributed.device_mesh import DeviceMesh

    lt = compat.local_tensor_module()
    with simulate(8), lt.LocalTensorMode(8):
        mesh = DeviceMesh("cpu", torch.arange(8).view(2, 2, 2))
        full = torch.arange(8 * 4 * 4, dtype=torch.float32).reshape(8, 4, 4)
        order = next(o for o in generate_shard_orders(mesh, 2) if len(o[0].mesh_dims) > 1)
        dt = distribute_with_shard_order(full, mesh, None, order)
        assert tuple(dt._spec.shard_order) == order
        assert dt.device_mesh is mesh
        assert torch.equal(make_full_tensor(dt), full)


def test_device_order_changes_what_each_rank_holds() -> None:
    entry = compat.shard_order_entry()
    with simulate(4) as sim:
        mesh = sim.build_mesh((2, 2))
        full = torch.arange(8.0)
        forward = distribute_with_shard_order(
            full, mesh, None, (entry(tensor_dim=0, mesh_dims=(0, 1)),)
        )
        backward = distribute_with_shard_order(
            full, mesh, None, (entry(tensor_dim=0, mesh_dims=(1, 0)),)
        )
        assert forward.placements == backward.placements == (Shard(0), Shard(0))
        with sim.mode.disable():
            # rank (i, j) of a 2x2 mesh is 2i + j. Splitting over mesh dim 0
            # first gives rank 2i + j the chunk 2i + j; over mesh dim 1 first,
            # the chunk 2j + i: ranks 1 and 2 swap.
            fwd = {r: t.tolist() for r, t in forward.to_local()._local_tensors.items()}
            bwd = {r: t.tolist() for r, t in backward.to_local()._local_tensors.items()}
        assert fwd == {0: [0.0, 1.0], 1: [2.0, 3.0], 2: [4.0, 5.0], 3: [6.0, 7.0]}
        assert bwd == {0: [0.0, 1.0], 1: [4.0, 5.0], 2: [2.0, 3.0], 3: [6.0, 7.0]}
        assert torch.equal(make_full_tensor(backward), full)


def test_clear_error_without_shard_order_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed.tensor._dtensor_spec as spec_module

    monkeypatch.delattr(spec_module, "ShardOrderEntry")
    with simulate(2) as sim:
        mesh = sim.build_mesh()
        with pytest.raises(compat.TorchFeatureMissing, match=r"shard-order helpers needs torch >="):
            list(generate_shard_orders(mesh, 2))
