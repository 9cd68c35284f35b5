"""A CPU cell at world size 2, run for real in the CPU image.

Needs a container engine that answers (CI starts dockerd in
.ci/setup/20-containers.sh); builds the image first when it is missing, which
takes minutes once. The suite is a tiny one written here, so this test proves
the container path (image, mounts, user, environment, ranks over gloo inside
the container, reports out) rather than the conformance suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import containers
from harness.matrix import load_matrix

ROOT = Path(__file__).resolve().parent.parent
ENGINE = containers.detect_engine()

pytestmark = [
    pytest.mark.slow,  # builds the cell's image: minutes (nox -s slow)
    pytest.mark.container,
    pytest.mark.needs("docker"),  # skip reason, HARNESS_REQUIRE: conftest.py
]

SUITE = """
import os

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from harness import DTensorTestBase, with_comms


class ShardTest(DTensorTestBase):
    @with_comms
    def test_shard_and_gather_back(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        full = torch.arange(8.0)
        dt = distribute_tensor(full, mesh, [Shard(0)])
        self.assertEqual(dt.to_local().numel(), 8 // self.world_size)
        self.assertEqual(dt.full_tensor(), full)


def test_inside_the_image_as_a_user():
    assert os.environ["HARNESS_IMAGE"].startswith("dtensor-harness:cpu-")
    assert os.getuid() != 0
"""


def test_cpu_cell_runs_in_its_image_and_reports_come_out(tmp_path):
    cpu = next(c for c in load_matrix(ROOT / "matrix.toml").cells if c.accelerator == "cpu")
    tmp_path.chmod(0o755)  # the image's user reads it when root runs this
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_in_container.py").write_text(SUITE)
    run_flags = ", ".join(f'"{f}"' for f in cpu.container.get("run_flags", []))
    (tmp_path / "matrix.toml").write_text(
        textwrap.dedent(
            f"""\
            [defaults]
            suites = ["suite"]
            torch = "{cpu.torch}"
            [accelerators.cpu]
            device = "cpu"
            backend = "gloo"
            env = {{ OMP_NUM_THREADS = "1" }}
            cells = {{ native = [2] }}
            [accelerators.cpu.container]
            dockerfile = "{cpu.container["dockerfile"]}"
            base_image = "{cpu.container["base_image"]}"
            run_flags = [{run_flags}]
            """
        )
    )
    results = tmp_path / "reports"
    argv = [sys.executable, "-m", "harness", "container", "run", "cpu-2rank"]
    argv += ["--matrix", str(tmp_path / "matrix.toml"), "--results", str(results)]
    done = subprocess.run(
        [*argv, "--build-missing"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "HARNESS_CONTAINER_ENGINE": ENGINE},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    junit = results / "junit.xml"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("name") == "cpu-2rank"
    outcome = {(c.get("classname"), c.get("name")): list(c) for c in suite.iter("testcase")}
    assert outcome == {
        ("suite.test_in_container.ShardTest", "test_shard_and_gather_back"): [],
        ("suite.test_in_container", "test_inside_the_image_as_a_user"): [],
    }, ET.tostring(suite, encoding="unicode")
    assert junit.stat().st_uid == os.getuid()  # the caller's, not the image user's
    left = subprocess.run(
        [ENGINE, "ps", "-aq", "--filter", "name=harness-cpu-2rank-"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout.strip() == "", "the container outlived its run"
