"""`harness container check`: every base image reference, how it is pinned, what is unverified."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import containers
from harness.cli import main
from harness.matrix import load_matrix

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "@sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "state"),
    [
        (f"pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime{DIGEST}", containers.DIGEST),
        ("vault.habana.ai/gaudi-docker/1.22.2/ubuntu24.04/habanalabs/x:1.22.2-32", containers.TAG),
        ("localhost:5000/img:1.0", containers.TAG),  # a registry port is not a tag
        (
            "vault.habana.ai/gaudi-docker/1.22.0/x/pytorch-installer-2.7.1:latest",
            containers.UNPINNED,
        ),
        ("localhost:5000/img", containers.UNPINNED),
        ("rocm/pytorch", containers.UNPINNED),
    ],
)
def test_pin_state(ref, state):
    assert containers.pin_state(ref)[0] == state


def test_the_shipped_matrix_pins_every_vendor_image(capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CONTAINER_ENGINE", "no-such-engine")
    containers.detect_engine.cache_clear()
    try:
        code = main(["container", "check", "--matrix", str(ROOT / "matrix.toml")])
    finally:
        containers.detect_engine.cache_clear()
    out = capsys.readouterr().out
    assert code == 0, out
    matrix = load_matrix(ROOT / "matrix.toml")
    for cell in matrix.cells:
        assert cell.container["base_image"] in out
    assert "UNPINNED" not in out and ":latest" not in out
    assert "not verified here: no container engine answered" in out
    digests = [ln.split()[1] for ln in out.splitlines() if ln.startswith(containers.DIGEST)]
    assert {r.split("/")[0] for r in digests} >= {"pytorch", "rocm"}


def test_a_latest_tag_fails_the_check_and_names_where(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CONTAINER_ENGINE", "no-such-engine")
    containers.detect_engine.cache_clear()
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        'schema = 1\n[accelerators.gaudi]\nbackend = "hccl"\ncells = { native = [1] }\n'
        "[accelerators.gaudi.container]\n"
        'base_image = "vault.habana.ai/gaudi-docker/1.22.0/u/pytorch-installer-2.7.1:latest"\n'
    )
    try:
        code = main(["container", "check", "--matrix", str(matrix)])
    finally:
        containers.detect_engine.cache_clear()
    captured = capsys.readouterr()
    assert code == 1
    line = captured.out.splitlines()
    assert line[0].startswith("UNPINNED") and line[0].endswith(":latest")
    assert "accelerators.gaudi.container.base_image" in line[1] and ":latest moves" in line[1]
    assert "1 base image reference(s) unpinned" in captured.err
