"""``harness migrate PATH...``: move test files from PyTorch's private helpers to harness."""

from __future__ import annotations

import sys

from harness.errors import UsageError


def add_parser(sub, parents) -> None:
    del parents  # --matrix means nothing here
    parser = sub.add_parser(
        "migrate",
        help="rewrite imports of torch.testing._internal DTensor helpers to harness",
        description=(
            "Rewrite imports of PyTorch's private DTensor test helpers (common_dtensor, and "
            "the names of common_distributed the kit provides) to `harness`. Only import "
            "statements change; names the kit lacks stay imported from PyTorch and are listed."
        ),
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="files, or directories (test_*.py, *_test.py)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing: print the diff, exit 1 if a file would change",
    )
    parser.set_defaults(handler=migrate)


def migrate(args) -> int:
    from harness.migrate import MigrateError, iter_test_files, migrate_file, write_migration

    try:
        files = list(iter_test_files(args.paths))
    except FileNotFoundError as exc:
        raise UsageError(f"no such file or directory: {exc}") from None
    if not files:
        raise UsageError(f"no test files (test_*.py, *_test.py) under {' '.join(args.paths)}")
    due = 0
    for path in files:
        try:
            migration = migrate_file(path)
        except MigrateError as exc:
            raise UsageError(f"{exc}; fix the file, or leave it out of PATH") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        for line in migration.kept_lines():
            print(line, file=sys.stderr)
        if not migration.changed:
            continue
        due += 1
        if args.check:
            sys.stdout.write(migration.diff())
        else:
            write_migration(migration)
            print(f"migrated {path} ({len(migration.moved)} names now from harness)")
    verb = "would change" if args.check else "changed"
    print(f"{due} of {len(files)} file(s) {verb}", file=sys.stderr)
    return 1 if args.check and due else 0
