"""Device, backend and world-size selection, and the cell's overrides."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch.distributed as dist

import harness.devices as devices


@pytest.fixture
def reload(monkeypatch):
    """Re-import harness.devices under the environment a test sets."""
    for var in (
        "HARNESS_DEVICE",
        "HARNESS_BACKEND",
        "HARNESS_WORLD_SIZE",
        "HARNESS_MODE",
        "HARNESS_TIMEOUT",
    ):
        monkeypatch.delenv(var, raising=False)
    yield lambda: importlib.reload(devices)
    monkeypatch.undo()
    importlib.reload(devices)


@pytest.mark.skipif(devices.detected_accelerator() is not None, reason="CPU-host defaults")
def test_cpu_defaults(reload):
    d = reload()
    assert (d.DEVICE_TYPE, d.DEVICE_COUNT, d.PG_BACKEND, d.NUM_DEVICES) == ("cpu", 0, "gloo", 4)
    assert d.ACCELERATOR_DIST_BACKENDS == ["nccl", "xccl", "hccl"]


def test_cell_overrides_detection(reload, monkeypatch):
    monkeypatch.setenv("HARNESS_WORLD_SIZE", "2")
    monkeypatch.setenv("HARNESS_BACKEND", "cpu:gloo,cuda:nccl")
    d = reload()
    assert d.NUM_DEVICES == 2 and d.PG_BACKEND == "cpu:gloo,cuda:nccl"
    assert d.cell_world_size() == 2


def test_bad_world_size_names_the_variable(reload, monkeypatch):
    monkeypatch.setenv("HARNESS_WORLD_SIZE", "four")
    with pytest.raises(ValueError, match="HARNESS_WORLD_SIZE='four'"):
        reload()


def test_mode_and_timeout_are_read_when_asked(monkeypatch):
    monkeypatch.setenv("HARNESS_MODE", "local")
    monkeypatch.setenv("HARNESS_TIMEOUT", "12")
    assert devices.harness_mode() == "local" and devices.default_timeout() == 12.0
    monkeypatch.setenv("HARNESS_MODE", "remote")
    with pytest.raises(ValueError, match="native.*local"):
        devices.harness_mode()
    monkeypatch.delenv("HARNESS_TIMEOUT")
    assert devices.default_timeout() == devices.DEFAULT_TIMEOUT == 300.0


def test_host_device_count_is_cheap_and_never_raises():
    assert devices.host_device_count("cpu") == sys.maxsize
    assert devices.host_device_count("no-such-device") == 0
    if devices.detected_accelerator() is None:
        assert devices.host_device_count("cuda") == 0
        assert devices.host_device_count("rocm") == 0


def test_backend_availability():
    assert devices.backend_available("gloo")
    assert devices.backend_available("cpu:gloo")
    # built into torch, not whether a GPU is here: PyPI's CUDA torch has nccl on a CPU host
    assert devices.backend_available("cpu:gloo,cuda:nccl") == dist.is_nccl_available()
    assert devices.needs_accelerator("cpu:gloo,cuda:nccl") and not devices.needs_accelerator("gloo")
