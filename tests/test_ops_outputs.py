"""The sweep's outputs put together from the simulated ranks' shards, as DTensor would gather them."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

from harness import compat
from harness.conformance import _ops

if compat.local_tensor_missing():  # torch < 2.10: the sweep's workers need LocalTensor
    pytest.skip(compat.local_tensor_missing(), allow_module_level=True)

from harness.conformance._ops_workers import _Checker  # noqa: E402
from harness.local import LocalTensor, simulate  # noqa: E402

# An uneven shard (5 rows over 4 ranks: 2, 2, 1, 0) and every reduction DTensor's Partial has.
PLACEMENTS = [
    Replicate(),
    Shard(0),
    Shard(1),
    Partial("sum"),
    Partial("avg"),
    Partial("max"),
    Partial("min"),
]


@pytest.mark.parametrize("placement", PLACEMENTS, ids=str)
def test_each_placement_is_assembled_bitwise_as_dtensor_gathers_it(placement):
    with simulate(4, seed=0) as sim:
        mesh = sim.build_mesh()
        with sim.mode.disable():
            plain = torch.randn(5, 3)
        if isinstance(placement, Shard):
            dt = distribute_tensor(plain, mesh, [placement])
        else:  # a copy per rank (equal for Replicate; each rank's own addend for Partial)
            scale = {r: 1 if isinstance(placement, Replicate) else r + 1 for r in range(4)}
            local = LocalTensor({r: plain * scale[r] for r in range(4)})
            dt = DTensor.from_local(
                local, mesh, [placement], shape=plain.shape, stride=plain.stride()
            )
        gathered = _ops._rank_copies(dt.full_tensor())
        with sim.mode.disable():
            assembled = _ops._assembled(dt)
    assert assembled is not None
    for whole in assembled:
        for copy in gathered:
            assert torch.equal(whole, copy), (placement, whole, copy)


def test_a_layout_only_dtensor_can_gather_is_left_to_it():
    """A 2-D mesh is not put together by the kit: None, and the sweep calls full_tensor()."""
    with simulate(4) as sim:
        mesh = sim.build_mesh((2, 2))
        dt = distribute_tensor(torch.ones(4, 4), mesh, [Shard(0), Shard(1)])
        with sim.mode.disable():
            assert _ops._assembled(dt) is None


def test_every_ranks_copy_of_a_replicated_output_is_checked():
    """One rank holding another value than the rest fails the output, naming the layout."""
    with simulate(4) as sim:
        mesh = sim.build_mesh()
        dt = distribute_tensor(torch.zeros(3), mesh, [Replicate()])
        with sim.mode.disable():
            dt._local_tensor._local_tensors[2].add_(1)
            copies = _ops._assembled(dt)
            case = _Checker()
            with pytest.raises(AssertionError, match="layout X"):
                _ops._check_output(case, copies, False, torch.zeros(3), "layout X")
            _ops._check_output(case, copies[:2], False, torch.zeros(3), "layout X")


def test_an_output_of_the_wrong_shape_or_requires_grad_fails_with_what_it_got():
    case = _Checker()
    ref = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(AssertionError, match=r"shape \(3, 2\), expected \(2, 3\)"):
        _ops._check_output(case, [torch.zeros(3, 2)], True, ref, "here")
    with pytest.raises(AssertionError, match="requires_grad=False, expected True"):
        _ops._check_output(case, [torch.zeros(2, 3)], False, ref, "here")
    with pytest.raises(AssertionError, match="got int, expected a tensor"):
        _ops._check_output(case, [3], True, ref, "here")
