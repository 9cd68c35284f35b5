"""One small DTensor suite in every execution mode, ours beside upstream's.

The same ten tests (distribute, redistribute, matmul, collectives, a 2-D mesh)
run at world size 4 under process, pool, thread and local (LocalTensor) mode,
once with the kit's bases and once with PyTorch's private ones from the
installed torch. Each (implementation, mode) runs in a fresh interpreter so no
run warms the next; the time is the suite's own run, without the imports.

    OMP_NUM_THREADS=1 python bench/bench_modes.py              # the whole table
    python bench/bench_modes.py --only harness:local,upstream:local

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


def _upstream_classes():
    from torch.testing._internal.distributed._tensor import common_dtensor as up

    bases = {
        "process": up.DTensorTestBase,
        "pool": up.DTensorContinuousTestBase,
        "threads": up.DTensorOpTestBase,
    }
    out = {}
    for mode, base in bases.items():
        attrs = {"_with_comms": staticmethod(up.with_comms), "world_size": WORLD_SIZE}
        if mode != "threads":
            attrs["device_type"] = "cpu"
        out[mode] = _decorate(type(f"Upstream{mode.title()}", (Suite, base), attrs))
    out["local"] = up.create_local_tensor_test_class(out["process"])
    return out


def _harness_classes():
    import harness
    from harness.local import create_local_tensor_test_class

    bases = {
        "process": harness.DTensorTestBase,
        "pool": harness.DTensorContinuousTestBase,
        "threads": harness.DTensorOpTestBase,
    }
    out = {}
    for mode, base in bases.items():
        attrs = {"_with_comms": staticmethod(harness.with_comms), "world_size": WORLD_SIZE}
        out[mode] = _decorate(type(f"Harness{mode.title()}", (Suite, base), attrs))
    out["local"] = create_local_tensor_test_class(out["process"])
    return out


def _classes(impl):
    return _upstream_classes() if impl == "upstream" else _harness_classes()


# Module-level names, so spawned rank processes can unpickle the classes.
_IMPL = os.environ.get("BENCH_IMPL")
if _IMPL:
    for _cls in _classes(_IMPL).values():
        globals()[_cls.__name__] = _cls


def run_one(impl: str, mode: str) -> dict:
    import torch._dynamo  # noqa: F401  (upstream's imports load it; both timers start warm)

    cls = _classes(impl)[mode]
    globals()[cls.__name__] = cls
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(cls)
    with open(os.devnull, "w") as sink:
        start = time.perf_counter()
        result = unittest.TextTestRunner(stream=sink, verbosity=0).run(suite)
        seconds = time.perf_counter() - start
    return {
        "impl": impl,
        "mode": mode,
        "seconds": seconds,
        "tests": result.testsRun,
        "failed": len(result.failures) + len(result.errors),
        "skipped": len(result.skipped),
        "problems": [
            f"{t.id()}: {tb.strip().splitlines()[-1]}" for t, tb in result.failures + result.errors
        ][:3],
    }


def _child(impl: str, mode: str) -> dict:
    env = dict(os.environ, BENCH_IMPL=impl, OMP_NUM_THREADS="1", HARNESS_WORLD_SIZE=str(WORLD_SIZE))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", f"{impl}:{mode}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {
        "impl": impl,
        "mode": mode,
        "seconds": float("nan"),
        "tests": 0,
        "failed": -1,
        "skipped": 0,
        "problems": tail,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated impl:mode pairs (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        impl, mode = args.child.split(":")
        print(json.dumps(run_one(impl, mode)), flush=True)
        return 0
    pairs = [(i, m) for m in MODES for i in IMPLS]
    if args.only:
        pairs = [tuple(p.split(":")) for p in args.only.split(",")]
    rows = [_child(i, m) for i, m in pairs]
    print(f"torch {torch.__version__}, world size {WORLD_SIZE}, {len(Suite.__dict__)} attrs")
    print(
        f"{'impl':9} {'mode':8} {'tests':>5} {'fail':>4} {'skip':>4} {'seconds':>8} {'s/test':>7}"
    )
    for r in rows:
        per = r["seconds"] / r["tests"] if r["tests"] else float("nan")
        print(
            f"{r['impl']:9} {r['mode']:8} {r['tests']:5} {r['failed']:4} {r['skipped']:4} "
            f"{r['seconds']:8.2f} {per:7.3f}"
        )
        for p in r["problems"]:
            print(f"    {p}")
    by = {(r["impl"], r["mode"]): r["seconds"] for r in rows}
    ratios = [
        ("harness local vs upstream process", ("upstream", "process"), ("harness", "local")),
        ("harness local vs upstream local", ("upstream", "local"), ("harness", "local")),
        ("harness process vs upstream process", ("upstream", "process"), ("harness", "process")),
    ]
    for label, a, b in ratios:
        if a in by and b in by:
            print(f"{label}: {by[a] / by[b]:.2f}x faster" if by[b] else label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
