"""The smallest sample that shows each of DTensor's own failures at some world sizes only.

    python bench/own_findings.py [RECORD] [--sizes 2,4]

For every op the record lists as DTensor's own at one of ``--sizes`` but not at
another, runs each of its OpInfo samples alone (the sweep's seed, layouts and
checks: :func:`harness.conformance._ops.check_opinfo`) at every size, on CPU under
LocalTensor, smallest input first, and prints a Markdown table: the op, the
smallest failing sample (its input shape and other arguments), the first failing
layout and error, and the verdict at each size. docs/certification.md quotes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _describe(sample) -> str:
    import torch

    def one(value):
        if isinstance(value, torch.Tensor):
            return f"tensor{tuple(value.shape)}"
        if isinstance(value, (list, tuple)):
            return "(" + ", ".join(one(v) for v in value) + ")"
        return repr(value)

    parts = [one(sample.input), *(one(a) for a in sample.args)]
    parts += [f"{k}={one(v)}" for k, v in sample.kwargs.items()]
    return ", ".join(parts)


def _numel(sample) -> int:
    import torch

    return sample.input.numel() if isinstance(sample.input, torch.Tensor) else 0


def check_sample(op, index: int, sample, world_size: int) -> str:
    """'' when the sample passes at ``world_size``, else the failure's first line."""
    import unittest
    from unittest import mock

    from harness.conformance import _ops, _ops_workers
    from harness.local.simulate import simulate

    case = _ops_workers._Checker()
    with mock.patch.object(_ops, "_samples", lambda *a, **k: [sample]):
        try:
            with simulate(world_size, "cpu") as sim:
                _ops.check_opinfo(case, sim.build_mesh(), op, "cpu", sim.mode.disable)
        except unittest.SkipTest as exc:
            return f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 (every error is the finding)
            import re

            full = str(exc).strip()
            layout = re.search(r"input placements (\[[^\]]*\])", full)
            first = full.splitlines()[0] if full else type(exc).__name__
            first = re.sub(
                r"^.*? sample \d+ with input placements \[[^\]]*\]( raised)? ?", "", first
            )
            return (f"{layout.group(1)}: " if layout else "") + first[:140]
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "record", nargs="?", default=str(ROOT / "harness/conformance/xfails/torch-2.13.toml")
    )
    parser.add_argument("--sizes", default="2,4")
    args = parser.parse_args(argv)
    import torch

    from harness import compat
    from harness.conformance import _ops
    from harness.report import reference

    record = reference.load(args.record)
    sizes = [int(s) for s in args.sizes.split(",")]
    owns = {n: set(record.at(n).own) if record.at(n) else set() for n in sizes}
    differ = sorted(set().union(*owns.values()) - set.intersection(*owns.values()))
    ops = {_ops.op_key(op): op for op in compat.op_database()}
    print(
        "| op | DTensor's own at | smallest failing sample | at "
        + " | at ".join(map(str, sizes))
        + " |"
    )
    print("|---|---|---|" + "---|" * len(sizes))
    for key in differ:
        op = ops[key]
        samples = list(
            compat.op_samples(
                op, "cpu", torch.float32, requires_grad=True, seed=_ops.sample_seed(key)
            )
        )
        order = sorted(range(len(samples)), key=lambda i: (_numel(samples[i]), i))
        where = [n for n in sizes if key in owns[n]]
        found = None
        for i in order:
            errors = {n: check_sample(op, i, samples[i], n) for n in sizes}
            if errors[where[0]] and not errors[where[0]].startswith("skipped"):
                found = (i, errors)
                break
        if found is None:
            print(
                f"| `{key}` | {', '.join(map(str, where))} | no single sample fails alone | "
                + " | " * len(sizes)
            )
            continue
        i, errors = found
        cells = [("passes" if not e else e.replace("|", "\\|")) for e in (errors[n] for n in sizes)]
        print(
            f"| `{key}` | {', '.join(map(str, where))} | sample {i}: `{_describe(samples[i])}` | "
            + " | ".join(cells)
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
