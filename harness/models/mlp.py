"""Small dense models: a Python RMSNorm and the seeded two-layer MLPs."""

from __future__ import annotations

import torch
from torch import nn


class RMSNormPython(nn.Module):
    """RMSNorm in plain torch ops, so DTensor sees every op the norm is made of."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(mean_square + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(x) * self.weight


class MLPModule(nn.Module):
    """10 -> 16 -> 10 MLP with fixed seed 5, so every rank builds the same weights.

    Submodule names (``net1``, ``relu``, ``net2``) are part of the API: tests
    address them in parallelize plans (``{"net1": ColwiseParallel(), ...}``).
    """

    def __init__(self, device: torch.device | str | None, bias: bool = True):
        super().__init__()
        torch.manual_seed(5)
        self.net1 = nn.Linear(10, 16, bias=bias, device=device)
        self.relu = nn.ReLU()
        self.net2 = nn.Linear(16, 10, bias=bias, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net2(self.relu(self.net1(x)))

    def reset_parameters(self) -> None:
        for linear in (self.net1, self.net2):
            linear.reset_parameters()


class MLPStacked(nn.Module):
    """``n_layers`` MLPModules in a ModuleList named ``layers``."""

    def __init__(self, device: torch.device | str | None, n_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(MLPModule(device) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
