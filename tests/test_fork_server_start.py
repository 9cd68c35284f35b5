"""The fork server starts while pytest collects, and preloads the test module from
wherever pytest found it (harness.ranks.early, harness.ranks.spawn).

Each scenario file logs every import of itself ("start"/"end", the pid, a time) to
SCENARIO_IMPORTS, and its rank test says who imported the module it runs: the fork
server (the rank's parent), or the rank itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from scenario_runs import pytest_argv, scenario_env  # tests/ is on sys.path

from harness import accelerators
from harness.ranks import early

LOGGED_IMPORT = """\
import os, time

def _log(what):
    with open(os.environ["SCENARIO_IMPORTS"], "a") as f:
        f.write(f"{what} {os.getpid()} {time.time()}\\n" if " " not in what else what + "\\n")

_log("start")
IMPORTED_BY = os.getpid()
"""

RANK_FILE = (
    LOGGED_IMPORT
    + """
import os
from harness import DTensorTestBase, with_comms


class EarlyTest(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_module_came_from_the_server(self):
        if os.environ.get("HARNESS_MODE") == "local":
            return  # no server: the run simulates the ranks itself
        assert IMPORTED_BY == os.getppid(), "the rank imported its test module itself"
        with open(f"/proc/{os.getppid()}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        if self.rank == 0:
            _log(f"server {os.getppid()} {boot + ticks / os.sysconf('SC_CLK_TCK')}")


_log("end")
"""
)

LOCAL_FILE = (
    LOGGED_IMPORT
    + """
from harness import LocalDTensorTestBase, with_comms


class OnlyLocalTest(LocalDTensorTestBase):
    @with_comms
    def test_nothing_to_fork(self):
        pass


_log("end")
"""
)


def _run(
    project: Path, *args: str, mode: str | None = None
) -> tuple[str, list[tuple[str, int, float]]]:
    log = project / "imports.log"
    log.unlink(missing_ok=True)
    env = {**scenario_env(project / "pids"), "SCENARIO_IMPORTS": str(log)}
    if mode:
        env["HARNESS_MODE"] = mode
    proc = subprocess.run(
        pytest_argv(*args), cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return proc.stdout, [(what, int(pid), float(at)) for what, pid, at in lines]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose tests sit in a folder without ``__init__.py``, run from its root:
    pytest puts ``tests/`` on its own sys.path, which the server does not start with."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_early.py").write_text(RANK_FILE)
    (tmp_path / "tests" / "test_local_only.py").write_text(LOCAL_FILE)
    return tmp_path


def test_server_imports_the_module_beside_the_collection(project: Path):
    out, imports = _run(project, "tests/test_early.py")
    assert "1 passed" in out
    (server, server_started), *_ = [(pid, at) for what, pid, at in imports if what == "server"]
    ends = {pid: at for what, pid, at in imports if what == "end"}
    assert set(ends) == {server, imports[0][1]}, f"the run's import and the server's: {imports}"
    # started at the first rank test, the server would start after collection ended
    assert server_started < ends[imports[0][1]], imports


def test_a_module_that_fails_in_the_server_is_imported_by_the_ranks(project: Path):
    """The server's preload stops the server on anything but an ImportError; the kit's
    guard keeps it serving, and the ranks import the module themselves."""
    source = RANK_FILE.replace(
        "IMPORTED_BY = os.getpid()\n",
        "IMPORTED_BY = os.getpid()\n"
        'if "HARNESS_FORKSERVER_MODULES" in os.environ:  # only the server has it\n'
        '    raise RuntimeError("no import here")\n',
    ).replace("assert IMPORTED_BY == os.getppid()", "assert IMPORTED_BY == os.getpid()")
    (project / "tests" / "test_early.py").write_text(source)
    out, _ = _run(project, "tests/test_early.py")
    assert "1 passed" in out


def test_collect_only_starts_no_server(project: Path):
    _, imports = _run(project, "--collect-only", "tests/test_early.py")
    assert {pid for _, pid, _ in imports} == {imports[0][1]}, imports


def test_a_file_without_rank_bases_starts_no_server(project: Path):
    out, imports = _run(project, "tests/test_local_only.py")
    assert "1 passed" in out
    assert {pid for _, pid, _ in imports} == {imports[0][1]}, imports


def test_local_cell_starts_no_server(project: Path):
    out, imports = _run(project, "tests/test_early.py", mode="local")
    assert "1 passed" in out or "1 skipped" in out
    assert {pid for _, pid, _ in imports} == {imports[0][1]}, imports


def test_module_name_as_pytest_names_it(tmp_path: Path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "loose").mkdir()
    assert early.module_name(tmp_path / "pkg" / "sub" / "test_a.py") == (tmp_path, "pkg.sub.test_a")
    assert early.module_name(tmp_path / "loose" / "test_b.py") == (
        tmp_path / "loose",
        "test_b",
    )


def test_rank_bases_are_told_from_local_ones(tmp_path: Path):
    cases = {
        "class T(DTensorTestBase): ...": True,
        "class T(harness.DTensorContinuousTestBase): ...": True,
        "class T(DTensorOpTestBase): ...": False,  # its ranks are threads
        "class T(LocalDTensorTestBase): ...": False,
        "class T(LocalDTensorOpTestBase): ...": False,
        "import torch": False,
    }
    for source, expected in cases.items():
        path = tmp_path / "test_x.py"
        path.write_text(source)
        assert early.holds_rank_tests(path) is expected, source


def test_an_accelerator_on_the_host_keeps_the_start_at_the_first_rank_test(
    tmp_path: Path, monkeypatch
):
    fake = accelerators.Accelerator(
        name="acme",
        device="acme",
        unit="card",
        backends=("acme",),
        count=({"glob": os.fspath(tmp_path / "acme[0-9]")},),
    )
    monkeypatch.setattr(accelerators, "known", lambda: {"acme": fake})
    assert accelerators.none_probed()
    assert early.wanted()
    (tmp_path / "acme0").touch()
    assert not accelerators.none_probed()
    assert not early.wanted()
    # one that cannot be probed without torch may be there
    unprobed = accelerators.Accelerator(name="acme", device="acme", unit="card", backends=("acme",))
    monkeypatch.setattr(accelerators, "known", lambda: {"acme": unprobed})
    assert not accelerators.none_probed()
