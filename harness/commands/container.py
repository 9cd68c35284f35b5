"""``harness container build|run CELL``: a cell's image, and the cell run inside it.

The command lines come from harness.containers (pure functions of the cell);
this module adds the checks that need the engine or the host, in the order a
person fixes them: engine, devices, image. Each refusal is one line, exit 2,
before anything is created.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

from harness import containers, lifelines, pipeline
from harness.commands import add_command
from harness.errors import UsageError
from harness.matrix import load_matrix


def add_parser(sub, parents) -> None:
    parser = sub.add_parser(
        "container", help="build a cell's image, or run the cell in it (docker or podman)"
    )
    verbs = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    context = {
        "metavar": "DIR",
        "help": "dtensor-harness source tree to build from "
        "(default: the matrix's folder, else this installed kit's)",
    }

    build = add_command(verbs, "build", build_image, parents, help="build the image a cell runs in")
    build.add_argument("cell", help="cell name; every cell of an accelerator shares its image")
    build.add_argument("--context", **context)
    build.add_argument("--dry-run", action="store_true", help="print the command, run nothing")

    add_command(
        verbs,
        "check",
        check_images,
        parents,
        help="list every base image reference, whether it is pinned, what is not verified here",
    )

    run = add_command(
        verbs,
        "run",
        run_cell,
        parents,
        help="run `harness run CELL` in the cell's image",
        epilog="Arguments after `--` go to pytest inside the container.",
    )
    run.add_argument("cell", help="cell name, with or without its test- prefix")
    run.add_argument(
        "--results", metavar="DIR", help="host folder for reports (default: the cell's)"
    )
    run.add_argument(
        "--devices", metavar="LIST", help="device indices to expose, e.g. 2,3 (default: 0..N-1)"
    )
    run.add_argument(
        "--build-missing", action="store_true", help="build the image first when it is missing"
    )
    run.add_argument(
        "--verb",
        dest="inner",
        choices=sorted(containers.RESULTS_FLAG),
        default="run",
        help="harness subcommand to run inside (default: run)",
    )
    run.add_argument("--context", **context)
    run.add_argument("--dry-run", action="store_true", help="print the command, run nothing")


def check_images(args) -> int:
    """One line per base image: pinned by tag and digest, by tag only, or not at all.

    Registries are never contacted (CI and air-gapped hosts have no route to them):
    a reference is checked against the local engine's images when one answers, and
    the line says what that leaves unverified. Exit 1 when a reference is unpinned.
    """
    matrix = load_matrix(args.matrix)
    engine = containers.detect_engine()
    unpinned = 0
    for entry in containers.image_references(matrix):
        state, why = containers.pin_state(entry["ref"])
        unpinned += state == containers.UNPINNED
        if engine is None:
            here = "not verified here: no container engine answered"
        elif containers.image_present(engine, entry["ref"]):
            digest = containers.repo_digest(engine, entry["ref"])
            here = f"present in {engine} here" + (f" as {digest}" if digest else "")
        else:
            here = f"not verified here: not in {engine}, and no registry is contacted"
        cells = f"{len(entry['cells'])} cells" if entry["cells"] else "bare docker build"
        print(f"{state:<10}  {entry['ref']}")
        print(f"            {entry['where']}; {cells}; {here}" + (f"; {why}" if why else ""))
    if unpinned:
        print(f"harness: {unpinned} base image reference(s) unpinned", file=sys.stderr)
    return 1 if unpinned else 0


def build_image(args) -> int:
    matrix = load_matrix(args.matrix)
    cell = matrix.cell(args.cell)
    root = containers.build_root(cell, args.context)
    _say(f"{cell.name} from matrix {matrix.path.resolve()}; build context {root}")
    if args.dry_run:
        print(shlex.join(containers.build_argv(cell, root)))
        return 0
    return _build(containers.require_engine(), cell, root)


def _build(engine: str, cell, root: Path) -> int:
    containers.ensure_base_image(engine, cell)
    if not containers.wheelhouse_size(root):
        _say(
            "docker/wheelhouse is empty, so pip inside the build uses the index; "
            "without one, run docker/make-wheelhouse.sh first"
        )
    argv = containers.build_argv(cell, root, engine)
    before = containers.image_id(engine, cell.image)
    _say(f"building {cell.image}\n$ {shlex.join(argv)}")
    code = _call(argv, engine, None)
    if code:
        _say(f"building {cell.image} failed (exit {code}); no image was tagged")
    elif before and before != containers.image_id(engine, cell.image):
        # the image this replaced would stay behind untagged; drop it unless in use
        subprocess.run([engine, "rmi", before], capture_output=True, check=False)
    return code


def run_cell(args) -> int:
    matrix = load_matrix(args.matrix)
    cell = matrix.cell(args.cell)
    results = pipeline.results_folder(cell, args.results)
    devices = args.devices.split(",") if args.devices else None
    user = containers.caller_user()
    common = {
        "matrix_file": matrix.path,
        "results": results,
        "verb": args.inner,
        "extra": args.passthrough,
        "devices": devices,
        "user": user,
        "ulimits": containers.caller_limits(),
    }
    _say(f"{cell.name} from matrix {matrix.path.resolve()}")
    if args.dry_run:
        print(shlex.join(containers.run_argv(cell, **common)))
        return 0

    engine = containers.require_engine(
        f"run the cell without a container: `harness {args.inner} {cell.name}`"
    )
    containers.check_host_devices(cell, containers.device_ids(cell, devices))
    as_root = user is None and hasattr(os, "getuid") and os.getuid() == 0
    if as_root:
        containers.check_readable_by_image_user(matrix.path)
    if not containers.image_present(engine, cell.image):
        if not args.build_missing:
            raise UsageError(
                f"image {cell.image} is not built here; build it: "
                f"`harness container build {cell.name}` (or `nox -s build-{cell.accelerator}`)."
            )
        _say(f"image {cell.image} is missing; building it first")
        code = _build(engine, cell, containers.build_root(cell, args.context))
        if code:
            return code

    name = f"harness-{cell.name}-{os.getpid()}"
    argv = containers.run_argv(cell, engine=engine, name=name, **common)
    results.mkdir(parents=True, exist_ok=True)
    if as_root:  # the image's user writes the reports; they are handed back after
        containers.chown_tree(results, containers.IMAGE_UID, containers.IMAGE_UID)
    _say(f"{cell.name} in {cell.image} ({engine}); reports -> {results}\n$ {shlex.join(argv)}")
    try:
        return _call(argv, engine, name)
    finally:
        if as_root:
            containers.chown_tree(results, 0, 0)


def _call(argv: list[str], engine: str, name: str | None) -> int:
    """Run argv; its container (``name``) goes however this ends.

    Ctrl-C gives the cell a moment to stop first. The daemon, not this process,
    owns the container: it would keep running, ranks and all, to the end of its
    tests once its CLI or this process is gone (SIGKILL included). So a watcher
    (harness.lifelines) removes it when this process dies, or here at the end
    (a no-op after --rm; this pid, so the name, is still ours while it runs).
    """
    removal = lifelines.Lifeline([engine, "rm", "-f", name]) if name else None
    child = subprocess.Popen(argv)
    try:
        return child.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            child.wait(timeout=10)  # the engine passed Ctrl-C in; let pytest wind down
        raise
    finally:
        if removal is not None:
            removal.pull()
        child.wait()


def _say(message: str) -> None:
    print(f"harness: {message}", file=sys.stderr, flush=True)
