"""A mixture of dense experts and the parallel styles that shard it.

Every token goes through every expert and the outputs are averaged: no router,
so the numerics are deterministic and a parallel run can be compared with a
single-device run exactly. Token dispatch and combine use DTensor's public
redistribution (Shard(0) -> Replicate is an all-gather, Partial -> Shard(0) a
reduce-scatter), so gradients flow through the collectives' autograd.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import (
    DTensor,
    Partial,
    Placement,
    Replicate,
    Shard,
    distribute_module,
    distribute_tensor,
)
from torch.distributed.tensor.parallel import ParallelStyle

from harness import compat


class Experts(nn.Module):
    """``num_experts`` GELU MLPs stored as stacked weights, outputs summed.

    ``w1`` is (experts, hidden, dim) and ``w2`` (experts, dim, hidden). The
    forward takes plain tensors: when the weights are DTensors (sharded by the
    styles below) it computes with the local shards, and the styles' hooks do
    the communication.
    """

    def __init__(self, dim: int, hidden_dim: int, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self.w1 = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.w2 = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.reset_parameters()
        self.gelu = nn.GELU()

    def reset_parameters(self) -> None:
        for weight in (self.w1, self.w2):
            nn.init.normal_(weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1, w2 = (w.to_local() if isinstance(w, DTensor) else w for w in (self.w1, self.w2))
        tokens = x.unsqueeze(0).expand(w1.shape[0], -1, -1)  # (experts, tokens, dim)
        hidden = self.gelu(torch.bmm(tokens, w1.transpose(1, 2)))
        return torch.bmm(hidden, w2.transpose(1, 2)).sum(dim=0)


class ExpertLayer(nn.Module):
    """Flattens (batch, seq, dim) to tokens, runs Experts, averages over experts."""

    def __init__(self, num_experts: int, dim: int, hidden_dim: int):
        super().__init__()
        self.num_experts = num_experts
        self.experts = Experts(dim=dim, hidden_dim=hidden_dim, num_experts=num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        out = self.experts(x.reshape(-1, dim)) / self.num_experts
        return out.view(batch, seq, dim)


# --- communication helpers: plain tensor in, plain tensor out ---------------


def _gather_tokens(x: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """All-gather tokens on dim 0; the backward reduce-scatters their gradient."""
    gathered = DTensor.from_local(x, mesh, [Shard(0)], run_check=False)
    return gathered.redistribute(mesh, [Replicate()]).to_local(grad_placements=[Partial()])


def _scatter_sum(out: torch.Tensor, mesh: DeviceMesh, layout: Placement) -> torch.Tensor:
    """Sum partial outputs across the mesh into ``layout``."""
    partial = DTensor.from_local(out, mesh, [Partial()], run_check=False)
    return partial.redistribute(mesh, [layout]).to_local()


def _sum_input_grad(x: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """Identity forward; all-reduce backward (each rank's input grad is partial)."""
    return DTensor.from_local(x, mesh, [Replicate()], run_check=False).to_local(
        grad_placements=[Partial()]
    )


class TensorParallelForExpert(ParallelStyle):
    """Tensor parallel for Experts: ``w1`` sharded on hidden (dim 1), ``w2`` on dim 2.

    Each rank computes a partial sum of the expert outputs; the output hook
    reduces it to ``output_layouts`` (Replicate by default). With sequence
    parallel, pass ``input_layouts=Shard(0)`` and ``output_layouts=Shard(0)``:
    tokens are all-gathered before and reduce-scattered after. The input's
    gradient is summed across ranks in both cases (each rank only sees its
    slice of the hidden dimension).
    """

    def __init__(
        self, *, input_layouts: Placement | None = None, output_layouts: Placement | None = None
    ):
        super().__init__()
        self.input_layouts = input_layouts
        self.output_layouts = output_layouts or Replicate()

    @staticmethod
    def _partition_fn(name: str, mod: nn.Module, mesh: DeviceMesh) -> None:
        shard_dims = {"w1": 1, "w2": 2}
        for pname, param in list(mod.named_parameters(recurse=False)):
            if pname in shard_dims:
                dist = distribute_tensor(param, mesh, [Shard(shard_dims[pname])])
                mod.register_parameter(pname, nn.Parameter(dist))

    def _input_fn(self, mod: nn.Module, inputs: tuple, mesh: DeviceMesh) -> tuple:
        (x,) = inputs
        if self.input_layouts is None:
            return (_sum_input_grad(x, mesh),)
        dist = DTensor.from_local(x, mesh, [self.input_layouts], run_check=False)
        return (dist.redistribute(mesh, [Replicate()]).to_local(grad_placements=[Partial()]),)

    def _output_fn(self, mod: nn.Module, outputs: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
        return _scatter_sum(outputs, mesh, self.output_layouts)

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return distribute_module(
            module,
            device_mesh,
            partition_fn=self._partition_fn,
            input_fn=self._input_fn,
            output_fn=self._output_fn,
        )


class ExpertParallel(ParallelStyle):
    """Expert parallel for Experts: each rank holds ``num_experts / world`` experts.

    Parameters are sharded on the expert dimension (Shard(0)). Dispatch
    all-gathers every rank's tokens so local experts see all of them; combine
    reduce-scatters the summed outputs back to the ranks that own the tokens.
    """

    @staticmethod
    def _partition_fn(name: str, mod: nn.Module, mesh: DeviceMesh) -> None:
        for pname, param in list(mod.named_parameters(recurse=False)):
            mod.register_parameter(pname, nn.Parameter(distribute_tensor(param, mesh, [Shard(0)])))

    @staticmethod
    def _token_dispatch(mod: nn.Module, inputs: tuple, mesh: DeviceMesh) -> tuple:
        (x,) = inputs
        return (_gather_tokens(x, mesh),)

    @staticmethod
    def _token_combine(mod: nn.Module, output: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
        return _scatter_sum(output, mesh, Shard(0))

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return distribute_module(
            module,
            device_mesh,
            partition_fn=self._partition_fn,
            input_fn=self._token_dispatch,
            output_fn=self._token_combine,
        )


class ExpertParallelWithTP(ParallelStyle):
    """Expert parallel and tensor parallel together, for an ExpertLayer.

    Expert weights live on the 2-D (ep, tp) mesh as ``[Shard(0), Shard(1)]``
    (``w1``) and ``[Shard(0), Shard(2)]`` (``w2``). Hooks run, in order: EP
    dispatch (on the ExpertLayer), TP input-gradient sum and TP output
    reduction (on its Experts), EP combine (on the ExpertLayer). ``ep_mesh``
    and ``tp_mesh`` must be 1-D submeshes of one root mesh.
    """

    def __init__(self, ep_mesh: DeviceMesh, tp_mesh: DeviceMesh):
        super().__init__()
        self.ep_mesh = ep_mesh
        self.tp_mesh = tp_mesh
        self.ep_tp_mesh = compat.concatenate_meshes()([ep_mesh, tp_mesh])

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        experts = module.experts
        tp_dims = {"w1": 1, "w2": 2}
        for pname, param in list(experts.named_parameters(recurse=False)):
            if pname in tp_dims:
                placements = [Shard(0), Shard(tp_dims[pname])]
                dist = distribute_tensor(param, self.ep_tp_mesh, placements)
                experts.register_parameter(pname, nn.Parameter(dist))

        ep_mesh, tp_mesh = self.ep_mesh, self.tp_mesh
        module.register_forward_pre_hook(lambda mod, inputs: (_gather_tokens(inputs[0], ep_mesh),))
        module.register_forward_hook(lambda mod, inputs, out: _scatter_sum(out, ep_mesh, Shard(0)))
        experts.register_forward_pre_hook(
            lambda mod, inputs: (_sum_input_grad(inputs[0], tp_mesh),)
        )
        experts.register_forward_hook(
            lambda mod, inputs, out: _scatter_sum(out, tp_mesh, Replicate())
        )
        return module
