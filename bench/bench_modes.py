"""One small DTensor suite in every execution mode, ours beside upstream's.

The same ten tests (distribute, redistribute, matmul, collectives, a 2-D mesh)
run at world size 4 under process, pool, thread and local (LocalTensor) mode,
once with the kit's bases and once with PyTorch's private ones from the
installed torch. Each (implementation, mode) runs in a fresh interpreter so no
run warms the next; the time is the suite's own run, without the imports.

    OMP_NUM_THREADS=1 python bench/bench_modes.py              # the whole table
    python bench/bench_modes.py --only harness:local,upstream:local --rounds 5

Figures go to docs/local-mode.md; nothing here passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import unittest

WORLD_SIZE = 4
MODES = ("process", "pool", "threads", "local")
IMPLS = ("upstream", "harness")


class Suite:
    """The tests, written once; every base runs them unchanged."""

    def _mesh(self):
        return self.build_device_mesh()

    def _full(self, rows=8, cols=4):
        return torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols)

    def test_distribute_shard(self):
        full = self._full()
        dt = distribute_tensor(full, self._mesh(), [Shard(0)])
        self.assertEqual(dt.to_local(), full.narrow(0, self.rank * 2, 2))

    def test_distribute_replicate(self):
        full = self._full()
        dt = distribute_tensor(full, self._mesh(), [Replicate()])
        self.assertEqual(dt.to_local(), full)

    def test_redistribute_shard_to_replicate(self):
        full = self._full()
        dt = distribute_tensor(full, self._mesh(), [Shard(0)])
        self.assertEqual(dt.redistribute(placements=[Replicate()]).to_local(), full)

    def test_redistribute_shard_to_shard(self):
        full = self._full()
        dt = distribute_tensor(full, self._mesh(), [Shard(0)])
        out = dt.redistribute(placements=[Shard(1)])
        self.assertEqual(out.to_local(), full.narrow(1, self.rank, 1))

    def test_matmul_colwise(self):
        mesh = self._mesh()
        x = distribute_tensor(self._full(4, 4), mesh, [Replicate()])
        w = distribute_tensor(self._full(4, 8), mesh, [Shard(1)])
        self.assertEqual((x @ w).full_tensor(), self._full(4, 4) @ self._full(4, 8))

    def test_all_reduce(self):
        mesh = self._mesh()
        t = torch.ones(4) * (self.rank + 1)
        dist.all_reduce(t, group=mesh.get_group())
        self.assertEqual(t, torch.full((4,), 10.0))

    def test_partial_to_replicate(self):
        mesh = self._mesh()
        mine = torch.ones(3) * self.rank
        dt = DTensor.from_local(mine, mesh, [Partial()])
        self.assertEqual(dt.full_tensor(), torch.full((3,), 6.0))

    def test_pointwise_on_shards(self):
        mesh = self._mesh()
        a = distribute_tensor(self._full(), mesh, [Shard(0)])
        b = distribute_tensor(torch.ones(8, 4), mesh, [Shard(0)])
        self.assertEqual((a * 2 + b).full_tensor(), self._full() * 2 + 1)

    def test_sum_reduction(self):
        dt = distribute_tensor(self._full(), self._mesh(), [Shard(0)])
        self.assertEqual(dt.sum().full_tensor(), self._full().sum())

    def test_two_dim_mesh(self):
        mesh = init_device_mesh(self.device_type, (2, 2))
        full = self._full()
        dt = distribute_tensor(full, mesh, [Shard(0), Shard(1)])
        self.assertEqual(dt.full_tensor(), full)


def _decorate(cls):
    """Wrap every test in ``with_comms`` of the base's own kit."""
    for name in [n for n in vars(Suite) if n.startswith("test_")]:
        setattr(cls, name, cls._with_comms(getattr(Suite, name)))
    return cls


import torch  # noqa: E402  (after the docstring-level constants, for readability)
import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import (  # noqa: E402
    DTensor,
    Partial,
    Replicate,
    Shard,
    distribute_tensor,
)


def _classes(impl):
    """The same Suite on each mode's base, from PyTorch's private module or the kit."""
    if impl == "upstream":
        from torch.testing._internal.distributed._tensor import common_dtensor as kit

        make_local = kit.create_local_tensor_test_class
        given = {"device_type": "cpu"}  # the bench runs on the CPU: upstream's bases are told
    else:
        import harness as kit
        from harness.local import create_local_tensor_test_class as make_local

        given = {}
    bases = {
        "process": kit.DTensorTestBase,
        "pool": kit.DTensorContinuousTestBase,
        "threads": kit.DTensorOpTestBase,
    }
    out = {}
    for mode, base in bases.items():
        attrs = {"_with_comms": staticmethod(kit.with_comms), "world_size": WORLD_SIZE}
        if mode != "threads":
            attrs.update(given)
        out[mode] = _decorate(type(f"{impl.title()}{mode.title()}", (Suite, base), attrs))
    out["local"] = make_local(out["process"])
    return out


