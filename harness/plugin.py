"""The pytest plugin: the active cell's options, a header, and rerun hints.

Registered through the ``pytest11`` entry point, so it loads in every pytest run
of an environment that has the kit: it must stay cheap and import no torch.
Options override the HARNESS_* environment that ``harness run`` sets, for one
run; they are written back into os.environ so rank processes and containers
inherit them.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# option dest -> environment variable it overrides
_ENV_OPTIONS = {
    "harness_mode": "HARNESS_MODE",
    "harness_world_size": "HARNESS_WORLD_SIZE",
    "harness_device": "HARNESS_DEVICE",
    "harness_backend": "HARNESS_BACKEND",
    "harness_timeout": "HARNESS_TIMEOUT",
    "harness_ops": "HARNESS_OPS",
    "harness_mesh": "HARNESS_MESH",
    "harness_fake_ranks": "HARNESS_FAKE_RANKS",
    "harness_hw_class": "HARNESS_HW_CLASSES",
}


def _seconds(value: str) -> bool:
    try:
        return value == "" or math.isfinite(float(value))
    except ValueError:
        return False


def _whole_numbers(value: str) -> bool:
    """An empty value or comma-separated whole numbers (a mesh shape, chosen ranks)."""
    parts = value.replace(" ", "").split(",")
    return value.strip() == "" or all(part.isdigit() for part in parts)


# The cell's variables a run checks once, before any test: a bad value is one usage
# line (exit 4), not the same error in every test. variable -> (is it valid, what it must be)
_ENV_RULES = {
    "HARNESS_WORLD_SIZE": (
        lambda v: v.isdigit() and int(v) >= 1,
        "the world size must be a whole number >= 1",
    ),
    "HARNESS_TIMEOUT": (_seconds, "the timeout must be a number of seconds, e.g. 300"),
    "HARNESS_MESH": (_whole_numbers, "give comma-separated whole numbers, e.g. 8,16,64"),
    "HARNESS_FAKE_RANKS": (_whole_numbers, "give comma-separated whole numbers, e.g. 0,511,1023"),
    "HARNESS_SIDE_WORKERS": (str.isdigit, "give a whole number >= 0 (0: no side lane)"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "dtensor-harness")
    group.addoption(
        "--harness-cell",
        metavar="CELL",
        help="run as this matrix cell (sets device, backend, world size, mode)",
    )
    group.addoption(
        "--harness-matrix",
        metavar="FILE",
        help="matrix file for --harness-cell (default: ./matrix.toml)",
    )
    group.addoption(
        "--harness-mode",
        choices=("native", "local", "fake"),
        help="native: each test as its class says; local: every test simulated "
        "with LocalTensor in one process; fake: a few ranks of the world, each a "
        "process on the fake process group (shapes and communication only)",
    )
    group.addoption(
        "--harness-world-size",
        type=int,
        metavar="N",
        help="default world size (NUM_DEVICES) and device budget",
    )
    group.addoption(
        "--harness-mesh",
        metavar="D0,D1,...",
        help="fake mode: the mesh build_device_mesh() builds; the product is the world size",
    )
    group.addoption(
        "--harness-fake-ranks",
        metavar="R,R,...",
        help="fake mode: the ranks that run (default: the first, the middle and the last)",
    )
    group.addoption(
        "--harness-lanes",
        choices=("on", "off"),
        default="on",
        help="under pytest -n N (xdist's default --dist load): on keeps a class's tests on "
        "one worker and runs tests with ranks on one worker at a time, beside the "
        "LocalTensor and plain tests on the others; off: xdist's own load",
    )
    group.addoption(
        "--harness-rank-workers",
        type=int,
        default=1,
        metavar="K",
        help="with --harness-lanes on: how many workers may run tests with ranks at once "
        "(default 1: on an accelerator host they would share its devices; raise it on a CPU "
        "host with cores for K rank groups)",
    )
    group.addoption(
        "--harness-side-workers",
        type=int,
        metavar="N",
        help="processes that run the LocalTensor tests beside pytest, from the last one "
        "back, while pytest runs from the first (default: HARNESS_SIDE_WORKERS, else one "
        "fewer than the cores, at most 4, on a host without an accelerator; 0: none)",
    )
    group.addoption("--harness-device", metavar="TYPE", help="device type, e.g. cpu, cuda")
    group.addoption(
        "--harness-backend",
        metavar="NAME",
        help="collective backend, e.g. gloo, nccl, or cpu:gloo,cuda:nccl",
    )
    group.addoption(
        "--harness-timeout",
        type=int,
        metavar="SECONDS",
        help="per-test timeout; a hang ends with every rank's stack",
    )
    group.addoption(
        "--harness-hw-class",
        metavar="all|NAMES",
        help="the hw_classification classes this run counts (e.g. GENERIC,CPU); a test of "
        "another class is skipped, naming it (default: the cell's; all: no filter)",
    )
    group.addoption(
        "--harness-ops",
        metavar="all|off|NAMES",
        help="the ops capability (every OpInfo, plain vs DTensor): all, off (the default "
        "outside `harness certify`), or comma-separated op names or globs",
    )


def pytest_configure(config: pytest.Config) -> None:
    env = {}
    cell_name = config.getoption("harness_cell")
    if cell_name:
        from harness.matrix import load_matrix

        matrix_path = config.getoption("harness_matrix") or os.environ.get("HARNESS_MATRIX")
        with _usage_errors():
            cell = load_matrix(matrix_path).cell(cell_name)
        env.update(cell.harness_env())
        if matrix_path:
            env["HARNESS_MATRIX"] = str(Path(matrix_path).resolve())
    for dest, var in _ENV_OPTIONS.items():
        value = config.getoption(dest)
        if value is not None:
            env[var] = str(value)
    rank_workers = config.getoption("harness_rank_workers")
    if rank_workers < 1:
        raise pytest.UsageError(f"--harness-rank-workers={rank_workers}: give a whole number >= 1")
    side_workers = config.getoption("harness_side_workers")
    if side_workers is not None:
        if side_workers < 0:
            raise pytest.UsageError(
                f"--harness-side-workers={side_workers}: give a whole number >= 0"
            )
        env["HARNESS_SIDE_WORKERS"] = str(side_workers)
    for var, (fits, must) in _ENV_RULES.items():
        value = env.get(var, os.environ.get(var))
        if value is not None and not fits(value.strip()):
            raise pytest.UsageError(f"{var}={value!r}: {must}.")
    from harness import hwclass
    from harness.errors import UsageError

    try:
        hwclass.parse(env.get(hwclass.ENV, os.environ.get(hwclass.ENV, "")))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ.update(env)
    from harness.conformance import _ops

    with _usage_errors():
        _ops.check_environment()
    _last_words_go_to(config)
    from harness.hosts import import_plugins

    with _usage_errors():  # before any test module (and so any rank) imports torch-side code
        import_plugins()


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """The kit's bad input (UsageError, PluginError) as pytest's: its lines, no traceback."""
    from harness.errors import UsageError

    try:
        yield
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _last_words_go_to(config: pytest.Config) -> None:
    """Where a threads test that kills the process leaves its verdict (harness.ranks.
    last_words): the real stderr (captured later) and pytest's JUnit XML file."""
    from harness.ranks import last_words

    try:
        stderr = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        stderr = 2
    xml = config.option.xmlpath if hasattr(config.option, "xmlpath") else None
    last_words.configure(
        os.dup(stderr),
        os.path.abspath(xml) if xml else None,
        config.getini("junit_suite_name") if xml else None,
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    cell = os.environ.get("HARNESS_CELL")
    keys = ("DEVICE", "BACKEND", "WORLD_SIZE", "MODE", "TIMEOUT", "TORCH")
    parts = [
        f"{k.lower()}={os.environ[f'HARNESS_{k}']}" for k in keys if f"HARNESS_{k}" in os.environ
    ]
    if not cell and not parts:
        return None
    return f"harness: cell={cell or '-'} " + " ".join([*parts, f"torch_installed={_torch()}"])


def _torch() -> str:
    """The installed torch's version, read from its metadata (the plugin imports no torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the items that will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _skip_other_hw_classes(items)
    _skip_local_without_local_tensor(items)
    _write_lanes(config, items)


def _skip_other_hw_classes(items: list[pytest.Item]) -> None:
    """A test whose class's ``hw_classification`` the cell does not count: skipped, naming it."""
    from harness import hwclass

    counted = hwclass.parse(os.environ.get(hwclass.ENV, ""))
    if counted is None:
        return
    cell = os.environ.get("HARNESS_CELL") or "this run"
    for item in items:
        try:
            name = hwclass.classification_of(getattr(item, "cls", None))
        except TypeError as exc:  # the test author's typo: one line, not a traceback
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        if name is not None and name not in counted:
            item.add_marker(pytest.mark.skip(reason=hwclass.left_out_reason(name, cell, counted)))


def _skip_local_without_local_tensor(items: list[pytest.Item]) -> None:
    """A LocalTensor cell on a torch without LocalTensor: every test skips, one reason."""
    if os.environ.get("HARNESS_MODE") != "local" or not items:
        return
    from harness import compat

    reason = compat.local_tensor_missing()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=f"cell {os.environ.get('HARNESS_CELL', '-')}: {reason}")
    for item in items:
        item.add_marker(marker)


