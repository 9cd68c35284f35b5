"""PyTorch's OpInfo sweep (test_dtensor_ops.py) and the kit's ops capability, back to back.

    python bench/ops_baseline.py UPSTREAM_TEST_FILE [--out FOLDER] [--ops NAMES] [--workers N]

Runs the kit's ``ops`` capability at world size 4 (its workers, each simulating the
4 ranks under LocalTensor; ``--workers``: how many, default one per core), then
PyTorch's test/distributed/tensor/test_dtensor_ops.py
as it is (PyTorch's harness, its threads base, world size 4),
one after the other on the same machine, each under bench/suite.py's runner (wall,
floor, peak memory). Then, per op, PyTorch's verdict next to the kit's:

- PyTorch passes the op: the kit must pass it;
- PyTorch fails it as its xfail list expects: the kit must not pass it (a known
  failure, "not supported by DTensor", no tensor input to distribute, or skipped
  with a reason);
- an op on PyTorch's xfail list that now passes ("Unexpected success") counts as
  passing on PyTorch's side;
- PyTorch skips it: not compared (the kit's verdict is listed).

Coverage on both sides is ops passing / ops in the database. ``--kit-junit FILE``
takes the kit's side from a run already made (a certification's junit.xml). The upstream file is
never copied into this repository: you give its path.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402 (bench/suite.py: the runner, its floor and its JUnit reading)

ROOT = Path(__file__).resolve().parents[1]
KIT_FILE = "harness/conformance/test_ops.py"
UPSTREAM_PREFIX = "test_dtensor_op_db_"
UPSTREAM_SUFFIX = "_cpu_float32"


def upstream_ids(
    file: Path, keys: list[str], formatted: dict[str, str], float32: set[str]
) -> list[str]:
    """Node ids of the upstream tests for these ops (the whole file when none given).

    PyTorch's sweep has a test only for ops with a float32 kernel (``float32``: their
    keys); naming another one makes pytest stop with "not found".
    """
    if not keys:
        return [file.name]
    return [
        f"{file.name}::TestDTensorOpsCPU::{UPSTREAM_PREFIX}{formatted[k]}{UPSTREAM_SUFFIX}"
        for k in keys
        if k in float32
    ]


def upstream_verdicts(run: suite.Run, by_formatted: dict[str, str]) -> dict[str, str]:
    """{op key: pass | xfail | fail | skip} from PyTorch's run; unexpected successes pass."""
    out = {}
    for test, outcome in run.outcomes.items():
        name = test.rpartition("::")[2]
        if not (name.startswith(UPSTREAM_PREFIX) and name.endswith(UPSTREAM_SUFFIX)):
            continue
        key = by_formatted.get(name[len(UPSTREAM_PREFIX) : -len(UPSTREAM_SUFFIX)])
        if key is None:
            continue
        if outcome == "fail" and "Unexpected success" in run.messages.get(test, ""):
            outcome = "pass"
        out[key] = {"error": "fail"}.get(outcome, outcome)
    return out


def kit_verdicts(run: suite.Run, by_method: dict[str, str]) -> dict[str, str]:
    """{op key: the ops capability's verdict} from the kit's run."""
    from harness.report.capabilities import op_verdict

    outcome_names = {"pass": "passed", "fail": "failed", "error": "error", "skip": "skipped"}
    out = {}
    for test, outcome in run.outcomes.items():
        key = by_method.get(test.rpartition("::")[2])
        if key is None:
            continue
        message = run.messages.get(test, "")
        if outcome == "xfail":
            out[key] = "xfailed"
        elif outcome == "skip" and any(w in message for w in _UNCHECKABLE):
            out[key] = "uncheckable"
        else:
            out[key] = op_verdict(outcome_names[outcome], message)
    return out


# The kit skips an op whose samples it cannot distribute (factory ops have no tensor
# input); PyTorch's sweep fails those ("failed to convert args") and lists them as xfail.
_UNCHECKABLE = ("no tensor input", "a tensor DTensor cannot hold")
AGREES = {
    "pass": {"passed"},
    "xfail": {"xfailed", "unsupported", "uncheckable", "skipped"},
    "fail": {"xfailed", "unsupported", "failed", "uncheckable", "skipped"},
}


