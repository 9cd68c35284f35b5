"""Time and peak memory per test against the world size: fake mode beside LocalTensor.

The same shapes-only tests (harness/conformance/test_communication.py: redistribute
collectives, a 2-D mesh, uneven local shapes) run at each world size in a fake
cell (a few rank processes of the world on the fake process group) and in a -sim
cell (LocalTensor: one process holds every rank). Each (mode, world size, test)
is one fresh pytest process running the tests; a test's time is its own (JUnit;
fake mode's fork server is started before the tests), the memory the peak
resident set of the largest process of the run (pytest, the fork server or a
rank: each one's VmHWM, read every 50 ms, and pytest's own from wait4). LocalTensor stops at the first world size whose test
takes longer than --local-cap seconds or fails.

    OMP_NUM_THREADS=1 python bench/scale_curve.py --out bench/scale_curve.json
    /work/venvs/plot/bin/python bench/scale_curve.py --plot bench/scale_curve.json \\
        --image docs/img/scale.png

Figures go to docs/scale.md; nothing here passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "harness/conformance/test_communication.py::CommunicationTest"
TESTS = (
    "test_redistribute_issues_one_collective_each",
    "test_collectives_name_their_mesh_dim",
    "test_uneven_local_shapes_and_strides",
)
FAKE_SIZES = (8, 64, 512, 1024, 4096, 8192, 32768)
LOCAL_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)


_RUN = """
import sys, pytest
if sys.argv[1] == "fake":  # the fork server's one-time start, outside the tests' time:
    import time  # one process forked from it waits until its preload has finished
    from harness.ranks import spawn
    ctx = spawn.context("harness.conformance.test_communication")
    first = ctx.Process(target=time.sleep, args=(0,))
    first.start()
    first.join()
sys.exit(pytest.main(sys.argv[2:]))
"""


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _peak_kb(pid: int) -> int:
    """A process's peak resident set so far (VmHWM), in kB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_world(mode: str, world: int, timeout: float) -> list[dict]:
    """The tests at one world size in one fresh pytest: each one's status and seconds,
    and the peak MB of the largest process the run started."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-c", _RUN, mode, "-q", "-p", "no:cacheprovider"]
        argv += [f"{MODULE}::{test}" for test in TESTS] + [f"--junitxml={junit}"]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "HARNESS_MODE": mode,
            "HARNESS_WORLD_SIZE": str(world),
            "HARNESS_TIMEOUT": str(int(timeout)),
        }
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        sampled = 0
        try:
            while True:  # every process of the run, its high-water mark, every 50 ms
                sampled = max([sampled, *(_peak_kb(pid) for pid in _tree(proc.pid))])
                pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            proc.kill()
            raise
        wall = round(time.monotonic() - started, 2)
        peak = round(max(sampled, usage.ru_maxrss) / 1024, 1)
        try:
            cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
        except (OSError, ET.ParseError):
            cases = {}
    rows = []
    for test in TESTS:
        row = {"mode": mode, "world": world, "test": test, "run_wall_s": wall, "peak_mb": peak}
        case = cases.get(test)
        status = "error" if case is None else "passed"
        for tag in ("failure", "error", "skipped"):
            if case is not None and case.find(tag) is not None:
                status = {"failure": "failed"}.get(tag, tag)
        seconds = None if case is None else round(float(case.get("time", 0)), 3)
        rows.append({**row, "status": status, "test_s": seconds})
    return rows


def measure(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    for mode, sizes in (("fake", args.fake), ("local", args.local)):
        for world in sizes:
            got = run_world(mode, world, args.local_cap * 3 if mode == "local" else 600)
            rows += got
            for row in got:
                print(json.dumps(row), flush=True)
            slow = any(r["status"] != "passed" or (r["test_s"] or 0) > args.local_cap for r in got)
            if mode == "local" and slow:
                break  # larger worlds only take longer
    return rows


def plot(rows: list[dict], image: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.4))
    colors = {"fake": "tab:blue", "local": "tab:red"}
    names = {"fake": "fake", "local": "LocalTensor"}
    lines = dict(zip(TESTS, ("-", "--", ":")))
    short = dict(zip(TESTS, ("1-D redistributes", "2-D gathers", "uneven shapes")))
    for mode, color in colors.items():
        for test, style in lines.items():
            points = [
                r
                for r in rows
                if r["mode"] == mode and r["test"] == test and r["status"] == "passed"
            ]
            if not points:
                continue
            worlds = [r["world"] for r in points]
            marker = "o" if mode == "fake" else "s"
            ax_t.plot(worlds, [r["test_s"] for r in points], style, marker=marker, color=color,
                      label=f"{names[mode]}: {short[test]}")  # fmt: skip
        points = [r for r in rows if r["mode"] == mode and r["test"] == TESTS[0]]
        ax_m.plot([r["world"] for r in points], [r["peak_mb"] for r in points], "-",
                  marker="o" if mode == "fake" else "s", color=color,
                  label=f"{names[mode]} (largest process of the run)")  # fmt: skip
    for ax, what in ((ax_t, "seconds per test"), (ax_m, "peak MB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("world size (ranks)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("harness/conformance/test_communication.py: fake mode vs LocalTensor")
    fig.tight_layout()
    image.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(image, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--fake", type=sizes,
                        default=list(FAKE_SIZES), help="world sizes for fake mode")  # fmt: skip
    parser.add_argument("--local", type=sizes,
                        default=list(LOCAL_SIZES), help="world sizes for LocalTensor")  # fmt: skip
    parser.add_argument("--local-cap", type=float, default=60.0,
                        help="stop LocalTensor after a test slower than this (s)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--append", action="store_true", help="add to --out's rows")
    parser.add_argument("--plot", type=Path, help="plot this JSON instead of measuring")
    parser.add_argument("--image", type=Path, default=ROOT / "docs" / "img" / "scale.png")
    args = parser.parse_args()
    if args.plot:
        plot(json.loads(args.plot.read_text())["rows"], args.image)
        print(f"wrote {args.image}")
        return 0
    load = [os.getloadavg()]
    rows = measure(args)
    load.append(os.getloadavg())
    if args.out:
        if args.append and args.out.exists():  # new rows replace the same (mode, world)
            before = json.loads(args.out.read_text())
            fresh = {(r["mode"], r["world"]) for r in rows}
            kept = [r for r in before["rows"] if (r["mode"], r["world"]) not in fresh]
            rows, load = kept + rows, before["load"] + load
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"load": load, "cores": os.cpu_count(), "rows": rows},
                                       indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
