"""``harness init [DIR]``: a matrix, a noxfile and a CI workflow for your repository."""

from __future__ import annotations

from pathlib import Path

from harness import ci, kitfiles, matrix_schema
from harness._version import __version__
from harness.errors import UsageError

NOXFILE = '''\
"""nox sessions from matrix.toml, made by dtensor-harness (harness.nox_sessions).

nox --list                  every session (test-CELL, certify-CELL, build-ACCELERATOR)
nox -s {default}     one cell (in its image when docker or podman answers)
nox -t sim                  every LocalTensor cell
"""

import sys

import nox

from harness.nox_sessions import define_sessions

# A bare `nox` runs one CPU cell, not every cell of every accelerator; `--json`
# still lists every session, for CI matrices.
if "--json" not in sys.argv:
    nox.options.sessions = ["{default}"]

# What each cell's virtualenv installs beside torch: the kit, and your own
# package if the matrix's suites need it (add "-e", ".").
define_sessions("matrix.toml", install=["dtensor-harness=={version}"])
'''


def add_parser(sub, parents) -> None:
    parser = sub.add_parser(
        "init",
        help="write matrix.toml (with its schema), noxfile.py and a CI workflow into a repository",
    )
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR", help="default: .")
    parser.add_argument(
        "--ci",
        choices=(*ci.SYSTEMS, "none"),
        default="github",
        help="the CI workflow to write (default: github)",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="NAMES",
        help="accelerators or cells the workflow runs (default: the cpu cells on the "
        "default torch; `harness ci` makes it again with more)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files already there")
    parser.set_defaults(handler=init, matrix=None)


def init(args) -> int:
    from harness.matrix import load_matrix

    root = Path(args.dir)
    starter = kitfiles.starter_matrix()
    matrix = load_matrix(starter)
    # a starting point that runs on hosted runners: cpu, on the default torch
    cpu = [c for c in matrix.cells if c.accelerator == "cpu" and not c.torch_name]
    native = [c for c in cpu if c.mode == "native"]
    default = f"test-{(native[len(native) // 2] if native else matrix.cells[0]).name}"
    only = args.only or ",".join(c.name for c in cpu)
    files = {
        # the starter's first line, `#:schema ./matrix.schema.json`, points editors here
        "matrix.toml": starter.read_text(encoding="utf-8"),
        matrix_schema.FILE_NAME: matrix_schema.schema_text(),
        "noxfile.py": NOXFILE.format(default=default, version=__version__),
    }
    if args.ci != "none":
        files[ci.DEFAULT_PATHS[args.ci]] = None  # made once matrix.toml is in place
    there = [name for name in files if (root / name).exists()]
    if there and not args.force:
        raise UsageError(
            f"{', '.join(str(root / n) for n in there)} already there; "
            f"pass --force to overwrite, or init another folder."
        )
    try:
        _write(root, files, args.ci, only)
    except OSError as exc:  # /proc/x, a read-only mount, a file where the folder goes
        raise UsageError(
            f"cannot write into {exc.filename or root}: {exc.strerror}; "
            f"pick a folder you can write to (harness init DIR)."
        ) from None
    print(
        f"harness: next: pip install nox dtensor-harness=={__version__}; "
        f"cd {root} && nox --list && nox -s {default}"
    )
    return 0


def _write(root: Path, files: dict[str, str | None], system: str, only: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:  # the workflow, from the matrix just written; its header's
            # command is the one to run in that folder
            text = ci.workflow_text(system, None, only, None, name, load=root / "matrix.toml")
        path.write_text(text, encoding="utf-8")
        print(f"harness: wrote {path}")
