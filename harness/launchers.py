"""A cell's suites on launcher ranks: the command for torchrun, or this srun task.

torchrun: ``harness run`` is the agent of one node; it starts
``--nproc-per-node`` ranks and meets the other nodes at ``--rdzv-endpoint``.
slurm: srun already started one ``harness run`` per rank, so that process
becomes the rank. Either way the ranks run ``harness.ranks.external_main``,
and rank 0 writes the merged JUnit XML where :mod:`harness.pipeline` says.
Imports no torch until a rank runs.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import pipeline
from harness.errors import UsageError
from harness.ranks.launch import LAUNCHERS, detect, requested

if TYPE_CHECKING:
    from harness.matrix import Cell

ENTRY = "harness.ranks.external_main"

__all__ = ["ENTRY", "LAUNCHERS", "Plan", "Topology", "plan", "wanted"]


@dataclass(frozen=True)
class Topology:
    """How the user spread the cell's ranks (``harness run`` flags, all optional)."""

    launcher: str | None = None  # torchrun | slurm; None: this process runs under torchrun
    nnodes: int | None = None
    nproc_per_node: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    node_rank: int | None = None
    matrix: str | None = None  # --matrix as given, for the rerun line


@dataclass(frozen=True)
class Plan:
    """What to start on this node, and with which environment."""

    argv: list[str]
    env: dict[str, str]
    ranks_here: int
    launcher: str
    results: Path


def wanted(launcher: str | None) -> bool:
    """A launcher was named, or this process already runs under torchrun."""
    return bool(launcher) or requested() == "torchrun"


def plan(
    cell: Cell, results: Path, env: Mapping[str, str], extra: Sequence[str], how: Topology
) -> Plan:
    """The command (torchrun agent or this srun task's rank) and its environment."""
    if cell.mode == "local":
        raise UsageError(
            f"cell {cell.name} simulates its ranks in one process (local mode); run it "
            f"without --launcher, or pick a native cell (`harness matrix list`)."
        )
    results = results.resolve()
    args = pipeline.pytest_args(cell, extra)
    env = {**env, pipeline.JUNIT_ENV: str(pipeline.junit_path(results))}
    if how.launcher == "torchrun":
        argv, ranks_here, rerun = _torchrun(cell, args, how)
        env["HARNESS_RERUN"] = rerun
        return Plan(argv, env, ranks_here, "torchrun", results)
    # One srun task (or a torchrun worker running `harness run`): become the rank.
    env["HARNESS_LAUNCHER"] = how.launcher or "torchrun"
    env.setdefault("HARNESS_RERUN", f"srun <your flags> harness run {cell.name}")
    _check_world(cell, env)
    return Plan([sys.executable, "-m", ENTRY, *args], env, 1, env["HARNESS_LAUNCHER"], results)


def _torchrun(cell: Cell, pytest_args: list[str], how: Topology) -> tuple[list[str], int, str]:
    nnodes = how.nnodes or 1
    if nnodes < 1:
        raise UsageError(f"--nnodes {nnodes}: use 1 or more nodes.")
    nproc = how.nproc_per_node
    if nproc is None:
        if cell.world_size % nnodes:
            raise UsageError(
                f"cell {cell.name} has {cell.world_size} ranks, which {nnodes} nodes cannot "
                f"share evenly; give --nproc-per-node or pick another cell."
            )
        nproc = cell.world_size // nnodes
    if nproc < 1 or nnodes * nproc != cell.world_size:
        raise UsageError(
            f"--nnodes {nnodes} x --nproc-per-node {nproc} = {nnodes * nproc} ranks, but cell "
            f"{cell.name} has {cell.world_size}; pick the cell with that many ranks "
            f"(`harness matrix list`) or change the counts."
        )
    launch = [f"--nnodes={nnodes}", f"--nproc-per-node={nproc}"]
    if how.rdzv_endpoint:
        host, _, port = how.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(
                f"--rdzv-endpoint {how.rdzv_endpoint!r}: give HOST:PORT, e.g. node01:29500."
            )
        rdzv_id = how.rdzv_id or f"harness-{cell.name}"
        launch += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={how.rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
    elif nnodes > 1:
        raise UsageError(
            f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT: a host every node can reach "
            f"(the first node, e.g. node01:29500) and the same on every node."
        )
    else:
        launch.append("--standalone")
    if how.node_rank is not None and not how.rdzv_endpoint:
        launch.append(f"--node-rank={how.node_rank}")
    elif how.node_rank is not None:
        # c10d numbers nodes by arrival, but the store's host must be fixed: if
        # whichever agent bound the port first ends early (its rank died), the
        # other agents lose the store and kill their ranks before rank 0 merges.
        launch.append(f"--rdzv-conf=is_host={int(how.node_rank == 0)}")
    argv = [sys.executable, "-m", "torch.distributed.run", *launch, "--max-restarts=0"]
    argv += ["-m", ENTRY, *pytest_args]
    # the same `harness run` flags (not torchrun's): the line must be runnable as printed
    rerun = ["harness", "run", cell.name, "--launcher", "torchrun", "--nnodes", str(nnodes)]
    rerun += ["--nproc-per-node", str(nproc)]
    if how.rdzv_endpoint:
        rerun += ["--rdzv-endpoint", how.rdzv_endpoint]
    if how.rdzv_id:
        rerun += ["--rdzv-id", how.rdzv_id]
    if how.matrix:
        rerun += ["--matrix", how.matrix]
    return argv, nproc, shlex.join(rerun)


def _check_world(cell: Cell, env: Mapping[str, str]) -> None:
    """Under srun, the task count must be the cell's world size."""
    launch = detect({**os.environ, **env})
    if launch is not None and launch.world_size != cell.world_size:
        raise UsageError(
            f"the launcher started {launch.world_size} ranks, but cell {cell.name} has "
            f"{cell.world_size}; pick the cell with {launch.world_size} ranks or change "
            f"srun's --ntasks."
        )
