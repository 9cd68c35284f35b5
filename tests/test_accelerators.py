"""The accelerator table: built-ins as rows, new accelerators declared as data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import accelerators, hosts
from harness.accelerators import BUILTINS, AcceleratorError, declare
from harness.cli import main
from harness.errors import UsageError
from harness.matrix import load_matrix

ROOT = Path(__file__).resolve().parent.parent

ACME = """
schema = 1
[accelerators.cpu]
device = "cpu"
backend = "gloo"
cells = { native = [2] }
[accelerators.acme]
device = "npu"
backend = "acmeccl"
unit = "card"
plugin = "acme_torch"
visible_devices = "ACME_VISIBLE_DEVICES"
count = { glob = "/dev/acme[0-9]*" }
cells = { native = [2, 4], local = [8] }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def test_the_five_builtins_are_rows_with_their_default_backend_first():
    assert list(BUILTINS) == ["cpu", "cuda", "rocm", "xpu", "gaudi"]
    defaults = {name: (a.device, a.unit, a.backend) for name, a in BUILTINS.items()}
    assert defaults == {
        "cpu": ("cpu", "rank", "gloo"),
        "cuda": ("cuda", "gpu", "nccl"),
        "rocm": ("cuda", "gpu", "nccl"),
        "xpu": ("xpu", "gpu", "xccl"),
        "gaudi": ("hpu", "hpu", "hccl"),
    }
    for accel in BUILTINS.values():
        assert accel.binds_devices == (accel.name != "cpu")
        if accel.binds_devices:  # everything a device accelerator needs on a host
            assert accel.count and accel.driver and accel.visible_devices


def test_a_matrix_declares_a_new_accelerator_with_no_kit_edit(tmp_path):
    matrix = load_matrix(write(tmp_path, ACME))
    assert matrix.names == ["cpu-2rank", "acme-2card", "acme-4card", "acme-8sim"]
    cell = matrix.cell("test-acme-4card")
    assert (cell.device, cell.backend, cell.unit, cell.plugins) == (
        "npu",
        "acmeccl",
        "card",
        ("acme_torch",),
    )
    assert cell.tags == ["acme", "native", "card", "ws4"]
    assert cell.devices_needed == 4 and matrix.cell("acme-8sim").devices_needed == 1
    env = cell.harness_env()
    assert env["HARNESS_PLUGINS"] == "acme_torch" and env["HARNESS_ACCELERATOR"] == "acme"
    # its visible-devices variable becomes the container's default device selection
    assert cell.container["device_env"] == {"ACME_VISIBLE_DEVICES": "{devices}"}
    assert "HARNESS_PLUGINS" not in matrix.cell("cpu-2rank").harness_env()


def test_matrix_list_json_carries_each_cells_unit(tmp_path, capsys):
    assert main(["matrix", "list", "--json", "--matrix", str(write(tmp_path, ACME))]) == 0
    import json

    cells = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert cells["acme-2card"]["unit"] == "card" and cells["acme-8sim"]["unit"] == "sim"
    assert cells["acme-2card"]["plugins"] == ["acme_torch"]
    assert cells["cpu-2rank"]["unit"] == "rank"


def test_builtin_container_flags_come_from_the_table_and_the_matrix_overrides_them(tmp_path):
    text = (
        ACME + '[accelerators.cuda]\ndevice = "cuda"\nbackend = "nccl"\ncells = { native = [2] }\n'
    )
    text += '[accelerators.cuda.container]\nrun_flags = ["--ipc=host"]\n'
    cuda = load_matrix(write(tmp_path, text)).cell("cuda-2gpu")
    assert cuda.container["run_flags"] == ["--ipc=host"]  # the matrix's choice
    assert cuda.container["device_flags"] == list(BUILTINS["cuda"].container["device_flags"])
    shipped = load_matrix(ROOT / "matrix.toml")
    assert shipped.cell("rocm-2gpu").container["device_env"] == {"HIP_VISIBLE_DEVICES": "{devices}"}