# --- pytest -n N: the kit's scheduler (harness.lanes) ------------------------------------
_LANES_DIR = pytest.StashKey[str]()


def _lanes_on(config: pytest.Config) -> bool:
    return config.getoption("harness_lanes") == "on" and config.getvalue("dist") == "load"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """The controller tells each worker where to write which of its tests run ranks."""
    config = node.config
    if not _lanes_on(config):
        return
    if _LANES_DIR not in config.stash:
        import tempfile

        config.stash[_LANES_DIR] = tempfile.mkdtemp(prefix="harness-lanes-")
    node.workerinput["harness_lanes_dir"] = config.stash[_LANES_DIR]


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if not _lanes_on(config) or _LANES_DIR not in config.stash:
        return None
    from harness.lanes import make_scheduler

    workers = config.getoption("harness_rank_workers")
    return make_scheduler(config, log, config.stash[_LANES_DIR], workers)


def _write_lanes(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: which of the ids it sends run ranks (harness.lanes)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput and workerinput.get("harness_lanes_dir"):
        from harness.lanes import write_lanes

        write_lanes(workerinput["harness_lanes_dir"], workerinput.get("workerid", "gw"), items)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_LANES_DIR, None)
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


# --- the side lane: LocalTensor tests beside pytest (harness.ranks.side) ------------------
def _side_workers(config: pytest.Config) -> int:
    """How many side workers this run gets: none where a worker could not run a test as
    pytest would (a debugger, an xdist worker, a launcher's rank, an accelerator host)."""
    if (
        config.option.collectonly
        or config.getoption("usepdb", False)
        or config.getoption("trace", False)
        or hasattr(config, "workerinput")  # pytest -n: the kit's lanes share the host
    ):
        return 0
    from harness.conformance import _ops

    if _ops.selection(os.environ.get(_ops.ENV)) is not None:
        return 0  # the ops capability forks its workers from this process, with no other thread
    from harness import devices
    from harness.ranks import external, spawn

    if (
        spawn.start_method() != "forkserver"
        or external.launched() is not None
        or devices.detected_accelerator() is not None
    ):
        return 0
    value = os.environ.get("HARNESS_SIDE_WORKERS", "").strip()
    if value:
        return int(value)
    return min(4, len(os.sched_getaffinity(0)) - 1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session: pytest.Session):
    """Start the side lane before the first test, and end it after the last."""
    lane = None
    bases_loaded = "harness.bases" in sys.modules  # no kit test: nothing for the lane
    if bases_loaded and session.items:
        workers = _side_workers(session.config)
        if workers:
            from harness.lanes import side_tasks
            from harness.ranks import side

            lane = side.start(side_tasks(session.items), workers)
    try:
        yield
    finally:
        if lane is not None:
            from harness.ranks import side

            ran = side.stop()
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None and session.config.option.verbose > 0:
                reporter.write_line(
                    f"harness: {ran} LocalTensor tests ran in the side lane beside the "
                    "rank tests (--harness-side-workers 0 runs them in this process)"
                )


