"""What a certification's reference costs, side by side with the sweep it judges.

    python bench/reference_cost.py [--world-size 2] [--ops a,b,...]

In one run, one after the other on this host: (1) the cell's sweep of ``--ops``
(pytest on harness/conformance/test_ops.py, as certify runs it); (2) the live reference
of the same ops (what a non-CPU cell without a record computes for the ops it failed:
:func:`harness.references.live`, a clean subprocess on CPU under LocalTensor); (3)
finding the shipped record and (4) reading a cached one (what every later run pays).
Default ops: torch 2.13's world-size-2-only failures, the ones a vendor's 2-device cell
would have been failed for. Prints one line per step and the ratio live / sweep.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OPS = (
    "argmax,argmin,masked.argmax,masked.argmin,linalg.ldl_solve,linalg.solve_triangular,"
    "nn.functional.cross_entropy,nn.functional.nll_loss,nn.functional.rms_norm"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--ops", default=OPS)
    args = parser.parse_args(argv)
    from harness import references

    ops = [o for o in args.ops.split(",") if o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_OPS_VERDICTS": "raw"}
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "harness/conformance/test_ops.py"), f"--harness-ops={args.ops}",
         f"--harness-world-size={args.world_size}"],
        env=env, capture_output=True, check=False,
    )  # fmt: skip
    sweep = time.monotonic() - started
    started = time.monotonic()
    found = references.live(ops, args.world_size, timeout=300)
    live = time.monotonic() - started
    failed = (
        sum(1 for status, _ in found.values() if status == "failed")
        if isinstance(found, dict)
        else "?"
    )

    class Cell:
        device, plugins, world_size = "cpu", (), args.world_size

    started = time.monotonic()
    use = references.plan(Cell())
    shipped = time.monotonic() - started
    with tempfile.TemporaryDirectory() as cache:  # a world size no record ships: the cache
        os.environ["XDG_CACHE_HOME"] = cache
        references._store(None, references.reference.World({}, frozenset(ops)), 99)

        class Cached(Cell):
            world_size = 99

        started = time.monotonic()
        use_cache = references.plan(Cached())
        cached = time.monotonic() - started
    print(f"ops: {len(ops)} at world size {args.world_size}, torch {references.torch_build()}")
    print(f"(1) the cell's sweep of them (pytest, 1 process tree): {sweep:.1f} s")
    print(
        f"(2) their live reference (clean subprocess, CPU, LocalTensor): {live:.1f} s, {failed} fail on it"
    )
    print(f"    live / sweep: {live / sweep:.2f}")
    print(f"(3) finding the shipped record ({use.source or 'none'}): {shipped * 1000:.1f} ms")
    print(f"(4) reading a cached record ({use_cache.source}): {cached * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
