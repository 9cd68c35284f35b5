"""Per-test overhead of the rank runner, side by side with PyTorch's private bases.

Runs the same N trivial tests (one all_reduce at world size 4) with:
  upstream process   torch.testing._internal...common_dtensor.DTensorTestBase
  harness process    harness.DTensorTestBase (ranks forked from a preloaded server)
  upstream pool      ...common_dtensor.DTensorContinuousTestBase
  harness pool       harness.DTensorContinuousTestBase
and one test that needs 2 GPUs (a skip on CPU) with each process base.
Each row is its own pytest process; per-test times come from its JUnit XML.

    python bench/bench_ranks.py            # 10 tests, world size 4
    python bench/bench_ranks.py --tests 5 --only harness
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

TEMPLATE = """
import torch
import torch.distributed as dist
{imports}


class Process(DTensorTestBase):
    @property
    def world_size(self):
        return {ws}

{process_tests}

    @skip_if_lt_x_gpu(2)
    @with_comms
    def test_zz_needs_gpus(self):
        pass


class Pool(DTensorContinuousTestBase):
    world_size = {ws}

{pool_tests}
"""

IMPORTS = {
    "upstream": (
        "from torch.testing._internal.common_distributed import skip_if_lt_x_gpu\n"
        "from torch.testing._internal.distributed._tensor.common_dtensor import (\n"
        "    DTensorContinuousTestBase, DTensorTestBase, with_comms)"
    ),
    "harness": (
        "from harness import DTensorContinuousTestBase, DTensorTestBase, skip_if_lt_x_gpu, with_comms"
    ),
}

BODY = """\
        t = torch.ones(4)
        dist.all_reduce(t)
        assert t[0].item() == self.world_size
"""


def write_file(folder: Path, flavour: str, tests: int, ws: int) -> Path:
    process = "\n".join(
        f"    @with_comms\n    def test_{i:02d}(self):\n{BODY}" for i in range(tests)
    )
    pool = "\n".join(f"    def test_{i:02d}(self):\n{BODY}" for i in range(tests))
    path = folder / f"test_bench_{flavour}.py"
    path.write_text(
        TEMPLATE.format(imports=IMPORTS[flavour], ws=ws, process_tests=process, pool_tests=pool)
    )
    return path


def run(path: Path, cls: str) -> tuple[float, list[tuple[str, float, str]]]:
    xml = path.with_suffix(f".{cls}.xml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("HARNESS_MODE", "HARNESS_WORLD_SIZE"):
        env.pop(var, None)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(path),
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            cls,
            f"--junitxml={xml}",
        ],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        status = "passed"
        for child in case:
            status = {"failure": "failed", "error": "failed", "skipped": "skipped"}.get(
                child.tag, status
            )
        cases.append((case.get("name"), float(case.get("time")), status))
    return wall, cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=10)
    parser.add_argument("--world-size", type=int, default=4)
    parser.add_argument("--only", choices=("harness", "upstream"))
    args = parser.parse_args()
    flavours = [args.only] if args.only else ["upstream", "harness"]

    rows: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        for flavour in flavours:
            path = write_file(Path(tmp), flavour, args.tests, args.world_size)
            for cls in ("Process", "Pool"):
                wall, cases = run(path, cls)
                tests = [c for c in cases if not c[0].startswith("test_zz")]
                skips = [c for c in cases if c[0].startswith("test_zz")]
                bad = [c for c in tests if c[2] != "passed"]
                times = [t for _, t, _ in tests]
                rows[(flavour, cls)] = {
                    "wall": wall,
                    "first": times[0] if times else float("nan"),
                    "rest": statistics.median(times[1:]) if len(times) > 1 else float("nan"),
                    "mean": statistics.mean(times) if times else float("nan"),
                    "skip": skips[0][1] if skips else None,
                    "bad": len(bad),
                }
                print(f"  ran {flavour} {cls}: {wall:.1f} s", file=sys.stderr, flush=True)

    print(
        f"\n{args.tests} tests of one all_reduce, world size {args.world_size}, "
        f"torch {_torch_version()}, {os.cpu_count()} CPUs\n"
    )
    print(
        "| base | pytest wall s | first test s | per test s (median of the rest) | mean s | failed |"
    )
    print("|---|---|---|---|---|---|")
    for (flavour, cls), r in rows.items():
        name = f"{flavour} {'process' if cls == 'Process' else 'pool'}"
        print(
            f"| {name} | {r['wall']:.1f} | {r['first']:.2f} | {r['rest']:.3f} | {r['mean']:.3f} | {r['bad']} |"
        )
    for flavour in flavours:
        skip = rows[(flavour, "Process")]["skip"]
        if skip is not None:
            print(f"\n{flavour}: a test that needs 2 GPUs is skipped in {skip:.3f} s")
    if len(flavours) == 2:
        up, us = rows[("upstream", "Process")], rows[("harness", "Process")]
        print(
            f"\nprocess mode, per test (median after the first): upstream/harness = "
            f"{up['rest'] / us['rest']:.1f}x"
        )
        print(
            f"process mode, mean per test incl. the fork server's start: upstream/harness = "
            f"{up['mean'] / us['mean']:.1f}x"
        )
        up, us = rows[("upstream", "Pool")], rows[("harness", "Pool")]
        print(
            f"pool mode, first test (spawn): upstream {up['first']:.2f} s, harness {us['first']:.2f} s"
        )
    return 0


def _torch_version() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
