"""matrix.toml: expansion into cells, and one clear line for every bad matrix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.matrix import MatrixError, cell_name, load_matrix

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
schema = 1
[defaults]
timeout = 120
[accelerators.cpu]
device = "cpu"
backend = "gloo"
cells = { native = [1, 2, 4], local = [8] }
[accelerators.cuda]
device = "cuda"
backend = "nccl"
cells = { native = [4] }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def test_shipped_matrix_has_the_contract_cells():
    matrix = load_matrix(ROOT / "matrix.toml")
    names = set(matrix.names)
    assert {"cpu-1rank", "cpu-2rank", "cpu-4rank", "cpu-8sim", "cuda-4gpu"} <= names
    assert {"rocm-8gpu", "xpu-2gpu", "gaudi-8hpu", "gaudi-8sim"} <= names
    assert len(names) == len(matrix.cells), "cell names must be unique"
    cuda = matrix.cell("test-cuda-4gpu")
    assert (cuda.device, cuda.backend, cuda.world_size, cuda.mode) == ("cuda", "nccl", 4, "native")
    assert load_matrix(ROOT / "matrix.toml").cell("rocm-4gpu").device == "cuda"
    assert matrix.cell("xpu-2gpu").backend == "xccl"
    assert matrix.cell("gaudi-2hpu").backend == "hccl"


def test_cells_expand_accelerator_by_world_size_by_mode(tmp_path):
    matrix = load_matrix(write(tmp_path, GOOD))
    assert matrix.names == ["cpu-1rank", "cpu-2rank", "cpu-4rank", "cpu-8sim", "cuda-4gpu"]
    sim = matrix.cell("cpu-8sim")
    assert (sim.mode, sim.world_size, sim.timeout) == ("local", 8, 120)
    assert sim.tags == ["cpu", "local", "sim", "ws8"]
    assert sim.session == "test-cpu-8sim"
    assert cell_name("gaudi", 2, "native") == "gaudi-2hpu"
    assert cell_name("xpu", 8, "local") == "xpu-8sim"


def test_harness_env_carries_the_cell(tmp_path):
    env = load_matrix(write(tmp_path, GOOD)).cell("cuda-4gpu").harness_env()
    assert env["HARNESS_CELL"] == "cuda-4gpu"
    assert env["HARNESS_DEVICE"] == "cuda"
    assert env["HARNESS_BACKEND"] == "nccl"
    assert env["HARNESS_WORLD_SIZE"] == "4"
    assert env["HARNESS_MODE"] == "native"
    assert env["HARNESS_TIMEOUT"] == "120"


def test_overrides_drop_and_adjust_single_cells(tmp_path):
    text = (
        GOOD
        + """
