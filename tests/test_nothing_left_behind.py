"""No process outlives its run, however the run ends (issue 16, item 1).

SIGKILL leaves no time for cleanup code: the fork server must see the run die
(its liveness pipe), the ranks must see the server die (PR_SET_PDEATHSIG), and
pytest must see `harness run` die. Each test kills the top process while every
rank sits in its test body, then checks that every process the run made is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "kill"
GONE_WITHIN_S = 5.0  # the promise in docs/guarantees.md


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie is dead, waiting for its reaper
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(pid)
        except OSError:
            pass
    return alive


def _kill_and_watch(argv: list[str], tmp_path: Path, top_is_child: bool) -> set[int]:
    """Start ``argv``, wait for both ranks in their body, SIGKILL the top process;
    return what is still alive GONE_WITHIN_S later (and kill that, to leave nothing)."""
    env = {**os.environ, "SLEEPY_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    made: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while not all((tmp_path / f"rank{r}").exists() for r in range(2)):
            assert proc.poll() is None, "the run ended before its ranks started"
            assert time.monotonic() < deadline, "ranks did not start within 240 s"
            time.sleep(0.1)
        made = _descendants(proc.pid)
        ranks = {int((tmp_path / f"rank{r}").read_text()) for r in range(2)}
        assert ranks <= made, (ranks, made)
        top = proc.pid
        if top_is_child:  # kill pytest, the child of `harness run`
            top = next(p for p in _children().get(proc.pid, []))
            made.add(proc.pid)
        os.kill(top, signal.SIGKILL)
        made.discard(top)
        end = time.monotonic() + GONE_WITHIN_S
        while _alive(made) and time.monotonic() < end:
            time.sleep(0.05)
        return _alive(made)
    finally:
        for pid in _alive(made | {proc.pid}):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)


def _described(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(
                f"{pid}: "
                + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
            )
        except OSError:
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_pytest_takes_server_tracker_and_ranks_down(tmp_path):
    argv = [sys.executable, "-m", "pytest", str(DATA / "test_sleepy_ranks.py"),
            "-p", "no:cacheprovider", "-q"]  # fmt: skip
    left = _kill_and_watch(argv, tmp_path, top_is_child=False)
    assert not left, f"alive {GONE_WITHIN_S:g} s after SIGKILL of pytest: {_described(left)}"


def _cpu_matrix(path: Path, suite: str, **accelerator: str) -> Path:
    extra = "".join(f"{k} = {v}\n" for k, v in accelerator.items())
    path.write_text(
        f'schema = 1\n[defaults]\nsuites = ["{suite}"]\n'
        'results = "results"\n[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\n'
        f"cells = {{ native = [2] }}\n{extra}"
    )
    return path


# What a nox session does: run the command as its child, with NOX_CURRENT_SESSION set.
NOX_LIKE = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "launcher, victim",
    [
        ("", "harness run"),
        ("", "pytest under harness run"),
        ("", "nox above harness run"),
        ("torchrun", "harness run"),
        ("torchrun", "torchrun's agent under harness run"),
    ],
)
def test_sigkill_of_harness_run_takes_everything_down(tmp_path, launcher, victim, monkeypatch):
    matrix = _cpu_matrix(tmp_path / "matrix.toml", str(DATA / "test_sleepy_ranks.py"))
    argv = [sys.executable, "-m", "harness", "run", "cpu-2rank", "--matrix", str(matrix)]
    argv += ["--launcher", launcher] if launcher else []
    if victim.startswith("nox"):
        monkeypatch.setenv("NOX_CURRENT_SESSION", "test-cpu-2rank")
        argv = NOX_LIKE + argv
    left = _kill_and_watch(argv, tmp_path, top_is_child=victim.startswith(("pytest", "torchrun")))
    assert not left, f"alive {GONE_WITHIN_S:g} s after SIGKILL of {victim}: {_described(left)}"


def _containers(engine: str, name: str) -> list[str]:
    listed = subprocess.run([engine, "ps", "-aq", "--filter", f"name=^/?{name}$"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return listed.stdout.split()


@pytest.mark.slow  # a container per victim (nox -s slow)
@pytest.mark.container
@pytest.mark.needs("docker")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "victim", ["harness container run", "pytest in the container", "nox above it"]
)
def test_sigkill_of_a_container_run_removes_the_container(tmp_path, victim, monkeypatch):
    """The daemon, not the killed process, owns a container: it must be removed."""
    from harness import containers
    from harness.matrix import load_matrix

    engine = containers.detect_engine()
    root = Path(__file__).resolve().parent.parent
    cpu = next(c for c in load_matrix(root / "matrix.toml").cells if c.accelerator == "cpu")
    tmp_path.chmod(0o755)  # the image's user reads it when root runs this
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_sleepy_ranks.py").write_text(
        (DATA / "test_sleepy_ranks.py").read_text()
    )
    # pytest's own pid (host-visible through the results mount), for the second victim
    (tmp_path / "suite" / "conftest.py").write_text(
        "import os\nfrom pathlib import Path\n\n\ndef pytest_sessionstart(session):\n"
        '    Path(os.environ["SLEEPY_DIR"], "pytest").write_text(str(os.getpid()))\n'
    )
    results = tmp_path / "results"
    results.mkdir(mode=0o777)
    results.chmod(0o777)
    inner = f"{containers.RESULTS_DIR}/cpu-2rank"
    matrix = _cpu_matrix(
        tmp_path / "matrix.toml",
        "suite",
        env=f'{{ OMP_NUM_THREADS = "1", SLEEPY_DIR = "{inner}" }}',
        torch=f'"{cpu.torch}"',
    )
    matrix.write_text(
        matrix.read_text()
        + f'[accelerators.cpu.container]\ndockerfile = "{cpu.container["dockerfile"]}"\n'
        f'base_image = "{cpu.container["base_image"]}"\n'
    )
    argv = [sys.executable, "-m", "harness", "container", "run", "cpu-2rank", "--build-missing"]
    argv += ["--matrix", str(matrix), "--results", str(results)]
    env = {**os.environ, "HARNESS_CONTAINER_ENGINE": engine}
    if victim == "nox above it":
        env["NOX_CURRENT_SESSION"] = "test-cpu-2rank"
        argv = NOX_LIKE + argv
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    name = ""
    try:
        deadline = time.monotonic() + 1200  # builds the image when it is missing
        while not all((results / f"rank{r}").exists() for r in range(2)):
            assert proc.poll() is None, "the run ended before its ranks started"
            assert time.monotonic() < deadline, "ranks did not start in time"
            time.sleep(0.2)
        owner = _children()[proc.pid][0] if victim == "nox above it" else proc.pid
        name = f"harness-cpu-2rank-{owner}"  # harness container run names it after its pid
        assert _containers(engine, name), "no container named after the run"
        if victim != "pytest in the container":
            proc.kill()
        else:  # pytest's pid inside the container's pid namespace
            pid = (results / "pytest").read_text()
            subprocess.run([engine, "exec", name, "sh", "-c", f"kill -KILL {pid}"], check=True)
        end = time.monotonic() + GONE_WITHIN_S
        while _containers(engine, name) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _containers(engine, name), (
            f"container alive {GONE_WITHIN_S:g} s after SIGKILL of {victim}"
        )
    finally:
        if name:
            subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False)
        proc.kill()
        proc.wait(timeout=60)