def compare(up: dict[str, str], kit: dict[str, str]) -> list[dict[str, str]]:
    """Ops PyTorch checks on which the kit's verdict differs."""
    return [
        {"op": key, "upstream": verdict, "harness": kit.get(key, "missing")}
        for key, verdict in sorted(up.items())
        if verdict in AGREES and kit.get(key, "missing") not in AGREES[verdict]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="PyTorch's test_dtensor_ops.py")
    parser.add_argument("--out", type=Path, default=Path("results/bench-ops"))
    parser.add_argument("--ops", default="", help="comma-separated op keys (default: all)")
    parser.add_argument(
        "--every",
        type=int,
        default=0,
        metavar="N",
        help="every Nth OpInfo of the database, from the first (a sample of it: 4 is a quarter)",
    )
    parser.add_argument("--workers", type=int, default=0, help="the kit's ops workers")
    parser.add_argument("--world-size", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=7200.0, help="per side, s")
    parser.add_argument(
        "--reuse", action="store_true", help="compare the runs already in --out, run nothing"
    )
    parser.add_argument(
        "--kit-junit",
        type=Path,
        help="the kit's side from this JUnit XML (a certification's junit.xml), not a run",
    )
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # each side runs in its own folder
    if not args.file.is_file():
        print(f"ops_baseline.py: error: {args.file} is not a file", file=sys.stderr)
        return 2

    from harness import compat
    from harness.conformance import _ops

    database = compat.op_database()
    by_formatted = {op.formatted_name: _ops.op_key(op) for op in database}
    formatted = {v: k for k, v in by_formatted.items()}
    by_method = {_ops.method_name(_ops.op_key(op)): _ops.op_key(op) for op in database}
    import torch

    float32 = {_ops.op_key(op) for op in database if torch.float32 in op.supported_dtypes("cpu")}
    if args.every < 0 or (args.every and args.ops):
        print("ops_baseline.py: error: --every N takes N >= 1, without --ops", file=sys.stderr)
        return 2
    if args.every:
        args.ops = ",".join(_ops.op_key(op) for op in database[:: args.every])
    keys = [k.strip() for k in args.ops.split(",") if k.strip()]
    unknown = [k for k in keys if k not in formatted]
    if unknown:
        print(f"ops_baseline.py: error: no OpInfo {unknown[0]!r}", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    kit_args = [
        f"--harness-world-size={args.world_size}",
        f"--harness-ops={args.ops or 'all'}",
        "--harness-device=cpu",
    ]
    if args.workers:
        os.environ["HARNESS_OPS_WORKERS"] = str(args.workers)
    runs = {}
    for side, root, targets, extra in (
        ("harness", ROOT, [KIT_FILE], kit_args),
        ("upstream", args.file.parent, upstream_ids(args.file, keys, formatted, float32), []),
    ):
        saved = args.out / f"{side}.run.json"
        if side == "harness" and args.kit_junit:
            outcomes, messages, times = suite.parse_junit(args.kit_junit)
            runs[side] = suite.Run(
                side, str(args.kit_junit), [], outcomes=outcomes, messages=messages, times=times
            )
            continue
        if args.reuse:
            runs[side] = suite.Run(**json.loads(saved.read_text()))
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {side} ...", flush=True)
        run = suite.run_pytest(
            side, root, targets[0], args.out / f"{side}.xml", args.timeout, [*extra, *targets[1:]]
        )
        saved.write_text(json.dumps(suite.asdict(run), indent=1) + "\n")
        runs[side] = run
        print(
            f"    {run.wall_s:8.1f} s  floor {run.floor_s:8.1f} s  {run.tree_rss_mb:6.0f} MB  "
            f"exit {run.exit_code}  {run.counts()} {run.note}",
            flush=True,
        )
    up = upstream_verdicts(runs["upstream"], by_formatted)
    kit = kit_verdicts(runs["harness"], by_method)
    total = len(keys) if keys else len(database)
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": suite.host_info(),
        "world_size": args.world_size,
        "kit_workers": args.workers or len(os.sched_getaffinity(0)),
        "ops_in_database": len(database),
        "ops_run": total,
        "runs": {s: suite.asdict(r) for s, r in runs.items()},
        "upstream": up,
        "harness": kit,
        "coverage": {
            "upstream": sum(v == "pass" for v in up.values()),
            "harness": sum(v == "passed" for v in kit.values()),
        },
        "differences": compare(up, kit),
    }
    (args.out / "ops.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "ops.md").write_text(markdown(report))
    print((args.out / "ops.md").read_text())
    return 1 if report["differences"] else 0


def _counts(verdicts: dict[str, str]) -> str:
    names = sorted(set(verdicts.values()))
    return ", ".join(f"{sum(v == n for v in verdicts.values())} {n}" for n in names)


def markdown(report: dict) -> str:
    up, ours = report["runs"]["upstream"], report["runs"]["harness"]
    total = report["ops_run"]
    cov = report["coverage"]
    lines = [
        "# OpInfo sweep: PyTorch's test_dtensor_ops.py vs the kit's ops capability",
        "",
        f"`{report['command']}` at {report['date']}; host: "
        + ", ".join(f"{k} {v}" for k, v in report["host"].items()),
        "",
        f"World size {report['world_size']}; the kit with {report['kit_workers']} ops workers; "
        f"{total} of {report['ops_in_database']} OpInfos.",
        "",
        "| | PyTorch's harness | the kit | ratio |",
        "|---|---|---|---|",
        f"| wall s | {up['wall_s']:.1f} | {ours['wall_s']:.1f} "
        f"| {suite.ratio(ours['wall_s'], up['wall_s'])} |",
        f"| floor s (CPU s / cores) | {up['floor_s']:.1f} | {ours['floor_s']:.1f} "
        f"| {suite.ratio(ours['floor_s'], up['floor_s'])} |",
        f"| wall / floor | {suite._wall_over_floor(up)} | {suite._wall_over_floor(ours)} | |",
        f"| peak MB (tree) | {up['tree_rss_mb']:.0f} | {ours['tree_rss_mb']:.0f} | |",
        f"| ops passing | {cov['upstream']} ({cov['upstream'] / total:.1%}) "
        f"| {cov['harness']} ({cov['harness'] / total:.1%}) | |",
        f"| verdicts | {_counts(report['upstream'])} | {_counts(report['harness'])} | |",
        "",
        f"Ops PyTorch checks on which the verdicts differ: {len(report['differences'])}.",
    ]
    if report["differences"]:
        lines += ["", "| op | PyTorch | kit |", "|---|---|---|"]
        lines += [
            f"| `{d['op']}` | {d['upstream']} | {d['harness']} |" for d in report["differences"]
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
