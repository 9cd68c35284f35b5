"""A live reference: some ops of the sweep on CPU under LocalTensor, no plugin loaded.

    python -m harness.conformance.reference_run --world-size N --ops a,b --out FILE.json

What a certification runs (:mod:`harness.references`) for the ops a cell failed that
no record knows: the same samples and layouts as the cell's sweep, in the ops
workers, with the device forced to cpu and ``HARNESS_PLUGINS`` removed by the
caller, so a vendor's kernel cannot reach the reference. Writes ``{op: [status,
first line]}``; exit 2 when the ops cannot run here (no LocalTensor, an unknown op).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.conformance.reference_run")
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--ops", required=True, help="comma-separated op keys")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    from harness import compat
    from harness.conformance import _ops, _ops_workers

    missing = compat.local_tensor_missing()
    if missing:
        print(f"harness: no live reference: {missing}", file=sys.stderr)
        return 2
    keys = [k for k in args.ops.split(",") if k]
    known = {_ops.op_key(op) for op in compat.op_database()}
    strangers = [k for k in keys if k not in known]
    if strangers:
        print(f"harness: no live reference: {strangers[0]!r} is no OpInfo", file=sys.stderr)
        return 2
    workers = _ops_workers.OpsWorkers(
        keys, world_size=args.world_size, device_type="cpu", timeout=args.timeout
    )
    try:
        results = {key: workers.result(key) for key in keys}
    finally:
        workers.close()
    from harness.report.reference import first_error

    found = {
        key: [r.status, first_error(r.text.splitlines()[0], r.text) if r.text else ""]
        for key, r in results.items()
    }
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(found, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
