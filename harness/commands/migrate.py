"""``harness migrate PATH...``: move test files from PyTorch's private helpers to harness."""

from __future__ import annotations

import sys

from harness.commands import add_command
from harness.errors import UsageError


def add_parser(sub, parents) -> None:
    del parents  # --matrix means nothing here
    parser = add_command(
        sub,
        "migrate",
        migrate,
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


def migrate(args) -> int:
    """Plan every file first; write only if all of them can be migrated."""
    from harness.migrate import (
        MigrateError,
        check_writable,
        find_test_files,
        migrate_file,
        write_migration,
    )

    try:
        files, skipped = find_test_files(args.paths)
    except FileNotFoundError as exc:
        raise UsageError(f"no such file or directory: {exc}") from None
    for path in skipped:
        print(f"{path}: skipped, not a regular file", file=sys.stderr)
    if not files:
        raise UsageError(f"no test files (test_*.py, *_test.py) under {' '.join(args.paths)}")
    plans, problems = [], []
    for path in files:
        try:
            migration = migrate_file(path)
            if migration.changed and not args.check:
                check_writable(path)
        except MigrateError as exc:
            problems.append(str(exc))
            continue
        plans.append(migration)
    if problems:
        for line in problems[:-1]:
            print(f"harness: error: {line}", file=sys.stderr)
        raise UsageError(
            f"{problems[-1]}; nothing written ({len(problems)} of {len(files)} file(s) "
            "cannot be migrated: fix them, or leave them out of PATH)"
        )
    due = [m for m in plans if m.changed]
    for migration in plans:
        for line in migration.kept_lines() + migration.added_lines():
            print(line, file=sys.stderr)
    if args.check:
        for migration in due:
            sys.stdout.write(migration.diff())
        print(f"{len(due)} of {len(files)} file(s) would change", file=sys.stderr)
        return 1 if due else 0
    for done, migration in enumerate(due):
        try:
            write_migration(migration)
        except OSError as exc:
            written = [m.path for m in due[:done]] or ["none"]
            left = [m.path for m in due[done:]]
            raise UsageError(
                f"cannot write {migration.path}: {exc.strerror or exc}; "
                f"written: {', '.join(written)}; not written: {', '.join(left)}"
            ) from None
        print(f"migrated {migration.path} ({len(migration.moved)} names now from harness)")
    print(f"{len(due)} of {len(files)} file(s) changed", file=sys.stderr)
    return 0
