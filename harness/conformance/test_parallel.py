"""Tensor, sequence and expert parallel: a Transformer's loss and gradients match one device.

The reference model runs whole on every rank; the parallelized copy runs
sharded. Loss and every parameter's gradient must agree (float32, tolerances
for summation order). Expert parallel is data parallel outside the experts:
each rank gets its own slice of the batch, and non-expert values are summed
over the ranks before comparing.
"""

from __future__ import annotations

import copy

import torch
from torch.distributed.tensor import DTensor, Partial, Shard, distribute_tensor

from harness import ModelArgs, Transformer, with_comms
from harness.conformance._base import ConformanceTestBase, needs

LOSS_TOL = {"atol": 1e-4, "rtol": 1e-4}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}
HEADS = 8  # every world size that divides 8 can shard heads, vocab and experts


def tiny(num_experts: int = 0) -> ModelArgs:
    return ModelArgs(
        n_layers=1, vocab_size=16, max_seq_len=8, dim=16, n_heads=HEADS, dropout_p=0.0,
        num_experts=num_experts,
    )  # fmt: skip


class ParallelTest(ConformanceTestBase):
    def _parity(self, *, tp_mesh=None, ep_mesh=None, seq_parallel=False, num_experts=0):
        torch.manual_seed(0)
        reference = Transformer(tiny(num_experts)).to(self.device_type)
        model = copy.deepcopy(reference)
        replicas = ep_mesh.size() if ep_mesh is not None else 1
        tokens = (torch.arange(2 * replicas * 8) * 7 % 16).reshape(2 * replicas, 8)
        tokens = tokens.to(self.device_type)
        ref_loss = reference(tokens).sum()
        ref_loss.backward()

        Transformer.parallelize(
            model, tp_mesh, seq_parallel,
            local_output_for_attn=self.device_type == "cpu", ep_mesh=ep_mesh,
        )  # fmt: skip

        def over_replicas(t: torch.Tensor) -> torch.Tensor:
            if ep_mesh is None:
                return t
            return DTensor.from_local(t, ep_mesh, [Partial()]).full_tensor()

        mine = tokens
        if ep_mesh is not None:
            mine = distribute_tensor(tokens, ep_mesh, [Shard(0)]).to_local()
        loss = model(mine).sum()
        loss.backward()
        self.assertEqual(over_replicas(loss.detach()), ref_loss.detach(), **LOSS_TOL)
        expected = dict(reference.named_parameters())
        for name, param in model.named_parameters():
            self.assertIsNotNone(param.grad, msg=f"{name} got no gradient")
            grad = param.grad.full_tensor() if isinstance(param.grad, DTensor) else param.grad
            if not (ep_mesh is not None and ".experts." in name):
                grad = over_replicas(grad)
            self.assertEqual(grad, expected[name].grad, msg=f"gradient of {name}", **GRAD_TOL)

    @needs(divides=HEADS)
    @with_comms
    def test_tensor_parallel(self):
        self._parity(tp_mesh=self.mesh((self.world_size,)))

    @needs(divides=HEADS)
    @with_comms
    def test_sequence_parallel(self):
        self._parity(tp_mesh=self.mesh((self.world_size,)), seq_parallel=True)

    @needs(divides=HEADS)
    @with_comms
    def test_expert_parallel(self):
        self._parity(ep_mesh=self.mesh((self.world_size,)), num_experts=HEADS)

    @needs(ranks=4, even=True, divides=HEADS)
    @with_comms
    def test_expert_and_tensor_parallel(self):
        mesh = self.mesh((2, self.world_size // 2), ("ep", "tp"))
        self._parity(tp_mesh=mesh["tp"], ep_mesh=mesh["ep"], num_experts=4)
