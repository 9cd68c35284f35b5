"""Run a DTensor test suite under PyTorch's harness and migrated to this kit, side by side.

    python bench/suite.py DIR [--out FOLDER] [--only GLOB] [--timeout S]

Every test file under DIR (test_*.py, *_test.py) runs twice, one after the other on
the same machine: as it is (PyTorch's private helpers) and as a copy migrated with
``harness migrate`` in a temporary folder. Per test it reports whether the outcomes
(pass, fail, error, skip, xfail) match; per file, wall time and peak memory of each
run and their ratio. Nothing is fetched: DIR is whatever you point it at.

Peak memory is measured three ways, all for the whole pytest process tree:
``tree_pss``: the largest sum of PSS over the tree, sampled every
``SAMPLE_S * MEMORY_EVERY`` from /proc/PID/smaps_rollup (a page shared by n processes
counts 1/n in each, so the sum is what the tree costs the host: the figure to compare
a forking side with a single-process one by); ``tree_rss``: the same for RSS (shared pages count once per
process, so it over-counts forked ranks and workers); ``max_rss``:
the largest single process's peak RSS, from wait4() (the kernel's ru_maxrss, which
covers every descendant the tree waited for).

Each run also has a floor: the CPU seconds of the pytest process tree (user +
system; the larger of wait4()'s count, which covers every descendant the tree
waited for, and the sum of each process's own CPU sampled from /proc as often,
which also sees pool ranks started by a server) divided by the cores this process
may run on. That run's work cannot finish on those cores in less; wall / floor near 1
means the cores were busy with the tests, higher means waiting: a GIL-bound
process on 2 cores sits near 2, and other load on a shared host raises it too. A
rank that outlives its pytest is killed and not counted, so the floor can only be
under-estimated.

A second floor, ``serial_floor_s``, also counts that no process computes on two cores
at once: in each ``SAMPLE_S`` the run's work needed at least the larger of its CPU
seconds over the cores and the busiest single process's CPU seconds (capped at the
interval, for a process with threads). Summed over the run, that is the least time
the run could have taken doing the same work in the same order, one test after
another; wall / serial floor near 1 means no second lay idle that the tests' own
processes could have used. A file whose work is one process (a LocalTensor test,
a test without ranks) sits near 2 against the first floor and near 1 against this
one; waiting in the harness (sleeps, polls, timeouts) raises both. CPU that no
sample saw (a process that lived less than ``SAMPLE_S``) counts as spread over
every core, so this floor too can only be under-estimated.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.migrate import iter_test_files, migrate_source

SIDES = ("upstream", "harness")
OUTCOMES = ("pass", "fail", "error", "skip", "xfail")
#: Seconds between two looks at the run's processes. Each look reads every process's
#: stat and the tree's smaps_rollup: at 0.1 s that was a fifth of a core (measured
#: 2026-12-07, the whole op sweep), which a side using both cores pays in wall time
#: and a one-core side does not.
SAMPLE_S = 0.25
#: Every how many looks memory is read too. smaps_rollup walks every mapping of a
#: process: on a tree of torch processes (thousands of mappings each) it was most of
#: a look's cost, and the looks took a quarter of a core (measured 2026-12-07, the
#: start of test_convolution_ops.py), which the run under test lost. CPU is read
#: every look: the serial floor needs it per interval.
MEMORY_EVERY = 4


@dataclass
class Run:
    """One pytest process on one file."""

    side: str
    file: str
    command: list[str]
    exit_code: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0
    tree_rss_mb: float = 0.0
    tree_pss_mb: float = 0.0
    max_rss_mb: float = 0.0
    cpu_s: float = 0.0
    cores: int = 1
    floor_s: float = 0.0
    serial_floor_s: float = 0.0
    sampler_cpu_s: float = 0.0  # what this process spent looking, beside the run
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def counts(self) -> dict[str, int]:
        return {o: sum(1 for v in self.outcomes.values() if v == o) for o in OUTCOMES}


# --- running one file -------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
        for line in fh:
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _tree_memory(
    root: int, cpu: dict[int, float] | None = None, memory: bool = True
) -> tuple[int, int]:
    """Sums of RSS and of PSS (bytes) over ``root`` and its descendants, from /proc
    (0, 0 when ``memory`` is False).

    ``cpu``, when given, gets each process's own CPU seconds so far (user + system):
    ranks a pool's server starts are not the runner's children, so wait4() misses them.
    """
    tree, todo, rss, pss = _children_map(), [root], 0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            if memory:
                with open(f"/proc/{pid}/statm", "rb") as fh:
                    rss += int(fh.read().split()[1]) * page
                pss += _pss_bytes(pid)
            if cpu is not None:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    stat = fh.read()
                fields = stat[stat.rindex(b")") + 2 :].split()
                cpu[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss


@dataclass
class SerialFloor:
    """The serial floor (see the module's docstring), one sample at a time."""

    cores: int
    last_s: float
    seen: dict[int, float] = field(default_factory=dict)
    total_s: float = 0.0

    def add(self, now_s: float, cpu: dict[int, float]) -> None:
        """``cpu``: every process's CPU seconds so far (a dead one keeps its last)."""
        deltas = [c - self.seen.get(pid, 0.0) for pid, c in cpu.items()]
        deltas = [d for d in deltas if d > 0]
        if deltas:
            interval = now_s - self.last_s
            self.total_s += max(sum(deltas) / self.cores, min(max(deltas), interval))
        self.seen, self.last_s = dict(cpu), now_s

    def finish(self, cpu_s: float) -> float:
        """The floor, counting CPU no sample saw as spread over every core."""
        unseen = max(0.0, cpu_s - sum(self.seen.values()))
        return self.total_s + unseen / self.cores


def run_pytest(side: str, root: Path, rel: str, xml: Path, timeout: float, extra: list[str]) -> Run:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--rootdir={root}",
        f"--junitxml={xml}",
        "-q",
        "-rN",
        *(["-p", "no:harness"] if side.startswith("upstream") else []),
        *extra,
        rel,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    run = Run(side=side, file=rel, command=command)
    log = xml.with_suffix(".log")
    with open(log, "wb") as out:
        start = time.perf_counter()
        serial = SerialFloor(cores(), start)
        proc = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        peak, peak_pss, status, usage, cpu = 0, 0, None, None, {}
        looks, looking_since = 0, time.process_time()
        try:
            while status is None:
                pid, code, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status, usage = code, rusage
                    break
                rss, pss = _tree_memory(proc.pid, cpu, memory=looks % MEMORY_EVERY == 0)
                looks += 1
                serial.add(time.perf_counter(), cpu)
                peak, peak_pss = max(peak, rss), max(peak_pss, pss)
                if time.perf_counter() - start > timeout:
                    run.timed_out = True
                    _kill_group(proc.pid)
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(SAMPLE_S)
        except BaseException:  # Ctrl-C, SIGTERM: take the run's whole process group along
            _kill_group(proc.pid)
            os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        run.wall_s = time.perf_counter() - start
        run.sampler_cpu_s = round(time.process_time() - looking_since, 2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(proc.pid)  # ranks the run left behind, if any
    run.exit_code = proc.returncode
    run.tree_rss_mb = peak / 2**20
    run.tree_pss_mb = peak_pss / 2**20
    run.max_rss_mb = usage.ru_maxrss / 1024 if usage else 0.0
    # Both are lower bounds: wait4 misses ranks the tree did not wait for, the samples
    # miss the last ``SAMPLE_S`` of each process. The larger is the better one.
    waited = usage.ru_utime + usage.ru_stime if usage else 0.0
    run.cpu_s = round(max(waited, sum(cpu.values())), 2)
    run.cores = cores()
    run.floor_s = round(run.cpu_s / run.cores, 2)
    run.serial_floor_s = round(serial.finish(run.cpu_s), 2)
    if xml.exists():
        run.outcomes, run.messages, run.times = parse_junit(xml)
    else:
        run.note = "no JUnit XML: " + ("timed out" if run.timed_out else "pytest crashed")
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        run.messages["<file>"] = "\n".join(tail)
    return run


def cores() -> int:
    """Cores this process (and the pytest it starts) may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def parse_junit(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """JUnit XML -> {test id: outcome}, {test id: first line of its message}, {test id: s}."""
    outcomes, messages, times = {}, {}, {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        times[test] = times.get(test, 0.0) + float(case.get("time") or 0.0)
        outcome, message = "pass", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = (
                    ("fail" if child.tag == "failure" else "error"),
                    child.get("message", ""),
                )
                break
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfail" if xfail else "skip"), child.get("message", "")
        if test in outcomes and outcomes[test] != "pass" and outcome == "pass":
            continue  # a teardown error adds a second entry: keep the worse one
        outcomes[test] = outcome
        if message:
            messages[test] = message.strip().splitlines()[0][:300] if message.strip() else ""
    return outcomes, messages, times


# --- the suite ------------------------------------------------------------------------------


def prepare(src: Path, work: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """Two copies of DIR: as it is, and migrated. Returns them and what migrate kept."""
    upstream, migrated = work / "upstream", work / "harness"
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
    shutil.copytree(src, upstream, ignore=ignore)
    shutil.copytree(src, migrated, ignore=ignore)
    kept: dict[str, list[str]] = {}
    for path in sorted(migrated.rglob("*.py")):
        rel = str(path.relative_to(migrated))
        migration = migrate_source(path.read_text(encoding="utf-8"), rel)
        if migration.changed:
            path.write_text(migration.new, encoding="utf-8")
        if migration.kept:
            kept[rel] = migration.kept_lines()
    return upstream, migrated, kept


# Differences that are the kit's design, not a wrong answer: (side that differs,
# its outcome, words in its message) -> why. Listed in the report, but apart.
BY_DESIGN = (
    (
        "upstream",
        "skip",
        "Previous test failed, skipping",
        "PyTorch's continuous base skips the rest of a class after one failure; "
        "the kit runs every test (by design, docs/writing-tests.md)",
    ),
)


def by_design(row: dict[str, str]) -> str:
    """Why this difference is intended, or "" when it is a real mismatch."""
    for side, outcome, words, why in BY_DESIGN:
        if row[side] == outcome and words in row[f"{side}_message"]:
            return why
    return ""


def real_mismatches(entry: dict) -> list[dict[str, str]]:
    return [m for m in entry.get("mismatches", []) if not by_design(m)]


def compare(runs: dict[str, Run]) -> list[dict[str, str]]:
    up, ours = runs["upstream"].outcomes, runs["harness"].outcomes
    rows = []
    for test in sorted(set(up) | set(ours)):
        a, b = up.get(test, "missing"), ours.get(test, "missing")
        if a != b:
            rows.append(
                {
                    "test": test,
                    "upstream": a,
                    "harness": b,
                    "upstream_message": runs["upstream"].messages.get(test, ""),
                    "harness_message": runs["harness"].messages.get(test, ""),
                }
            )
    return rows


def ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder of test files")
    parser.add_argument("--out", type=Path, default=Path("results/bench-suite"))
    parser.add_argument(
        "--only", action="append", default=[], metavar="GLOB", help="files to run (relative)"
    )
    parser.add_argument("--sides", default="upstream,harness", help="upstream,harness")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per file and side, s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add to (or replace files in) the report already in --out, e.g. big files later",
    )
    parser.add_argument(
        "--harness-args",
        default="",
        metavar="ARGS",
        help='pytest arguments for the kit\'s side only, e.g. "-n 2" (its xdist scheduler)',
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    # Split at "--" ourselves: argparse gives a "*" positional after DIR nothing
    # once an option comes between them (DIR --only F -- -k EXPR was an error).
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.pytest_args = [*args.pytest_args, *extra]
    if not args.dir.is_dir():
        print(f"suite.py: error: {args.dir} is not a folder of test files", file=sys.stderr)
        return 2
    sides = [s for s in args.sides.split(",") if s]
    if not sides or set(sides) - set(SIDES):
        print(f"suite.py: error: --sides takes {','.join(SIDES)}", file=sys.stderr)
        return 2
    files = [str(p.relative_to(args.dir)) for p in iter_test_files([args.dir])]
    if args.only:
        files = [f for f in files if any(fnmatch.fnmatch(f, g) for g in args.only)]
    if not files:
        print(f"suite.py: error: no test files under {args.dir}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="harness-suite-"))
    upstream, migrated, kept = prepare(args.dir, work)
    roots = {"upstream": upstream, "harness": migrated}
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "memory": "tree_rss: peak sum of RSS over the pytest process tree, sampled every "
        f"{SAMPLE_S * MEMORY_EVERY} s; max_rss: largest single process (wait4 ru_maxrss)",
        "files": [],
    }
    previous = args.out / "suite.json"
    kept_runs: dict[str, dict[str, Run]] = {}
    if args.append and previous.exists():
        earlier = json.loads(previous.read_text())
        report["files"] = [f for f in earlier["files"] if f["file"] not in files]
        kept_runs = earlier_runs(earlier, files, sides)
        report["earlier_runs"] = earlier.get("earlier_runs", []) + [
            {k: earlier[k] for k in ("command", "date", "host")}
        ]
    try:
        for rel in files:
            runs = dict(kept_runs.get(rel, {}))  # --append --sides X keeps the other side
            for side in sides:
                xml = work / f"{side}-{rel.replace('/', '__')}.xml"
                print(f"[{time.strftime('%H:%M:%S')}] {side:8} {rel} ...", flush=True)
                own = shlex.split(args.harness_args) if side == "harness" else []
                runs[side] = run_pytest(
                    side, roots[side], rel, xml, args.timeout, [*args.pytest_args, *own]
                )
                r = runs[side]
                print(
                    f"    {r.wall_s:8.1f} s  floor {r.floor_s:8.1f} s ({r.cpu_s:.1f} CPU s / "
                    f"{r.cores} cores), serial {r.serial_floor_s:.1f} s  "
                    f"{r.tree_rss_mb:8.0f} MB  exit {r.exit_code}  "
                    f"{r.counts()} {r.note}",
                    flush=True,
                )
            entry = {"file": rel, "runs": {s: asdict(r) for s, r in runs.items()}}
            entry["kept_from_torch"] = kept.get(rel, [])
            if len(runs) == 2:
                entry["mismatches"] = compare(runs)
                entry["wall_ratio"] = ratio(runs["harness"].wall_s, runs["upstream"].wall_s)
                entry["floor_ratio"] = ratio(runs["harness"].floor_s, runs["upstream"].floor_s)
                entry["tree_rss_ratio"] = ratio(
                    runs["harness"].tree_rss_mb, runs["upstream"].tree_rss_mb
                )
            report["files"] = [f for f in report["files"] if f["file"] != rel] + [entry]
            write_reports(report, args.out)  # after every file: a long run shows progress
    finally:
        if args.keep:
            print(f"copies kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out / 'suite.md'} and {args.out / 'suite.json'}")
    mismatched = sum(len(real_mismatches(f)) for f in report["files"])
    return 1 if mismatched else 0


def earlier_runs(earlier: dict, files: list[str], sides: list[str]) -> dict[str, dict[str, Run]]:
    """The runs of an earlier report that this one does not redo, per file.

    So one side of a folder can be measured now and the other later (the fast side
    first, the slow one file by file), and each file still gets its comparison.
    """
    names = {f.name for f in fields(Run)}
    kept: dict[str, dict[str, Run]] = {}
    for entry in earlier.get("files", []):
        if entry["file"] not in files:
            continue
        for side, run in entry.get("runs", {}).items():
            if side not in sides:
                kept.setdefault(entry["file"], {})[side] = Run(
                    **{k: v for k, v in run.items() if k in names}
                )
    return kept


def host_info() -> dict[str, str]:
    try:
        import torch

        version = torch.__version__
    except ImportError:
        version = "not installed"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "load_1m_at_start": f"{os.getloadavg()[0]:.2f}",
        "torch": version,
    }


def write_reports(report: dict, out: Path) -> None:
    (out / "suite.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "suite.md").write_text(markdown(report))


def _counts(run: dict) -> str:
    c = {o: 0 for o in OUTCOMES}
    for v in run["outcomes"].values():
        c[v] += 1
    text = f"{c['pass']}/{c['fail'] + c['error']}/{c['skip']}/{c['xfail']}"
    return text + (" (timeout)" if run["timed_out"] else "") + (" (no XML)" if run["note"] else "")


def skip_costs(report: dict) -> list[tuple[str, list[str]]]:
    """Per file and side: how many skips, and the median seconds one cost."""
    rows = []
    for entry in sorted(report["files"], key=lambda e: e["file"]):
        cells, any_skip = [], False
        for side in SIDES:
            run = entry["runs"].get(side)
            times = (
                sorted(
                    run.get("times", {}).get(t, 0.0)
                    for t, o in run["outcomes"].items()
                    if o == "skip"
                )
                if run
                else []
            )
            any_skip = any_skip or bool(times)
            median = f"{statistics.median(times):.3f}" if times else "-"
            cells += [str(len(times)) if run else "-", median]
        if any_skip:
            rows.append((entry["file"], cells))
    return rows


def _ratio_text(wall: float, floor: float) -> str:
    value = ratio(wall, floor)
    return f"{value:.2f}" if value is not None else "-"


def _wall_over_floor(run: dict | None, floor: str = "floor_s") -> str:
    """wall / a floor of one run, "-" when not run or measured before that floor existed."""
    if not run or not run.get(floor):
        return "-"
    return _ratio_text(run["wall_s"], run[floor])


def _mismatch_cell(entries: list[dict]) -> str:
    total = sum(len(e.get("mismatches", [])) for e in entries)
    intended = total - sum(len(real_mismatches(e)) for e in entries)
    return f"{total - intended} (+{intended} by design)" if intended else str(total)


def markdown(report: dict) -> str:
    lines = [
        "# PyTorch's DTensor tests: PyTorch's harness vs dtensor-harness",
        "",
        f"`{report['command']}` at {report['date']}; host: "
        + ", ".join(f"{k} {v}" for k, v in report["host"].items()),
        "",
        *(
            f"Earlier run merged in (`--append`): `{run['command']}` at {run['date']}, "
            f"load {run['host'].get('load_1m_at_start', '?')}"
            for run in report.get("earlier_runs", [])
        ),
        "",
        f"Memory: {report['memory']}.",
        "",
        "Floor: the run's CPU seconds (the pytest process and its ranks, user + system) "
        "divided by the cores it may use; wall/floor near 1 means the cores were busy "
        "with the tests. Serial floor: also counting that one process computes on one core "
        "(bench/suite.py's docstring); wall/serial floor near 1 means no idle second.",
        "",
        "| file | outcomes upstream p/f/s/x | outcomes harness p/f/s/x | mismatches "
        "| wall s upstream | wall s harness | ratio | peak MB upstream | peak MB harness "
        "| ratio | floor s upstream | floor s harness | wall/floor upstream "
        "| wall/floor harness | wall/serial floor upstream | wall/serial floor harness |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    totals = {s: [0.0, 0.0, 0.0, 0.0] for s in SIDES}  # wall, peak MB, floor, serial floor
    complete = True
    for entry in sorted(report["files"], key=lambda e: e["file"]):
        runs = entry["runs"]
        cells = [entry["file"]]
        for side in SIDES:
            cells.append(_counts(runs[side]) if side in runs else "not run")
        cells.append(_mismatch_cell([entry]) if "mismatches" in entry else "-")
        for key, ratio_key, fmt in (
            ("wall_s", "wall_ratio", "{:.1f}"),
            ("tree_rss_mb", "tree_rss_ratio", "{:.0f}"),
        ):
            for side in SIDES:
                cells.append(fmt.format(runs[side][key]) if side in runs else "-")
            value = entry.get(ratio_key)
            cells.append(f"{value:.3f}" if value is not None else "-")
        for side in SIDES:
            cells.append(f"{runs[side].get('floor_s', 0.0):.1f}" if side in runs else "-")
        for floor in ("floor_s", "serial_floor_s"):
            for side in SIDES:
                cells.append(_wall_over_floor(runs.get(side), floor))
        for side in SIDES:
            if side in runs:
                totals[side][2] += runs[side].get("floor_s", 0.0)
                totals[side][3] += runs[side].get("serial_floor_s", 0.0)
                totals[side][0] += runs[side]["wall_s"]
                totals[side][1] = max(totals[side][1], runs[side]["tree_rss_mb"])
            else:
                complete = False
        lines.append("| " + " | ".join(cells) + " |")
    if complete and len(report["files"]) > 1:
        up, ours = totals["upstream"], totals["harness"]
        lines.append(
            f"| **total** (peak: max) | | | "
            f"{_mismatch_cell(report['files'])} "
            f"| {up[0]:.1f} | {ours[0]:.1f} | {ratio(ours[0], up[0]):.3f} "
            f"| {up[1]:.0f} | {ours[1]:.0f} | {ratio(ours[1], up[1]):.3f} "
            f"| {up[2]:.1f} | {ours[2]:.1f} "
            f"| {_ratio_text(up[0], up[2])} | {_ratio_text(ours[0], ours[2])} "
            f"| {_ratio_text(up[0], up[3])} | {_ratio_text(ours[0], ours[3])} |"
        )
    mismatches = [(e["file"], m) for e in report["files"] for m in e.get("mismatches", [])]
    if mismatches:
        lines += [
            "",
            "## Outcomes that differ",
            "",
            "| test | upstream | harness | message | by design |",
        ]
        lines.append("|---|---|---|---|---|")
        for _, m in mismatches:
            side = "harness" if m["harness_message"] else "upstream"
            msg = f"{side}: {m[f'{side}_message']}".replace("|", "\\|")[:160]
            why = by_design(m) or "no"
            lines.append(f"| `{m['test']}` | {m['upstream']} | {m['harness']} | {msg} | {why} |")
    skips = skip_costs(report)
    if skips:
        lines += [
            "",
            "## Time per skipped test",
            "",
            "Median of JUnit's `time` over the skipped tests: a skip decided before any rank",
            "is spawned costs next to nothing, one decided inside the ranks costs a spawn.",
            "",
            "| file | skips upstream | s per skip upstream | skips harness | s per skip harness |",
            "|---|---|---|---|---|",
        ]
        for file, cells in skips:
            lines.append(f"| {file} | " + " | ".join(cells) + " |")
    kept = [line for e in report["files"] for line in e.get("kept_from_torch", [])]
    if kept:
        lines += ["", "## Names still imported from torch.testing._internal", ""]
        lines += [f"- `{line}`" for line in kept]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)  # `timeout` sends TERM: clean up, then go
    raise SystemExit(main())
