"""The pip commands that make a cell's virtualenv: CPU torch on a stock machine and
behind a mirror, and no torch index on anything but torch.

pip itself resolves them against local stand-ins for PyPI (whose Linux torch is
the CUDA build), PyTorch's CPU index and a wheelhouse, with every pip setting of
this machine switched off, so the tests say what a stock machine would do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness import nox_sessions
from harness.matrix import load_matrix
from harness.nox_sessions import _venv, install_steps

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INDEX_FLAGS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--no-index")


@pytest.fixture(scope="module")
def matrix():
    return load_matrix(ROOT / "matrix.toml")


def fake_wheel(folder: Path, version: str) -> None:
    """A torch wheel that pip can choose; only its version matters here."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr("torch/__init__.py", "")
        wheel.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n"
        )
        wheel.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{info}/RECORD", "")
    links = "".join(f'<a href="{w.name}">{w.name}</a>' for w in sorted(folder.glob("*.whl")))
    (folder / "index.html").write_text(f"<html><body>{links}</body></html>")  # a simple index page


def chosen_torch(step: list[str], pypi: Path, wheelhouse: Path | None = None) -> str:
    """The torch version pip picks for ``step``, with ``pypi`` standing in for PyPI.

    No pip configuration of this machine applies; ``wheelhouse`` stands for a
    machine whose pip is set up with one (PIP_FIND_LINKS, as here).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=pypi.as_uri())
    if wheelhouse:
        env["PIP_FIND_LINKS"] = str(wheelhouse)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
         "--no-cache-dir", "--disable-pip-version-check", "--retries", "0", "--quiet",
         "--report", "-", *step],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (torch,) = [i for i in json.loads(proc.stdout)["install"] if i["metadata"]["name"] == "torch"]
    return torch["metadata"]["version"]


@pytest.fixture
def indexes(tmp_path):
    """PyPI (plain 2.13.0, the CUDA build on Linux) and PyTorch's CPU index, on disk."""
    fake_wheel(tmp_path / "pypi" / "torch", "2.13.0")
    fake_wheel(tmp_path / "cpu" / "torch", "2.13.0+cpu")
    return tmp_path / "pypi", tmp_path / "cpu"


def local(step: list[str], url: str, folder: Path) -> list[str]:
    return [folder.as_uri() if arg == url else arg for arg in step]


def test_cpu_cell_gets_the_cpu_build_on_a_stock_machine(matrix, indexes, tmp_path):
    pypi, cpu_index = indexes
    torch_step = install_steps(matrix.cell("cpu-4rank"), ["-e", "."])[0]
    assert CPU_INDEX in torch_step
    assert chosen_torch(local(torch_step, CPU_INDEX, cpu_index), pypi) == "2.13.0+cpu"
    # without the CPU index, the same pin takes PyPI's (CUDA) build: what this guards against
    assert chosen_torch(["torch==2.13.0"], pypi) == "2.13.0"


def test_cpu_cell_uses_a_wheelhouse_where_the_cpu_index_does_not_answer(matrix, indexes, tmp_path):
    """A machine whose pip is set up with a wheelhouse (find-links), offline."""
    pypi, cpu_index = indexes
    wheelhouse = tmp_path / "wheelhouse"
    fake_wheel(wheelhouse, "2.13.0+cpu")
    torch_step = install_steps(matrix.cell("cpu-4rank"), ["-e", "."])[0]
    gone = tmp_path / "no-such-index"  # stands for an index that does not answer
    version = chosen_torch(local(torch_step, CPU_INDEX, gone), pypi, wheelhouse)
    assert version == "2.13.0+cpu"


@pytest.mark.parametrize("cell", ["cpu-4rank", "cpu-8sim", "cuda-4gpu", "rocm-2gpu", "xpu-1gpu"])
def test_no_index_flag_reaches_the_other_dependencies(matrix, cell):
    cell = matrix.cell(cell)
    torch_step, deps_step = install_steps(cell, ["-e", ".[test]"])
    assert torch_step[0] == cell.torch and torch_step[1:] == list(cell.pip_args)
    # torch pinned again so pip keeps the build it has, and no index of torch's
    assert deps_step == [cell.torch, "-e", ".[test]"]
    assert not set(deps_step) & set(INDEX_FLAGS)


class RecordingSession:
    def run(self, *args, **kwargs):  # only `python -m venv` goes through nox
        python = Path(args[3]) / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.touch()

    def log(self, *args):
        pass


def test_the_session_runs_the_steps_once_each_then_reuses_the_venv(matrix, tmp_path, monkeypatch):
    pips = []

    def pip(argv, **kwargs):
        pips.append(argv[3:])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(nox_sessions.subprocess, "run", pip)
    steps = install_steps(matrix.cell("cuda-4gpu"), ["-e", "."])
    python = _venv(RecordingSession(), tmp_path / "venv", steps)
    assert [argv[-len(step) :] for argv, step in zip(pips, steps)] == steps and len(pips) == 2
    assert all(argv[:2] == ["install", "-q"] for argv in pips)
    assert _venv(RecordingSession(), tmp_path / "venv", steps) == python and len(pips) == 2