[overrides."cpu-1rank"]
drop = true
[overrides."cpu-4rank"]
timeout = 900
env = { EXTRA = "1" }
[overrides."cuda-4gpu"]
backend = "cpu:gloo,cuda:nccl"
"""
    )
    matrix = load_matrix(write(tmp_path, text))
    assert "cpu-1rank" not in matrix.names
    assert matrix.cell("cpu-4rank").timeout == 900
    assert matrix.cell("cpu-4rank").env["EXTRA"] == "1"
    assert matrix.cell("cpu-2rank").timeout == 120
    assert matrix.cell("cuda-4gpu").backend == "cpu:gloo,cuda:nccl"


def test_unknown_cell_names_the_closest(tmp_path):
    matrix = load_matrix(write(tmp_path, GOOD))
    with pytest.raises(MatrixError, match=r"unknown cell 'cpu-3rank'.*Closest: .*cpu-2rank"):
        matrix.cell("cpu-3rank")


# (bad matrix text, the words its one-line message must contain)
BAD = {
    "toml syntax": ('[accelerators.cpu\ndevice = "cpu"', ["TOML syntax error", "line 1"]),
    "unknown top-level key": (
        GOOD + "\n[acceleratorz]\n",
        ["'acceleratorz'", "Did you mean 'accelerators'"],
    ),
    "unknown accelerator key": (
        GOOD.replace('backend = "gloo"', 'backnd = "gloo"'),
        ["accelerators.cpu.backnd", "Did you mean 'backend'"],
    ),
    "unknown accelerator": (
        GOOD.replace("accelerators.cuda]", "accelerators.cuad]"),
        ["accelerators.cuad", "Did you mean 'cuda'"],
    ),
    "unknown mode": (
        GOOD.replace("local = [8]", "locale = [8]"),
        ["accelerators.cpu.cells.locale", "Did you mean 'local'"],
    ),
    "unknown backend": (
        GOOD.replace('backend = "nccl"', 'backend = "ncl"'),
        ["accelerators.cuda.backend", "unknown backend 'ncl'", "nccl"],
    ),
    "backend the accelerator cannot use": (
        GOOD.replace('backend = "gloo"', 'backend = "nccl"'),
        ["accelerators.cpu.backend", "cannot use backend 'nccl'"],
    ),
    "mixed backend with a bad part": (
        GOOD.replace('backend = "nccl"', 'backend = "cpu:nccl,cuda:nccl"'),
        ["accelerators.cuda.backend", "cpu part of a mixed backend must be gloo"],
    ),
    "world size zero": (
        GOOD.replace("native = [1, 2, 4]", "native = [0, 2]"),
        ["accelerators.cpu.cells.native[0]: world size 0", "at least 1"],
    ),
    "world size as string": (
        GOOD.replace("native = [4]", 'native = ["4"]'),
        ["accelerators.cuda.cells.native[0] must be a world size", "not a string ('4')"],
    ),
    "duplicate cell": (
        GOOD.replace("native = [1, 2, 4]", "native = [2, 2]"),
        ["accelerators.cpu.cells.native lists 2 twice"],
    ),
    "timeout wrong type": (
        GOOD.replace("timeout = 120", 'timeout = "2m"'),
        ["defaults.timeout", "whole number of seconds", "'2m'"],
    ),
    "timeout not positive": (
        GOOD.replace("timeout = 120", "timeout = 0"),
        ["defaults.timeout", "positive"],
    ),
    "device that does not fit": (
        GOOD.replace('device = "cuda"', 'device = "xpu"'),
        ["accelerators.cuda.device", 'set device = "cuda"'],
    ),
    "missing backend": (
        GOOD.replace('backend = "nccl"\n', ""),
        ["accelerators.cuda.backend is missing"],
    ),
    "no accelerators": ("schema = 1\n", ["matrix.toml: no accelerators defined"]),
    "future schema": (GOOD.replace("schema = 1", "schema = 7"), ["schema = 7", "upgrade"]),
    "env value not a string": (
        GOOD.replace('device = "cpu"', 'device = "cpu"\nenv = { OMP_NUM_THREADS = 1 }'),
        ["accelerators.cpu.env.OMP_NUM_THREADS", "quote it"],
    ),
    "override of no cell": (
        GOOD + '\n[overrides."cpu-3rank"]\ndrop = true\n',
        ["overrides.cpu-3rank", "names no cell"],
    ),
    "override unknown key": (
        GOOD + '\n[overrides."cpu-2rank"]\ndrops = true\n',
        ["overrides.cpu-2rank.drops", "Did you mean 'drop'"],
    ),
    "container key typo": (
        GOOD + '\n[accelerators.cpu.container]\nrun_flag = ["--x"]\n',
        ["accelerators.cpu.container.run_flag", "Did you mean 'run_flags'"],
    ),
    # issue 16, item 4: what validation used to let through
    "world size absurd": (
        GOOD.replace("local = [8]", "local = [100000000000000000]"),
        ["accelerators.cpu.cells.local[0]: world size 100000000000000000", "at most 65536"],
    ),
    "timeout absurd": (
        GOOD.replace("timeout = 120", "timeout = 100000000000000000000"),
        ["defaults.timeout", "at most 604800"],
    ),
    "override timeout absurd": (
        GOOD + '\n[overrides."cpu-2rank"]\ntimeout = 9999999999\n',
        ["overrides.cpu-2rank.timeout", "at most 604800"],
    ),
    "empty world size list": (
        GOOD.replace("native = [4]", "native = []") + '\n[overrides."cuda-4gpu"]\ntimeout = 9\n',
        ["accelerators.cuda.cells.native is empty"],  # not the override naming no cell
    ),
    "empty cells table": (
        GOOD.replace("cells = { native = [4] }", "cells = {}"),
        ["accelerators.cuda.cells is empty"],
    ),
    "every cell dropped": (
        GOOD.replace("native = [1, 2, 4], local = [8]", "native = [2]").replace(
            "cells = { native = [4] }", "cells = { native = [2] }"
        )
        + '\n[overrides."cpu-2rank"]\ndrop = true\n[overrides."cuda-2gpu"]\ndrop = true\n',
        ["no cells", "drop"],
    ),
    "unknown placeholder in device_flags": (
        GOOD + '\n[accelerators.cpu.container]\ndevice_flags = ["--gpus", "device={devcies}"]\n',
        ["accelerators.cpu.container.device_flags", "{devcies}", "Did you mean 'devices'"],
    ),
    "{device} is for device_flags only": (
        GOOD + '\n[accelerators.cpu.container]\ndevice_env = { MASK = "{device}" }\n',
        ["accelerators.cpu.container.device_env.MASK", "unknown placeholder {device}"],
    ),
    "unknown placeholder in device_env": (
        GOOD + '\n[accelerators.cpu.container]\ndevice_env = { MASK = "{rank}" }\n',
        ["accelerators.cpu.container.device_env.MASK", "unknown placeholder {rank}"],
    ),
    "empty suites": (
        GOOD.replace("timeout = 120", "timeout = 120\nsuites = []"),
        ["defaults.suites is empty", "at least one suite"],
    ),
    "suites not a list of strings": (
        GOOD.replace("timeout = 120", "timeout = 120\nsuites = [1]"),
        ["defaults.suites[0] must be a string", "in quotes"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_matrix_gets_one_line_naming_the_key_and_exit_2(case, tmp_path, capsys):
    text, words = BAD[case]
    path = write(tmp_path, text)
    assert main(["matrix", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("harness: error: ")
    for word in words:
        assert word in err, f"{case}: {word!r} not in {err!r}"


def test_every_problem_of_a_file_is_named_at_once_one_line_each(tmp_path, capsys):
    # issue 16, item 4: validation used to stop at the first problem
    text = (
        GOOD.replace("timeout = 120", "timeout = 120\nsuits = []")  # defaults key typo
        .replace('backend = "gloo"', 'backnd = "gloo"')  # a typo in one accelerator ...
        .replace("native = [4]", "native = [0, 4], locale = [2]")  # ... two in another
        .replace('device = "cuda"', 'device = "cuda"\nenv = { A = 1, B = 2 }')  # two in one table
        + '\n[acceleratorz]\n[overrides."cpu-2rank"]\ndrops = true\n'
    )
    path = write(tmp_path, text)
    assert main(["matrix", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = [  # in the order of the file
        "defaults.suits",
        "accelerators.cpu.backnd",
        "accelerators.cuda.env.A",
        "accelerators.cuda.env.B",
        "accelerators.cuda.cells.native[0]: world size 0",
        "accelerators.cuda.cells.locale",
        "'acceleratorz'",
        "overrides.cpu-2rank.drops",
    ]
    assert len(err) == len(expected), err
    for line, word in zip(err, expected):
        assert line.startswith(f"harness: error: {path}: ") and word in line, (word, err)


def test_problems_of_separate_modes_and_tables_are_all_named(tmp_path):
    text = GOOD.replace("native = [4]", "native = [0, 4], locale = [2]").replace(
        'backend = "gloo"', 'backend = "nccl"'
    )
    with pytest.raises(MatrixError) as err:
        load_matrix(write(tmp_path, text))
    lines = str(err.value).splitlines()
    assert len(lines) == 3, lines
    assert "accelerators.cpu.backend" in lines[0] and "cannot use backend 'nccl'" in lines[0]
    assert "accelerators.cuda.cells.native[0]: world size 0" in lines[1]
    assert "unknown mode 'accelerators.cuda.cells.locale'" in lines[2]


def test_known_placeholders_pass(tmp_path):
    path = write(
        tmp_path,
        GOOD + '\n[accelerators.cpu.container]\ndevice_flags = ["--device={device}", '
        '"--gpus=\\"device={devices}\\"", "--format={{.Id}}"]\ndevice_env = { M = "{devices}" }\n',
    )
    assert load_matrix(path).cells  # {device}, {devices} and docker's {{...}} are fine


def test_a_matrix_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "matrix.toml"
    path.write_bytes(GOOD.encode().replace(b"[defaults]", b"# caf\xe9\n[defaults]"))
    assert main(["matrix", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matrix.toml:3: not UTF-8 (byte 0xe9)" in err[0], err


def test_missing_file_is_exit_2(tmp_path, capsys):
    assert main(["matrix", "list", "--matrix", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "nope.toml" in err and "not found" in err and "--matrix" in err


def test_bad_matrix_from_a_real_process_has_no_traceback(tmp_path):
    path = write(tmp_path, BAD["unknown mode"][0])
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "matrix", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