# --- the fork server, started while pytest collects (harness.ranks.early) ----------------
_EARLY_DONE = pytest.StashKey[bool]()


def pytest_collectstart(collector: pytest.Collector) -> None:
    """Start the ranks' fork server as pytest begins a file with rank tests, so that
    its import of torch runs beside the collection (harness.ranks.early)."""
    config = collector.config
    if not isinstance(collector, pytest.Module) or config.stash.get(_EARLY_DONE, False):
        return
    if (
        config.option.collectonly
        or hasattr(config, "workerinput")  # an xdist worker may get no rank test
        or config.getoption("importmode") not in ("prepend", "append")
    ):
        config.stash[_EARLY_DONE] = True
        return
    from harness.ranks import early

    if not early.wanted() or early.start_for(collector.path):
        config.stash[_EARLY_DONE] = True


@pytest.hookimpl(hookwrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    """A test file outside the rootdir keeps its path in its node id.

    pytest names such a file relative to the argument it came from, so a file given
    by itself (a matrix suite ``/vendor/test_flip.py``) gets the id ``""`` and its
    tests ``::FlipTest::test_flip``: no path, no module, no capability. Its absolute
    path is the id instead; the file's tests (and their JUnit entries, progress
    events and rerun lines) inherit it.
    """
    outcome = yield
    rootpath = parent.config.rootpath
    if file_path.is_relative_to(rootpath):
        return
    for node in outcome.get_result() or ():
        if getattr(node, "path", None) == file_path:
            _rename(node, file_path.as_posix())


def _rename(node: pytest.Node, nodeid: str) -> None:
    """Give ``node`` the id ``nodeid`` before its children are made from it.

    pytest keeps the id privately: a string ``_nodeid`` up to 9.1, a structured
    ``_id`` from 9.2. A pytest with neither is one this hook does not know: say so
    rather than let the file's tests land under no capability.
    """
    if hasattr(node, "_id"):  # pytest >= 9.2
        node._id = type(node._id).parse(nodeid)
    elif hasattr(node, "_nodeid"):
        node._nodeid = nodeid
    else:
        raise pytest.UsageError(
            f"harness: pytest {pytest.__version__} keeps node ids in a way this kit does not "
            f"know, so {nodeid} would lose its path; install a pytest this kit supports"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when == "call" and "harness.ranks.side" in sys.modules:
        from harness.ranks import side

        seconds = side.seconds_taken(getattr(item, "cls", None), item.name)
        if seconds is not None:  # its time where it ran, not pytest's wait for the outcome
            report.duration = seconds
    if report.failed:
        report.sections.append(("harness: rerun just this test", rerun_command(item)))


def rerun_command(item: pytest.Item) -> str:
    """The one command that reruns ``item`` in the same cell, from the current folder."""
    rest = item.nodeid.partition("::")[2]
    path = Path(item.path)
    try:
        path = path.relative_to(Path.cwd())
    except ValueError:
        pass
    target = f"{path}::{rest}" if rest else str(path)
    launcher_prefix = os.environ.get("HARNESS_RERUN", "").strip()  # set under torchrun/Slurm
    if launcher_prefix:
        return f"{launcher_prefix} -- {shlex.quote(target)}"
    argv = ["pytest", target]
    cell = os.environ.get("HARNESS_CELL")
    if cell:
        argv += ["--harness-cell", cell]
        if os.environ.get("HARNESS_MATRIX"):
            argv += ["--harness-matrix", os.environ["HARNESS_MATRIX"]]
    elif os.environ.get("HARNESS_MODE") in ("local", "fake"):
        argv += ["--harness-mode", os.environ["HARNESS_MODE"]]
    return shlex.join(argv)