# Module-level names, so spawned rank processes can unpickle the classes.
_IMPL = os.environ.get("BENCH_IMPL")
if _IMPL:
    for _cls in _classes(_IMPL).values():
        globals()[_cls.__name__] = _cls


def run_one(impl: str, mode: str, repeat: int) -> dict:
    """Run the suite ``repeat`` times in this process; the best run is the figure."""
    import torch._dynamo  # noqa: F401  (upstream's imports load it; both timers start warm)

    if mode == "override":  # the kit's process class under HARNESS_MODE=local
        os.environ["HARNESS_MODE"] = "local"
        cls = _classes(impl)["process"]
    else:
        cls = _classes(impl)[mode]
    globals()[cls.__name__] = cls
    runs, result = [], None
    for _ in range(repeat):
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(cls)
        with open(os.devnull, "w") as sink:
            start = time.perf_counter()
            result = unittest.TextTestRunner(stream=sink, verbosity=0).run(suite)
            runs.append(time.perf_counter() - start)
    problems = result.failures + result.errors
    return {
        "impl": impl,
        "mode": mode,
        "seconds": min(runs),
        "first": runs[0],
        "tests": result.testsRun,
        "failed": len(problems),
        "skipped": len(result.skipped),
        "problems": [f"{t.id()}: {tb.strip().splitlines()[-1]}" for t, tb in problems][:3],
    }


def _child(impl: str, mode: str, repeat: int) -> dict:
    env = dict(os.environ, BENCH_IMPL=impl, OMP_NUM_THREADS="1", HARNESS_WORLD_SIZE=str(WORLD_SIZE))
    env.pop("HARNESS_MODE", None)
    cmd = [sys.executable, __file__, "--child", f"{impl}:{mode}", "--repeat", str(repeat)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    nan = float("nan")
    return {"impl": impl, "mode": mode, "seconds": nan, "first": nan, "tests": 0, "failed": -1,
            "skipped": 0, "problems": tail}  # fmt: skip


ROWS = [(i, m) for m in MODES for i in IMPLS] + [("harness", "override")]
RATIOS = [
    ("harness local vs upstream process", ("upstream", "process"), ("harness", "local")),
    ("harness local vs upstream local", ("upstream", "local"), ("harness", "local")),
    ("harness override vs upstream local", ("upstream", "local"), ("harness", "override")),
    ("harness process vs upstream process", ("upstream", "process"), ("harness", "process")),
    ("harness pool vs upstream pool", ("upstream", "pool"), ("harness", "pool")),
    ("harness threads vs upstream threads", ("upstream", "threads"), ("harness", "threads")),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated impl:mode pairs (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="suite runs per in-process mode")
    parser.add_argument(
        "--rounds", type=int, default=3, help="fresh interpreters per in-process mode"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        impl, mode = args.child.split(":")
        print(json.dumps(run_one(impl, mode, args.repeat)), flush=True)
        return 0
    pairs = [tuple(p.split(":")) for p in args.only.split(",")] if args.only else ROWS
    best: dict[tuple[str, str], dict] = {}
    for round_ in range(args.rounds):  # rounds interleave impls, so load hits both alike
        for impl, mode in pairs:
            in_process = mode in ("local", "threads", "override")
            if round_ and not in_process:
                continue  # spawning modes once: their cost is the spawn, not warm-up
            row = _child(impl, mode, args.repeat if in_process else 1)
            if (impl, mode) not in best or row["seconds"] < best[(impl, mode)]["seconds"]:
                best[(impl, mode)] = row
    rows = [best[p] for p in pairs]
    print(f"torch {torch.__version__}, world size {WORLD_SIZE}, {os.cpu_count()} CPUs; "
          f"in-process modes: best of {args.rounds} x {args.repeat} runs")  # fmt: skip
    print(f"{'impl':9} {'mode':9} {'tests':>5} {'fail':>4} {'skip':>4} {'first s':>8} "
          f"{'seconds':>8} {'s/test':>7}")  # fmt: skip
    for r in rows:
        per = r["seconds"] / r["tests"] if r["tests"] else float("nan")
        print(f"{r['impl']:9} {r['mode']:9} {r['tests']:5} {r['failed']:4} {r['skipped']:4} "
              f"{r['first']:8.2f} {r['seconds']:8.2f} {per:7.3f}")  # fmt: skip
        for p in r["problems"]:
            print(f"    {p}")
    by = {(r["impl"], r["mode"]): r["seconds"] for r in rows}
    for label, a, b in RATIOS:
        if a in by and b in by and by[b]:
            print(f"{label}: {by[a] / by[b]:.2f}x (above 1: the kit is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
