"""``harness run CELL --launcher torchrun|slurm``: a cell's suites on launcher ranks.

torchrun: this command is the agent of one node; it starts
``--nproc-per-node`` ranks and meets the other nodes at ``--rdzv-endpoint``.
slurm: srun already started one ``harness run`` per rank, so this process
becomes that rank. Either way the ranks run ``harness.ranks.external_main``,
and rank 0 writes the merged JUnit XML into the cell's results folder.
Imports no torch until a rank runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from harness import hosts
from harness.errors import UsageError
from harness.matrix import Cell
from harness.ranks.launch import LAUNCHERS, requested

ENTRY = "harness.ranks.external_main"


def add_arguments(parser) -> None:
    group = parser.add_argument_group("multi-node (see docs/multi-node.md)")
    group.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        help="torchrun: start this node's ranks; slurm: this process is one srun task",
    )
    group.add_argument("--nnodes", type=int, metavar="N", help="torchrun nodes (default 1)")
    group.add_argument(
        "--nproc-per-node", type=int, metavar="M", help="ranks per node (default: cell / N)"
    )
    group.add_argument(
        "--rdzv-endpoint",
        metavar="HOST:PORT",
        help="where the nodes meet (c10d rendezvous); required with --nnodes > 1",
    )
    group.add_argument("--rdzv-id", metavar="ID", help="job id shared by all nodes")
    group.add_argument(
        "--node-rank",
        type=int,
        metavar="R",
        help="this node's number; with --rdzv-endpoint, node 0 serves the rendezvous store",
    )


def wanted(args) -> bool:
    """A launcher was named, or this process already runs under torchrun."""
    return bool(getattr(args, "launcher", None)) or requested() == "torchrun"


def run(args, cell: Cell, results: Path, env: dict[str, str]) -> int:
    if cell.mode == "local":
        raise UsageError(
            f"cell {cell.name} simulates its ranks in one process (local mode); run it "
            f"without --launcher, or pick a native cell (`harness matrix list`)."
        )
    from harness.commands.run import suite_paths

    results = results.resolve()
    pytest_args = [
        *suite_paths(cell, args.passthrough),
        "-o",
        f"junit_suite_name={cell.name}",
        *args.passthrough,
    ]
    env = {**env, "HARNESS_JUNIT": str(results / "junit.xml")}
    if args.launcher == "torchrun":
        argv, ranks_here, rerun = _torchrun(args, cell, pytest_args)
        env["HARNESS_RERUN"] = rerun
    else:
        # One srun task (or a torchrun worker running `harness run`): become the rank.
        argv, ranks_here = [sys.executable, "-m", ENTRY, *pytest_args], 1
        env["HARNESS_LAUNCHER"] = args.launcher or "torchrun"
        env.setdefault("HARNESS_RERUN", f"srun <your flags> harness run {cell.name}")
        _check_world(cell, env)
    if args.dry_run:
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv))
        return 0
    _check_devices(cell, ranks_here)
    results.mkdir(parents=True, exist_ok=True)
    if args.launcher == "torchrun":
        print(
            f"harness: {cell.name}: {ranks_here} rank(s) on this node of {cell.world_size} "
            f"via torchrun, {cell.device}/{cell.backend}; merged JUnit XML (rank 0's node) -> "
            f"{results / 'junit.xml'}",
            flush=True,
        )
    child = subprocess.Popen(argv, env={**os.environ, **env})
    try:
        code = child.wait()
    except KeyboardInterrupt:  # torchrun got the same SIGINT and stops its ranks
        child.wait()
        raise
    if code and args.launcher == "torchrun":
        print(
            f"harness: {cell.name}: torchrun ended with exit code {code} (its summary above "
            f"names each rank's exit). Merged JUnit XML on rank 0's node: "
            f"{results / 'junit.xml'}; rank logs: {results / 'ranks'}/",
            file=sys.stderr,
        )
    return code


def _torchrun(args, cell: Cell, pytest_args: list[str]) -> tuple[list[str], int, str]:
    nnodes = args.nnodes or 1
    if nnodes < 1:
        raise UsageError(f"--nnodes {nnodes}: use 1 or more nodes.")
    nproc = args.nproc_per_node
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
    if args.rdzv_endpoint:
        host, _, port = args.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(
                f"--rdzv-endpoint {args.rdzv_endpoint!r}: give HOST:PORT, e.g. node01:29500."
            )
        rdzv_id = args.rdzv_id or f"harness-{cell.name}"
        launch += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={args.rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
    elif nnodes > 1:
        raise UsageError(
            f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT: a host every node can reach "
            f"(the first node, e.g. node01:29500) and the same on every node."
        )
    else:
        launch.append("--standalone")
    if args.node_rank is not None and not args.rdzv_endpoint:
        launch.append(f"--node-rank={args.node_rank}")
    elif args.node_rank is not None:
        # c10d numbers nodes by arrival, but the store's host must be fixed: if
        # whichever agent bound the port first ends early (its rank died), the
        # other agents lose the store and kill their ranks before rank 0 merges.
        launch.append(f"--rdzv-conf=is_host={int(args.node_rank == 0)}")
    argv = [sys.executable, "-m", "torch.distributed.run", *launch, "--max-restarts=0"]
    argv += ["-m", ENTRY, *pytest_args]
    # the same `harness run` flags (not torchrun's): the line must be runnable as printed
    rerun = ["harness", "run", cell.name, "--launcher", "torchrun", "--nnodes", str(nnodes)]
    rerun += ["--nproc-per-node", str(nproc)]
    if args.rdzv_endpoint:
        rerun += ["--rdzv-endpoint", args.rdzv_endpoint]
    if args.rdzv_id:
        rerun += ["--rdzv-id", args.rdzv_id]
    if args.matrix:
        rerun += ["--matrix", args.matrix]
    return argv, nproc, shlex.join(rerun)


def _check_world(cell: Cell, env: dict[str, str]) -> None:
    """Under srun, the task count must be the cell's world size."""
    from harness.ranks.launch import detect

    launch = detect({**os.environ, **env})
    if launch is not None and launch.world_size != cell.world_size:
        raise UsageError(
            f"the launcher started {launch.world_size} ranks, but cell {cell.name} has "
            f"{cell.world_size}; pick the cell with {launch.world_size} ranks or change "
            f"srun's --ntasks."
        )


def _check_devices(cell: Cell, ranks_here: int) -> None:
    """Refuse a node that cannot give each of its ranks a device (harness.hosts)."""
    hosts.preflight(cell)
    hosts.check_cell(cell, ranks_here=ranks_here)
