"""Container engines, and image build/run command lines derived from a cell.

Everything an image or a container run needs comes from the cell (matrix.toml's
``accelerators.<name>.container`` table), so the command lines are pure
functions of the cell and pinned by tests; the checks that talk to the engine
or the host (is the daemon up, is the image there, are there enough devices)
live beside them and raise UsageError: one line, exit code 2.

Torch-free: nox calls this from outside the test environment.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from glob import glob
from pathlib import Path
from typing import Any

from harness import hosts
from harness._version import __version__
from harness.errors import UsageError
from harness.matrix import Cell

ENGINES = ("docker", "podman")
# No closing period and no way around the container: each caller adds the one
# its own command takes (nox appends its own period to a session's error).
NO_ENGINE_HELP = (
    "no container engine answered: install docker or podman and start it "
    "(e.g. `apt-get install -y docker.io && dockerd &`), or set HARNESS_CONTAINER_ENGINE"
)

#: A field each engine's `info` has only when its daemon/runtime answers.
INFO_FORMAT = {"docker": "{{.ServerVersion}}", "podman": "{{.Version.Version}}"}
#: Where things live inside every image (docker/install-harness.sh makes them).
PROJECT_DIR = "/harness/project"  # the matrix's folder, mounted read-only
RESULTS_DIR = "/harness/results"  # <cell>/ below it is the host's results folder
IMAGE_UID = 1000  # the images' non-root user
DEFAULT_SHM = "--shm-size=2g"  # when run_flags set neither --shm-size nor --ipc
#: The flag that sends a verb's reports to a folder, per harness subcommand (certify
#: takes --results too now, but an image built by 0.1.0 knows only --out).
RESULTS_FLAG = {"run": "--results", "certify": "--out"}
#: The base image docker/make-base-image.sh can make without a registry.
LOCAL_BASE = "debian:bookworm-slim"
KIT_ROOT = Path(__file__).resolve().parent.parent


# --- engines ------------------------------------------------------------------


@cache
def detect_engine() -> str | None:
    """The first engine whose daemon answers; HARNESS_CONTAINER_ENGINE picks one."""
    chosen = os.environ.get("HARNESS_CONTAINER_ENGINE")
    for engine in (chosen,) if chosen else ENGINES:
        if shutil.which(engine) and _answers(engine):
            return engine
    return None


def _answers(engine: str) -> bool:
    return _probe(engine) is None


def _probe(engine: str) -> str | None:
    """None when the engine's daemon answers, else the reason it does not."""
    try:
        result = subprocess.run(
            [engine, "info", "--format", INFO_FORMAT.get(engine, "{{.ServerVersion}}")],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "`info` took over 10 s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"`{engine} info` exited {result.returncode}"


def engine_for_display() -> str:
    """The engine a command line names when nothing must run (dry runs)."""
    return os.environ.get("HARNESS_CONTAINER_ENGINE") or detect_engine() or "docker"


def require_engine(instead: str = "") -> str:
    """The engine to use, or one UsageError that says which step is missing.

    ``instead`` is the caller's way to do without a container, if it has one.
    """
    tail = f"; or {instead}." if instead else "."
    chosen = os.environ.get("HARNESS_CONTAINER_ENGINE")
    if chosen and chosen not in ENGINES:
        raise UsageError(
            f"HARNESS_CONTAINER_ENGINE={chosen!r} is not a known engine; "
            f"set it to {' or '.join(ENGINES)}, or unset it."
        )
    candidates = (chosen,) if chosen else ENGINES
    installed = [e for e in candidates if shutil.which(e)]
    if not installed:
        where = f"HARNESS_CONTAINER_ENGINE={chosen}, but {chosen}" if chosen else "docker/podman"
        raise UsageError(f"{where} is not installed. {NO_ENGINE_HELP}{tail}")
    reasons = {}
    for engine in installed:
        reason = _probe(engine)
        if reason is None:
            return engine
        reasons[engine] = reason
    engine, reason = next(iter(reasons.items()))
    start = (
        "`sudo systemctl start docker` (or `sudo dockerd &`)"
        if engine == "docker"
        else ("`systemctl --user start podman.socket`, or check `podman info`")
    )
    raise UsageError(
        f"{engine} is installed but does not answer ({reason}); start it: {start}{tail}"
    )


def image_present(engine: str, image: str) -> bool:
    return image_id(engine, image) is not None


def _inspect(engine: str, image: str, fmt: str) -> str | None:
    """``ENGINE image inspect --format FMT IMAGE``'s output, or None where there is no such image."""
    result = subprocess.run(
        [engine, "image", "inspect", "--format", fmt, image],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout if result.returncode == 0 else None


def image_id(engine: str, image: str) -> str | None:
    found = _inspect(engine, image, "{{.Id}}")
    return (found.strip() or image) if found is not None else None


# --- build ----------------------------------------------------------------------


def build_root(cell: Cell, root: str | Path | None = None) -> Path:
    """The build context: ``root``, else the matrix's folder, else the kit's source tree,
    else one made from the installed kit (a pip install: its Dockerfiles are package data).
    """
    from harness import kitfiles

    dockerfile = cell.container.get("dockerfile")
    if not dockerfile:
        raise UsageError(
            f"cell {cell.name}: accelerators.{cell.accelerator}.container.dockerfile is not "
            f"set; add the table to the matrix (see the kit's matrix.toml)."
        )
    candidates = [Path(root)] if root is not None else [Path(cell.root), KIT_ROOT]
    for candidate in candidates:
        if (candidate / dockerfile).is_file() and (candidate / "harness").is_dir():
            return candidate.resolve()
    shipped = Path(dockerfile)
    if root is None and shipped.parent == Path("docker"):
        if (kitfiles.docker_dir() / shipped.name).is_file():
            return kitfiles.build_context(_cache_dir() / f"context-{__version__}")
    raise UsageError(
        f"cell {cell.name}: {dockerfile} not found under {', '.join(map(str, candidates))}; "
        f"pass the folder that holds it and the kit's source (--context DIR)."
    )


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dtensor-harness"


def build_argv(cell: Cell, root: str | Path = ".", engine: str | None = None) -> list[str]:
    """The exact command that builds ``cell.image`` (context: the kit's source tree)."""
    engine = engine or engine_for_display()
    spec = cell.container
    root = Path(root).resolve()
    args = {
        "BASE_IMAGE": spec.get("base_image", LOCAL_BASE),
        "ACCELERATOR": cell.accelerator,
        "TORCH": cell.torch,
        "PIP_ARGS": shlex.join(cell.pip_args),
        "VENDOR_TORCH": "1" if spec.get("vendor_torch") else "0",
        "HARNESS_VERSION": __version__,
        **spec.get("build_args", {}),
    }
    argv = [engine, "build", "--force-rm", "-f", str(root / spec["dockerfile"]), "-t", cell.image]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    return [*argv, str(root)]


def wheelhouse_size(root: Path) -> int:
    return len(glob(str(root / "docker" / "wheelhouse" / "*.whl")))


def ensure_base_image(engine: str, cell: Cell) -> None:
    """Have the base image locally, pulling it once; refuse with the local recipe."""
    base = cell.container.get("base_image", LOCAL_BASE)
    if image_present(engine, base):
        return
    print(f"harness: pulling base image {base}", file=sys.stderr, flush=True)
    pulled = subprocess.run([engine, "pull", base], capture_output=True, text=True, check=False)
    if pulled.returncode == 0:
        return
    why = (pulled.stderr.strip().splitlines() or ["pull failed"])[-1]
    if base == LOCAL_BASE:
        from harness import kitfiles  # the script in a checkout, else the installed kit's

        script = "docker/make-base-image.sh"
        if kitfiles.source_tree() is None:
            script = str(kitfiles.docker_dir() / "make-base-image.sh")
        fix = f"make it locally: sudo sh {script} {engine}"
    else:
        fix = (
            f"pull it where a registry answers and copy it here: "
            f"`{engine} save {base} | {engine} load`"
        )
    raise UsageError(f"base image {base} is not here and cannot be pulled ({why}); {fix}.")


# --- run ------------------------------------------------------------------------


def device_ids(cell: Cell, devices: Sequence[str] | None = None) -> list[str]:
    """The device indices the container sees: the first ``devices_needed`` unless chosen."""
    needed = cell.devices_needed
    if devices is None:
        return [str(i) for i in range(needed)]
    devices = [d.strip() for d in devices if d.strip()]
    if len(devices) < needed:
        raise UsageError(
            f"cell {cell.name} needs {needed} device(s); --devices names {len(devices)} "
            f"({','.join(devices) or 'none'})."
        )
    return devices


def _fill(template: str, ids: Sequence[str]) -> str:
    return template.replace("{devices}", ",".join(ids))


def run_argv(
    cell: Cell,
    *,
    matrix_file: str | Path,
    results: str | Path,
    verb: str = "run",
    extra: Sequence[str] = (),
    engine: str | None = None,
    devices: Sequence[str] | None = None,
    user: str | None = None,
    ulimits: Mapping[str, tuple[int, int]] | None = None,
    name: str | None = None,
) -> list[str]:
    """The exact command that runs ``harness <verb> CELL`` in the cell's image.

    ``matrix_file``'s folder is mounted read-only (relative suites resolve there),
    ``results`` read-write at RESULTS_DIR/<cell>. ``user`` ("uid:gid") makes the
    reports come out owned by the caller; ``ulimits`` (the caller's, see
    caller_limits) keep podman within what the host allows.
    """
    engine = engine or engine_for_display()
    spec = cell.container
    matrix_file = Path(matrix_file).resolve()
    results = Path(results).resolve()
    inner_results = f"{RESULTS_DIR}/{cell.name}"
    ids = device_ids(cell, devices)
    run_flags = list(spec.get("run_flags", []))
    argv = [engine, "run", "--rm"]
    if engine == "docker":  # tini reaps orphans and passes Ctrl-C to every process of
        # the cell, ranks included, not only to its first (podman's init needs catatonit)
        argv += ["--init", "-e", "TINI_KILL_PROCESS_GROUP=1"]
    if name:
        argv += ["--name", name]
    if engine == "podman":
        for kind, (soft, hard) in (ulimits or {}).items():
            argv += ["--ulimit", f"{kind}={soft}:{hard}"]
        if user:  # rootless podman: map the caller's uid through, or mounts are root's
            argv += ["--userns=keep-id"]
    if user:
        argv += ["--user", user]
    if not any(f.startswith(("--shm-size", "--ipc")) for f in run_flags):
        argv.append(DEFAULT_SHM)
    argv += run_flags
    if ids:
        for flag in spec.get("device_flags", []):  # "{device}": one flag per device
            argv += (
                [flag.replace("{device}", i) for i in ids]
                if "{device}" in flag
                else [_fill(flag, ids)]
            )
    env: dict[str, str] = dict(cell.harness_env())
    if ids:
        env.update({k: _fill(v, ids) for k, v in spec.get("device_env", {}).items()})
    env["HARNESS_IMAGE"] = cell.image
    if user:
        env["HOME"] = "/tmp"  # the caller's uid has no home in the image
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    argv += [
        "-v",
        f"{matrix_file.parent}:{PROJECT_DIR}:ro",
        "-v",
        f"{results}:{inner_results}",
        "-w",  # as natively, where one runs from the matrix's folder: same test ids
        PROJECT_DIR,
        cell.image,
        verb,
        cell.name,
        "--matrix",
        f"{PROJECT_DIR}/{matrix_file.name}",
        RESULTS_FLAG.get(verb, "--results"),
        inner_results,
    ]
    if extra:
        argv += ["--", *extra]
    return argv


def session_argv(cell: Cell, command: Sequence[str], posargs: Sequence[str]) -> list[str]:
    """What a nox session runs: ``harness container run`` (building a missing image first).

    ``command`` is the native command (``["run", CELL, "--matrix", PATH]``, or
    ``certify``); its verb and matrix carry over, so the container runs the same
    thing. ``["build", CELL, "--matrix", PATH]`` gives ``harness container build``,
    whose checks (engine, base image) a bare ``build_argv`` skips.
    """
    verb, _, *rest = command
    argv = [sys.executable, "-m", "harness", "container"]
    if verb == "build":
        return [*argv, "build", cell.name, *rest, *posargs]
    argv += ["run", cell.name, *rest, "--build-missing"]
    if verb != "run":
        argv += ["--verb", verb]
    if posargs:
        argv += ["--", *posargs]
    return argv


# --- the host -----------------------------------------------------------------


def host_device_count(accelerator: str) -> int:
    """Devices of ``accelerator`` this host shows, from the table's probes (no torch here)."""
    return hosts.device_count(accelerator, use_torch=False)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def check_host_devices(cell: Cell, devices: Sequence[str] | None = None) -> None:
    """Refuse a cell that needs more devices than this host shows, before anything starts.

    The container's torch is not the host's, so only the torch-free probes answer.
    """
    hosts.check_cell(cell, devices=devices, use_torch=False)


def caller_user() -> str | None:
    """``uid:gid`` to run as so reports come out owned by the caller; None for root."""
    if not hasattr(os, "getuid") or os.getuid() == 0:
        return None  # root: the image's own user, and the results are chowned back after
    return f"{os.getuid()}:{os.getgid()}"


def check_readable_by_image_user(matrix_file: Path) -> None:
    """Run as root, the image's own user reads the mounted project: it must be allowed to."""
    matrix_file = Path(matrix_file).resolve()
    for path, need in ((matrix_file.parent, 0o005), (matrix_file, 0o004)):
        if path.stat().st_mode & need != need:
            raise UsageError(
                f"{path} is not readable by the image's user (uid {IMAGE_UID}), who runs the "
                f"cell when root calls: `chmod o+rX {path}`, or run as a non-root user."
            )


def caller_limits() -> dict[str, tuple[int, int]]:
    """The caller's open-files and processes limits, for podman to keep.

    Rootful podman otherwise sets its own (nofile 1048576, nproc 4194304), and
    runc fails to start the container where those exceed what the host allows
    (here: nofile above the hard limit; nproc above kernel.pid_max).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return {}
    infinite = resource.RLIM_INFINITY
    pid_max = int(_read("/proc/sys/kernel/pid_max") or 0) or None
    limits = {}
    for name, kind, ceiling in (
        ("nofile", resource.RLIMIT_NOFILE, None),
        ("nproc", resource.RLIMIT_NPROC, pid_max),
    ):
        soft, hard = resource.getrlimit(kind)
        if hard == infinite:
            if ceiling is None:
                continue  # nothing to stay under
            hard = ceiling
        hard = min(hard, ceiling or hard)
        soft = hard if soft == infinite else min(soft, hard)
        limits[name] = (soft, hard)
    return limits


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for folder, dirs, files in os.walk(path):
        os.chown(folder, uid, gid)
        for entry in [*dirs, *files]:
            os.chown(os.path.join(folder, entry), uid, gid, follow_symlinks=False)


# --- base image references: are they pinned, and what this host can say --------------------

#: How pinned a reference is, most to least.
DIGEST, TAG, UNPINNED = "tag+digest", "tag", "UNPINNED"


def pin_state(ref: str) -> tuple[str, str]:
    """(state, why) for an image reference: pinned by digest, by a tag, or not at all."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if tag == "latest":
        return UNPINNED, ":latest moves; pin a release tag and its @sha256 digest"
    if digest.startswith("sha256:") and len(digest) == 71:
        return (DIGEST, "") if tag else (DIGEST, "digest only; add the tag it was read from")
    if tag:
        return TAG, "no digest found for this tag; a tag can be re-pushed"
    return UNPINNED, "no tag means :latest; pin a release tag and its @sha256 digest"


def image_references(matrix: Any) -> list[dict[str, Any]]:
    """Every base image a matrix (and its Dockerfiles' defaults) names, with its cells."""
    refs: dict[str, dict[str, Any]] = {}
    for cell in matrix.cells:
        ref = cell.container.get("base_image")
        if not ref:
            continue
        where = (
            f"accelerators.{cell.accelerator}.torch ({cell.torch})"
            if cell.torch_name
            else f"accelerators.{cell.accelerator}.container.base_image"
        )
        entry = refs.setdefault(ref, {"ref": ref, "where": where, "cells": []})
        entry["cells"].append(cell.name)
        dockerfile = cell.container.get("dockerfile")
        if dockerfile:
            path = Path(cell.root) / dockerfile
            default = _dockerfile_default(path)
            if default and default not in refs:
                refs[default] = {
                    "ref": default,
                    "where": f"{dockerfile} (ARG BASE_IMAGE)",
                    "cells": [],
                }
    return list(refs.values())


def repo_digest(engine: str, ref: str) -> str | None:
    """The registry digest a local image was pulled as (what a pin would add), if known."""
    digests = (_inspect(engine, ref, "{{range .RepoDigests}}{{.}} {{end}}") or "").split()
    return digests[0] if digests else None


def _dockerfile_default(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    return match.group(1) if match else None
