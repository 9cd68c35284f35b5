"""Seconds each op of the ops capability takes on one core: the ``[slow]`` table's numbers.

    python bench/op_seconds.py [--world-size N] OP [OP ...]

Runs each op as an ops worker does (every sample, every layout, LocalTensor at the
world size, on cpu) in this process, one thread, and prints ``"op" = seconds`` lines
to paste into ``harness/conformance/xfails/torch-X.Y.toml``'s ``[slow]`` table, with
the verdict as a comment. Workers start the ops listed there first, longest first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ops", nargs="+", metavar="OP", help="op keys (name or name:variant)")
    parser.add_argument("--world-size", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from harness import compat
    from harness.conformance import _ops
    from harness.conformance._ops_workers import _Checker, _run

    database = {_ops.op_key(op): op for op in compat.op_database()}
    unknown = [k for k in args.ops if k not in database]
    if unknown:
        print(
            f"op_seconds: no OpInfo named {unknown[0]!r} in torch {torch.__version__}",
            file=sys.stderr,
        )
        return 2
    for key in args.ops:
        start = time.perf_counter()
        status, _ = _run(_Checker(), database[key], args.world_size, "cpu")
        print(f"{json.dumps(key)} = {time.perf_counter() - start:.1f}  # {status}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
