"""``harness run CELL [-- pytest args]``: one cell's suites under pytest.

Parses, then follows :mod:`harness.pipeline` (the pytest command, the host
check, the results folder) or, with ``--launcher``, :mod:`harness.launchers`.
The cell reaches the harness as HARNESS_* environment variables, so it crosses
into rank processes and containers unchanged.
"""

from __future__ import annotations

import sys

from harness import launchers, lifelines, lock, pipeline
from harness.commands import (
    add_command,
    add_hw_class_argument,
    add_wait_argument,
    wait_for,
    with_hw_class,
)
from harness.matrix import load_matrix


def add_parser(sub, parents) -> None:
    parser = add_command(sub, "run", run, parents, help="run one cell's suites with pytest")
    parser.add_argument("cell", help="cell name, with or without its test- prefix")
    parser.add_argument("--results", metavar="DIR", help="results folder (default: the cell's)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    add_wait_argument(parser)
    add_hw_class_argument(parser)
    group = parser.add_argument_group("multi-node (see docs/multi-node.md)")
    group.add_argument(
        "--launcher",
        choices=launchers.LAUNCHERS,
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


def run(args) -> int:
    matrix = load_matrix(args.matrix)
    cell = with_hw_class(matrix.cell(args.cell), args)
    results = pipeline.results_folder(cell, args.results)
    env = pipeline.cell_env(cell, matrix)
    if launchers.wanted(args.launcher):
        return _launch(args, cell, results, env)
    argv = pipeline.pytest_argv(cell, results, args.passthrough)
    if args.dry_run:
        print(pipeline.shell_line(env, argv))
        return 0
    pipeline.check_host(cell)
    with lock.hold(results, f"harness run {cell.name}", wait_for(args)) as held:
        print(
            f"harness: {cell.name} (matrix {matrix.path}): {cell.world_size} ranks, "
            f"{cell.mode} mode, {cell.device}/{cell.backend}; "
            f"JUnit XML -> {pipeline.junit_path(results)}",
            flush=True,
        )
        # pytest inherits the lock: the folder stays taken while it runs, even if we die
        return pipeline.execute(argv, env, pass_fds=(held,), preexec_fn=lifelines.die_with_parent)


def _launch(args, cell, results, env) -> int:
    """torchrun / Slurm ranks (docs/multi-node.md)."""
    how = launchers.Topology(
        launcher=args.launcher,
        nnodes=args.nnodes,
        nproc_per_node=args.nproc_per_node,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
        node_rank=args.node_rank,
        matrix=args.matrix,
    )
    plan = launchers.plan(cell, results, env, args.passthrough, how)
    if args.dry_run:
        print(pipeline.shell_line(plan.env, plan.argv))
        return 0
    pipeline.check_host(cell, ranks_here=plan.ranks_here)
    plan.results.mkdir(parents=True, exist_ok=True)
    junit = pipeline.junit_path(plan.results)
    if args.launcher == "torchrun":
        print(
            f"harness: {cell.name}: {plan.ranks_here} rank(s) on this node of {cell.world_size} "
            f"via torchrun, {cell.device}/{cell.backend}; merged JUnit XML (rank 0's node) -> "
            f"{junit}",
            flush=True,
        )
    # torchrun's agent ends with us, even by SIGKILL; its ranks follow it (external_main)
    code = pipeline.execute(plan.argv, plan.env, preexec_fn=lifelines.die_with_parent)
    if code and args.launcher == "torchrun":
        print(
            f"harness: {cell.name}: torchrun ended with exit code {code} (its summary above "
            f"names each rank's exit). Merged JUnit XML on rank 0's node: "
            f"{junit}; rank logs: {plan.results / 'ranks'}/",
            file=sys.stderr,
        )
    return code