BAD = {
    "reserved unit sim": (
        ('unit = "card"', 'unit = "sim"'),
        ["accelerators.acme.unit", "reserved"],
    ),
    "redefining a built-in": (
        ("[accelerators.acme]", '[accelerators.cuda]\nunit = "card"\n[accelerators.acme]'),
        ["accelerators.cuda.unit", "built-in", "cannot be redefined", "my_cuda"],
    ),
    "a declaration without its unit": (
        ('unit = "card"\n', ""),
        ["unknown accelerator 'accelerators.acme'", "unit, device, backend and cells"],
    ),
    "unknown key": (
        ('plugin = "acme_torch"', 'plugins = "acme_torch"'),
        ["accelerators.acme.plugins", "Did you mean 'plugin'"],
    ),
    "unknown probe key": (
        ('{ glob = "/dev/acme[0-9]*" }', '{ globb = "/dev/acme" }'),
        ["accelerators.acme.count.globb", "Did you mean 'glob'"],
    ),
    "plugin not a module name": (
        ('plugin = "acme_torch"', 'plugin = "acme-torch"'),
        ["accelerators.acme.plugin", "not a module name"],
    ),
    "unit with digits": (('unit = "card"', 'unit = "card2"'), ["accelerators.acme.unit"]),
    "name unfit for a cell name": (
        ("[accelerators.acme]", "[accelerators.Acme]"),
        ["accelerators.Acme", "lower-case"],
    ),
    "override with a backend it does not have": (
        (
            "cells = { native = [2, 4], local = [8] }",
            'cells = { native = [2, 4] }\n[overrides."acme-2card"]\nbackend = "nccl"',
        ),
        ["overrides.acme-2card.backend", "cannot use backend 'nccl'", "acmeccl"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_declaration_is_one_line_and_exit_2(case, tmp_path, capsys):
    (old, new), words = BAD[case]
    assert old in ACME, case
    path = write(tmp_path, ACME.replace(old, new, 1))
    assert main(["matrix", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, f"{case}: {word!r} not in {err!r}"


def test_declare_refuses_a_builtin_name_directly():
    with pytest.raises(AcceleratorError, match="'gaudi' is a built-in accelerator"):
        declare("gaudi", {"device": "hpu", "backend": "hccl", "unit": "card"}, "test")


def test_probe_counts_device_nodes_capped_by_the_visible_devices_variable(tmp_path, monkeypatch):
    for i in range(3):
        (tmp_path / f"acme{i}").touch()
    (tmp_path / "acme_ctl").touch()
    (tmp_path / "vendor0").write_text("0x1234\n")
    (tmp_path / "vendor1").write_text("0x8086\n")
    accel = declare(
        "acme",
        {
            "device": "npu",
            "backend": "acmeccl",
            "unit": "card",
            "visible_devices": "ACME_VISIBLE_DEVICES",
            "count": [{"glob": str(tmp_path / "nothing*")}, {"glob": str(tmp_path / "acme[0-9]*")}],
        },
        "test",
    )
    monkeypatch.delenv("ACME_VISIBLE_DEVICES", raising=False)
    assert accelerators.probe_count(accel) == 3  # the first probe finding devices answers
    monkeypatch.setenv("ACME_VISIBLE_DEVICES", "0,2")
    assert accelerators.probe_count(accel) == 2
    by_content = declare(
        "acme2",
        {
            "device": "npu",
            "backend": "x",
            "unit": "card",
            "count": {"glob": str(tmp_path / "vendor*"), "content": ["0x8086"]},
        },
        "test",
    )
    assert accelerators.probe_count(by_content) == 1


def test_one_host_check_for_every_caller(tmp_path, monkeypatch):
    cell = load_matrix(write(tmp_path, ACME)).cell("acme-4card")
    monkeypatch.setenv("HARNESS_HOST_DEVICES", "2")
    with pytest.raises(UsageError, match="cell acme-4card needs 4 acme device"):
        hosts.check_cell(cell, use_torch=False)
    hosts.check_cell(cell, devices=["0", "1"], use_torch=False)  # a container given two
    with pytest.raises(UsageError, match="this node runs 3 rank"):
        hosts.check_cell(cell, ranks_here=3, use_torch=False)
    monkeypatch.setenv("HARNESS_HOST_DEVICES", "4")
    hosts.check_cell(cell, use_torch=False)
    hosts.check_cell(load_matrix(write(tmp_path, ACME)).cell("cpu-2rank"))  # never bound


def test_table_matrix_and_host_checks_import_no_torch(tmp_path):
    path = write(tmp_path, ACME)
    code = (
        "import sys\n"
        "from harness import accelerators, hosts\n"
        "from harness.matrix import load_matrix\n"
        f"m = load_matrix({str(path)!r})\n"
        "hosts.check_cell(m.cell('acme-2card'), use_torch=False)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "HARNESS_HOST_DEVICES": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def vendor_package(tmp_path, monkeypatch):
    """Install (on sys.path) a vendor package declaring accelerators by entry point."""

    def install(points: dict[str, str], module_text: str) -> None:
        info = tmp_path / "site" / "acme_vendor-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-vendor\nVersion: 1.0\n")
        lines = [f"{name} = {value}" for name, value in points.items()]
        (info / "entry_points.txt").write_text(
            f"[{accelerators.ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n"
        )
        (tmp_path / "site" / "acme_vendor.py").write_text(module_text)
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        monkeypatch.delitem(sys.modules, "acme_vendor", raising=False)
        accelerators.packaged.cache_clear()

    yield install
    sys.modules.pop("acme_vendor", None)
    accelerators.packaged.cache_clear()


def test_a_vendor_package_brings_its_accelerator_and_cells(vendor_package, tmp_path):
    vendor_package(
        {"acme": "acme_vendor:ACME"},
        'ACME = {"device": "npu", "backend": "acmeccl", "unit": "card",\n'
        '        "plugin": "acme_torch", "cells": {"native": [2]}}\n',
    )
    plain = 'schema = 1\n[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\n'
    plain += "cells = { native = [2] }\n"
    matrix = load_matrix(write(tmp_path, plain))
    assert matrix.names == ["cpu-2rank", "acme-2card"]  # no matrix edit
    acme = matrix.cell("acme-2card")
    assert acme.plugins == ("acme_torch",) and "acme-vendor" in acme.spec.source
    # a matrix may choose cells for it like for a built-in, but not redefine it
    chosen = plain + '[accelerators.acme]\nbackend = "acmeccl"\ncells = { native = [4] }\n'
    assert load_matrix(write(tmp_path, chosen)).names == ["cpu-2rank", "acme-4card"]
    redefined = chosen.replace('backend = "acmeccl"', 'backend = "acmeccl"\nunit = "chip"')
    with pytest.raises(
        UsageError, match=r"accelerators.acme.unit: .acme. is declared by entry point acme"
    ):
        load_matrix(write(tmp_path, redefined))


def test_a_vendor_package_cannot_take_a_builtin_name(vendor_package, tmp_path):
    vendor_package(
        {"cuda": "acme_vendor:MINE"},
        'MINE = {"device": "cuda", "backend": "nccl", "unit": "gpu", "cells": {"native": [1]}}\n',
    )
    with pytest.raises(UsageError, match="'cuda' is a built-in accelerator") as caught:
        load_matrix(ROOT / "matrix.toml")
    assert "acme-vendor" in str(caught.value)


def test_a_declared_accelerators_container_flags_reach_the_run_line(tmp_path):
    from harness import containers

    text = ACME + (
        "[accelerators.acme.container]\n"
        'dockerfile = "docker/acme.Dockerfile"\n'
        'run_flags = ["--device=/dev/acme_manager", "--ipc=host"]\n'
        'device_flags = ["--device=/dev/acme{device}"]\n'
    )
    cell = load_matrix(write(tmp_path, text)).cell("acme-2card")
    argv = containers.run_argv(
        cell, matrix_file=tmp_path / "matrix.toml", results=tmp_path, engine="docker"
    )
    line = " ".join(argv)
    assert "--device=/dev/acme_manager --ipc=host --device=/dev/acme0 --device=/dev/acme1" in line
    assert "-e HARNESS_PLUGINS=acme_torch" in line and "dtensor-harness:acme-torch" in line
    # device_flags choose the devices: no visible-devices variable on top of them
    assert "ACME_VISIBLE_DEVICES" not in line


def test_nix_reads_the_cells_harness_lists(capsys):
    """nix/project.nix takes cell names and units from this file, not from a rule of its own."""
    fields = "name,accelerator,mode,unit"
    assert (
        main(
            ["matrix", "list", "--json", "--fields", fields, "--matrix", str(ROOT / "matrix.toml")]
        )
        == 0
    )
    import json

    listed = json.loads(capsys.readouterr().out)
    committed = json.loads((ROOT / "nix" / "cells.json").read_text())
    assert committed == listed, (
        "nix/cells.json is stale; run: harness matrix list --json "
        f"--fields {fields} > nix/cells.json"
    )
    project = (ROOT / "nix" / "project.nix").read_text()
    assert '"hpu"' not in project and '"rank"' not in project  # no unit rule of its own


def test_a_container_host_check_without_probes_leaves_counting_to_the_container(
    tmp_path, monkeypatch
):
    text = ACME.replace('count = { glob = "/dev/acme[0-9]*" }\n', "")
    cell = load_matrix(write(tmp_path, text)).cell("acme-4card")
    monkeypatch.delenv("HARNESS_HOST_DEVICES", raising=False)
    hosts.check_cell(cell, use_torch=False)  # no probe, no torch asked: not refused here
    probed = load_matrix(write(tmp_path, ACME)).cell("acme-4card")  # /dev/acme* absent
    with pytest.raises(UsageError, match="needs 4 acme device"):
        hosts.check_cell(probed, use_torch=False)


def test_torch_refines_the_probe_and_the_refusal_shows_both(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from harness.devices import detected_accelerator

    if detected_accelerator() == "xpu":
        pytest.skip("this host has XPUs: torch would agree with the probe")
    for i in range(3):
        (tmp_path / f"card{i}").touch()
    text = (
        ACME.replace('device = "npu"', 'device = "xpu"')
        .replace('plugin = "acme_torch"\n', "")  # torch is asked only once plugins import
        .replace("/dev/acme[0-9]*", str(tmp_path / "card[0-9]*"))
    )
    cell = load_matrix(write(tmp_path, text)).cell("acme-2card")
    monkeypatch.delenv("HARNESS_HOST_DEVICES", raising=False)
    monkeypatch.delenv("ACME_VISIBLE_DEVICES", raising=False)
    assert hosts.device_count(cell.spec, use_torch=False) == 3  # the device nodes
    hosts.check_cell(cell, use_torch=False)  # a container brings its own torch
    with pytest.raises(UsageError, match=r"shows 0 \(torch sees 0, the device nodes 3\)"):
        hosts.check_cell(cell)  # natively, this torch has no xpu: it refines the probe
