"""PyTorch's OpInfo sweep (test_dtensor_ops.py) and the kit's ops capability, side by side.

    python bench/ops_baseline.py UPSTREAM_TEST_FILE [--out FOLDER] [--ops NAMES] [--workers N]
                                 [--variant CLASS ...]

Runs the kit's ``ops`` capability at world size 4 (its workers, each simulating the
4 ranks under LocalTensor; ``--workers``: how many, default one per core), then each
variant of PyTorch's sweep in the file as it is (PyTorch's harness, world size 4),
one after the other on the same machine, each under bench/suite.py's runner (wall,
floor, peak memory). The variants are found by what the file defines, read with
``ast`` (never imported): every class with a ``test_dtensor_op_db`` method that the
file passes to ``instantiate_device_type_tests``. That is ``TestDTensorOps`` in
older files (its threads base), ``TestMultiThreadedDTensorOps`` (threads) and
``TestLocalDTensorOps`` (LocalTensor) in current ones; ``--variant`` picks some.
Then, per op, each variant's verdict next to the kit's:

- PyTorch passes the op: the kit must pass it;
- PyTorch fails it as its xfail list expects: the kit must not pass it (a known
  failure, "not supported by DTensor", no tensor input to distribute, or skipped
  with a reason);
- an op on PyTorch's xfail list that now passes ("Unexpected success") counts as
  passing on PyTorch's side;
- PyTorch skips it: not compared (the kit's verdict is listed).

A side that collected or ran nothing, or that has no test for an op it was asked
for, stops the bench with one line and exit 2: a comparison with an empty side is
no agreement. Coverage on both sides is ops passing / ops in the database.
``--kit-junit FILE`` takes the kit's side from a run already made (a
certification's junit.xml). The upstream file is never copied into this
repository: you give its path.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402 (bench/suite.py: the runner, its floor and its JUnit reading)

ROOT = Path(__file__).resolve().parents[1]
KIT_FILE = "harness/conformance/test_ops.py"
UPSTREAM_PREFIX = "test_dtensor_op_db_"
UPSTREAM_SUFFIX = "_cpu_float32"


#: The method of PyTorch's op sweep; each variant class defines it.
SWEEP_METHOD = "test_dtensor_op_db"
#: The device class suffix ``instantiate_device_type_tests`` gives on CPU.
DEVICE_SUFFIX = "CPU"


class Refused(Exception):
    """The comparison cannot be made: one line for the user, exit 2."""


def sweep_classes(file: Path) -> list[str]:
    """PyTorch's sweep variants in ``file``, in the file's order, read with ``ast``.

    A variant is a class that defines ``test_dtensor_op_db`` and that the file passes
    to ``instantiate_device_type_tests`` (a base that only holds the shared code is
    not instantiated, so it is not one).
    """
    import ast

    try:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise Refused(f"cannot read {file} as Python: {exc}") from None
    defining = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == SWEEP_METHOD
            for item in node.body
        )
    ]
    instantiated = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None))
            == "instantiate_device_type_tests"
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            instantiated.add(node.args[0].id)
    return [name for name in defining if name in instantiated]


def test_name(formatted: str) -> str:
    """The instantiated test of one op: ``test_dtensor_op_db_<op>_cpu_float32``."""
    return f"{UPSTREAM_PREFIX}{formatted}{UPSTREAM_SUFFIX}"


def upstream_selection(
    file: Path, variant: str, keys: list[str], formatted: dict[str, str], float32: set[str]
) -> tuple[str, list[str]]:
    """(target, pytest options) that run one variant's sweep for these ops (all: none given).

    PyTorch's sweep has a test only for ops with a float32 kernel (``float32``: their
    keys). Ops are picked with ``-k`` rather than node ids, so an op the file does not
    have is found missing after the run instead of failing the whole collection.
    """
    target = f"{file.name}::{variant}{DEVICE_SUFFIX}"
    if not keys:
        return target, ["-k", UPSTREAM_PREFIX]
    names = [test_name(formatted[k]) for k in keys if k in float32]
    return target, ["-k", " or ".join(names)]


def upstream_verdicts(
    run: suite.Run, by_formatted: dict[str, str], asked: set[str] | None = None
) -> dict[str, str]:
    """{op key: pass | xfail | fail | skip} from PyTorch's run; unexpected successes pass.

    ``asked``: the ops asked for (None: all). pytest's ``-k`` ignores case, so asking
    for ``T`` runs ``t`` too; an op nobody asked for is left out, not compared.
    """
    out = {}
    for test, outcome in run.outcomes.items():
        name = test.rpartition("::")[2]
        if not (name.startswith(UPSTREAM_PREFIX) and name.endswith(UPSTREAM_SUFFIX)):
            continue
        key = by_formatted.get(name[len(UPSTREAM_PREFIX) : -len(UPSTREAM_SUFFIX)])
        if key is None or (asked is not None and key not in asked):
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


def empty_side(side: str, run: suite.Run, wanted: set[str], got: dict[str, str]) -> str | None:
    """Why one side's run cannot be compared (one line), or None.

    ``wanted``: the ops asked of it; ``got``: its verdict per op.
    """
    counts = run.counts()
    if not sum(counts.values()):
        why = run.note or f"pytest exit {run.exit_code}"
        tail = run.messages.get("<file>", "").strip().splitlines()
        return f"{side} collected or ran no test ({why}{': ' + tail[-1] if tail else ''})"
    if not got:
        return f"{side} ran {sum(counts.values())} tests but none of the op sweep's"
    missing = sorted(wanted - set(got))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"{side} has no test for op {missing[0]!r}{more} that it was asked for"
    return None


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
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="CLASS",
        help="only this sweep class of the file (repeatable; default: every one it has)",
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
    try:
        return _main(args)
    except Refused as exc:
        print(f"ops_baseline.py: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    args.out = args.out.resolve()  # each side runs in its own folder
    if not args.file.is_file():
        raise Refused(f"{args.file} is not a file")
    found = sweep_classes(args.file)
    if not found:
        raise Refused(
            f"{args.file} defines no op sweep: no class with a {SWEEP_METHOD} method "
            "passed to instantiate_device_type_tests"
        )
    variants = args.variant or found
    unknown = [v for v in variants if v not in found]
    if unknown:
        raise Refused(f"--variant {unknown[0]}: the file's sweep classes are {', '.join(found)}")

    from harness import compat
    from harness.conformance import _ops

    database = compat.op_database()
    by_formatted = {op.formatted_name: _ops.op_key(op) for op in database}
    formatted = {v: k for k, v in by_formatted.items()}
    by_method = {_ops.method_name(_ops.op_key(op)): _ops.op_key(op) for op in database}
    import torch

    float32 = {_ops.op_key(op) for op in database if torch.float32 in op.supported_dtypes("cpu")}
    if args.every < 0 or (args.every and args.ops):
        raise Refused("--every N takes N >= 1, without --ops")
    if args.every:
        args.ops = ",".join(_ops.op_key(op) for op in database[:: args.every])
    keys = [k.strip() for k in args.ops.split(",") if k.strip()]
    unknown = [k for k in keys if k not in formatted]
    if unknown:
        raise Refused(f"no OpInfo {unknown[0]!r}")

    args.out.mkdir(parents=True, exist_ok=True)
    kit_args = [
        f"--harness-world-size={args.world_size}",
        f"--harness-ops={args.ops or 'all'}",
        "--harness-device=cpu",
    ]
    if args.workers:
        os.environ["HARNESS_OPS_WORKERS"] = str(args.workers)
    sides = [("harness", ROOT, KIT_FILE, kit_args)]
    for variant in variants:
        target, options = upstream_selection(args.file, variant, keys, formatted, float32)
        sides.append((f"upstream-{variant}", args.file.parent, target, options))
    runs: dict[str, suite.Run] = {}
    verdicts: dict[str, dict[str, str]] = {}
    for side, root, target, extra in sides:
        saved = args.out / f"{side}.run.json"
        if side == "harness" and args.kit_junit:
            outcomes, messages, times = suite.parse_junit(args.kit_junit)
            run = suite.Run(
                side, str(args.kit_junit), [], outcomes=outcomes, messages=messages, times=times
            )
        elif args.reuse:
            run = suite.Run(**json.loads(saved.read_text()))
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {side} ...", flush=True)
            run = suite.run_pytest(
                side, root, target, args.out / f"{side}.xml", args.timeout, extra
            )
            saved.write_text(json.dumps(suite.asdict(run), indent=1) + "\n")
            print(
                f"    {run.wall_s:8.1f} s  floor {run.floor_s:8.1f} s  "
                f"PSS {run.tree_pss_mb:6.0f} MB  RSS {run.tree_rss_mb:6.0f} MB  "
                f"exit {run.exit_code}  {run.counts()} {run.note}",
                flush=True,
            )
        runs[side] = run
        if side == "harness":
            verdicts[side] = kit_verdicts(run, by_method)
            wanted = set(keys)
        else:
            wanted = set(keys) & float32
            verdicts[side] = upstream_verdicts(run, by_formatted, wanted if keys else None)
        why = empty_side(_label(side), run, wanted, verdicts[side])
        if why:  # stop here: the other sides' time is wasted on a comparison that cannot be
            log = args.kit_junit if side == "harness" and args.kit_junit else None
            raise Refused(f"{why}; see {log or args.out / (side + '.log')}")
    kit = verdicts["harness"]
    total = len(keys) if keys else len(database)
    upstream = {v: verdicts[f"upstream-{v}"] for v in variants}
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": suite.host_info(),
        "world_size": args.world_size,
        "kit_workers": args.workers or len(os.sched_getaffinity(0)),
        "ops_in_database": len(database),
        "ops_run": total,
        "variants": variants,
        "runs": {s: suite.asdict(r) for s, r in runs.items()},
        "upstream": upstream,
        "harness": kit,
        "coverage": {
            **{v: sum(x == "pass" for x in up.values()) for v, up in upstream.items()},
            "harness": sum(v == "passed" for v in kit.values()),
        },
        "differences": {v: compare(up, kit) for v, up in upstream.items()},
    }
    (args.out / "ops.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "ops.md").write_text(markdown(report))
    print((args.out / "ops.md").read_text())
    return 1 if any(report["differences"].values()) else 0


def _label(side: str) -> str:
    return "the kit" if side == "harness" else f"PyTorch's {side.removeprefix('upstream-')}"


def _counts(verdicts: dict[str, str]) -> str:
    names = sorted(set(verdicts.values()))
    return ", ".join(f"{sum(v == n for v in verdicts.values())} {n}" for n in names)


def markdown(report: dict) -> str:
    variants = report["variants"]
    ours = report["runs"]["harness"]
    ups = [report["runs"][f"upstream-{v}"] for v in variants]
    total = report["ops_run"]
    cov = report["coverage"]

    def row(title: str, cells: list[str]) -> str:
        return f"| {title} | " + " | ".join(cells) + " |"

    def ratios(metric: str) -> list[str]:
        return [str(suite.ratio(ours.get(metric, 0), up.get(metric, 0))) for up in ups]

    head = [f"PyTorch's {v}" for v in variants] + ["the kit"]
    head += [f"kit / {v}" for v in variants]
    blank = [""] * len(variants)
    lines = [
        "# OpInfo sweep: PyTorch's test_dtensor_ops.py vs the kit's ops capability",
        "",
        f"`{report['command']}` at {report['date']}; host: "
        + ", ".join(f"{k} {v}" for k, v in report["host"].items()),
        "",
        f"World size {report['world_size']}; the kit with {report['kit_workers']} ops workers; "
        f"{total} of {report['ops_in_database']} OpInfos; PyTorch's variants run one after "
        "the other, then compared op by op with the kit.",
        "",
        row("", head),
        "|---" * (len(head) + 1) + "|",
        row("wall s", [f"{r['wall_s']:.1f}" for r in [*ups, ours]] + ratios("wall_s")),
        row(
            "floor s (CPU s / cores)",
            [f"{r['floor_s']:.1f}" for r in [*ups, ours]] + ratios("floor_s"),
        ),
        row("wall / floor", [suite._wall_over_floor(r) for r in [*ups, ours]] + blank),
        row(
            "peak MB (tree PSS: shared pages once)",
            [f"{r.get('tree_pss_mb', 0):.0f}" for r in [*ups, ours]] + ratios("tree_pss_mb"),
        ),
        row(
            "peak MB (tree RSS: shared pages per process)",
            [f"{r['tree_rss_mb']:.0f}" for r in [*ups, ours]] + ratios("tree_rss_mb"),
        ),
        row(
            "ops passing",
            [f"{cov[k]} ({cov[k] / total:.1%})" for k in [*variants, "harness"]] + blank,
        ),
        row(
            "verdicts",
            [_counts(report["upstream"][v]) for v in variants]
            + [_counts(report["harness"])]
            + blank,
        ),
        "",
    ]
    for v in variants:
        differences = report["differences"][v]
        lines.append(f"Ops PyTorch's {v} checks on which the verdicts differ: {len(differences)}.")
        if differences:
            lines += ["", f"| op | {v} | kit |", "|---|---|---|"]
            lines += [f"| `{d['op']}` | {d['upstream']} | {d['harness']} |" for d in differences]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    # `timeout` or a kill sends TERM: leave through suite.run_pytest's cleanup, which
    # takes the running side's whole process group along (rank threads, workers).
    signal.signal(signal.SIGTERM, suite._terminate)
    raise SystemExit(main())
