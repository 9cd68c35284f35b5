"""flake.nix, checked as far as a machine without nixpkgs allows.

These are STRUCTURE CHECKS, NOT BUILDS: nixpkgs cannot be fetched here, so the
flake's outputs are evaluated with its nixpkgs input replaced by a small
stand-in (tests/nix/stub-nixpkgs, via --override-input). They show that the
shells, package and checks exist with the right names, torch variants, tools
and unfree policy. A real `nix develop` is not run here (docs/nix.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "tests" / "nix" / "stub-nixpkgs"
SYSTEMS = ("x86_64-linux", "aarch64-linux", "aarch64-darwin")
SHELLS = {"default", "cuda", "rocm", "xpu", "gaudi"}
CUDA_NAMES = {"cuda_cudart", "cudnn", "libcublas", "libcusparse_lt", "libnvjitlink", "nccl"}
# What the flake needs from the checkout to evaluate.
FLAKE_FILES = ("flake.nix", "flake.lock", "nix", "pyproject.toml", "matrix.toml", "harness")

needs_nix = pytest.mark.needs("nix")  # skip reason and HARNESS_REQUIRE: conftest.py


class Nix:
    """nix with a private store, HOME and empty registry: offline, never hangs."""

    def __init__(self, tmp: Path, flake: Path, stub: Path):
        self.flake, self.stub = flake, stub
        (tmp / "home").mkdir()
        registry = tmp / "registry.json"
        registry.write_text('{"flakes": [], "version": 2}')
        self.env = {
            **os.environ,
            "HOME": str(tmp / "home"),
            "XDG_CACHE_HOME": str(tmp / "home" / ".cache"),
            "NIX_CONFIG": "\n".join(
                [
                    "experimental-features = nix-command flakes",
                    "substituters =",
                    f"flake-registry = {registry}",
                    "build-users-group =",
                    "sandbox = false",
                ]
            ),
        }
        self.env.pop("NIX_REMOTE", None)
        self.store = f"local?root={tmp / 'store'}"

    def run(self, *args: str, stub: Path | None = None) -> subprocess.CompletedProcess:
        override = ["--override-input", "nixpkgs", f"path:{stub or self.stub}"]
        cmd = ["nix", "--store", self.store, *args, "--offline", "--no-write-lock-file", *override]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=45)

    def eval(self, attr: str, apply: str | None = None, stub: Path | None = None):
        extra = ["--apply", apply] if apply else []
        out = self.run("eval", "--json", f"path:{self.flake}#{attr}", *extra, stub=stub)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def nix(tmp_path_factory) -> Nix:
    tmp = tmp_path_factory.mktemp("flake")
    flake = tmp / "flake"
    flake.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*FLAKE_FILES, "README.md", "LICENSE"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, flake / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, flake / name)
    return Nix(tmp, flake, STUB)


@pytest.fixture(scope="module")
def shells(nix) -> dict:
    """Every system's shells: name, closure of package names, torch variant, hook."""
    summary = """shells: builtins.mapAttrs (n: s: {
        name = s.name;
        closure = s.closureNames;
        torch = (s.torch or { variant = null; }).variant;
        hook = s.shellHook;
      }) shells"""
    return {system: nix.eval(f"devShells.{system}", summary) for system in SYSTEMS}


@needs_nix
def test_flake_nix_parses():
    for path in [ROOT / "flake.nix", *sorted((ROOT / "nix").glob("*.nix"))]:
        out = subprocess.run(
            ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, f"{path.name}: {out.stderr}"


def test_lock_pins_the_nixpkgs_branch_flake_nix_names():
    lock = json.loads((ROOT / "flake.lock").read_text())
    node = lock["nodes"][lock["nodes"][lock["root"]]["inputs"]["nixpkgs"]]
    locked, original = node["locked"], node["original"]
    assert locked["type"] == "github" and (locked["owner"], locked["repo"]) == ("NixOS", "nixpkgs")
    assert len(locked["rev"]) == 40 and int(locked["rev"], 16) >= 0
    assert locked["narHash"].startswith("sha256-") and len(locked["narHash"]) == 51
    url = f"github:{original['owner']}/{original['repo']}/{original['ref']}"
    assert f'inputs.nixpkgs.url = "{url}";' in (ROOT / "flake.nix").read_text()


def test_flake_files_are_tracked_by_git():
    """Flakes see git-tracked files only: an untracked nix/*.nix breaks every user."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    files = ["flake.nix", "flake.lock", *(f"nix/{p.name}" for p in (ROOT / "nix").glob("*.nix"))]
    out = subprocess.run(
        ["git", "ls-files", "--error-unmatch", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, f"git add these, or nix will not see them: {out.stderr}"


@needs_nix
def test_structure_every_system_has_the_shells_package_and_checks(nix):
    from harness._version import __version__

    for system in SYSTEMS:
        assert set(nix.eval(f"devShells.{system}", "builtins.attrNames")) == SHELLS
        package = nix.eval(f"packages.{system}.default", "p: { inherit (p) pname version; }")
        assert package == {"pname": "dtensor-harness", "version": __version__}
        assert set(nix.eval(f"checks.{system}", "builtins.attrNames")) == {"package", "tests"}


@needs_nix
def test_structure_nix_flake_check_without_building(nix):
    out = nix.run("flake", "check", "--no-build", f"path:{nix.flake}")
    assert out.returncode == 0, out.stderr


@needs_nix
def test_structure_each_shell_has_its_torch_and_the_tools(shells):
    linux = shells["x86_64-linux"]
    assert {name: linux[name]["torch"] for name in ("default", "cuda", "rocm")} == {
        "default": "cpu",
        "cuda": "cuda-bin",  # torch-bin, NVIDIA's prebuilt wheel: no source build
        "rocm": "rocm",
    }
    for name in ("default", "cuda", "rocm"):
        # dtensor-harness provides `harness`; nox and pytest come in the same env.
        assert {"dtensor-harness", "nox", "pytest", "ruff"} <= set(linux[name]["closure"])
    # CUDA wheels and ROCm are x86_64-linux only: elsewhere those shells point away.
    assert shells["aarch64-darwin"]["cuda"]["torch"] is None
    assert shells["aarch64-darwin"]["default"]["torch"] == "cpu"


@needs_nix
def test_structure_unfree_is_admitted_for_cuda_packages_only(nix, shells):
    probe = ["cuda_cudart", "libcublas", "cudnn", "libnvjitlink", "torch", "vscode", "steam"]
    verdicts = nix.eval(
        "lib.allowUnfreeCuda",
        f"p: map (n: p {{ pname = n; }}) [ {' '.join(map(json.dumps, probe))} ]",
    )
    assert dict(zip(probe, verdicts)) == {
        **{name: True for name in probe[:5]},
        "vscode": False,
        "steam": False,
    }
    # The stand-in, like nixpkgs, refuses unfree packages that config does not admit:
    # cuda evaluated (so the predicate let CUDA in), the others carry no CUDA at all.
    assert CUDA_NAMES <= set(shells["x86_64-linux"]["cuda"]["closure"])
    for name in ("default", "rocm"):
        assert not CUDA_NAMES & set(shells["x86_64-linux"][name]["closure"])


@needs_nix
@pytest.mark.parametrize(
    "system, accelerator",
    [
        ("x86_64-linux", "xpu"),
        ("x86_64-linux", "gaudi"),
        ("aarch64-darwin", "cuda"),
        ("aarch64-linux", "rocm"),
    ],
)
def test_container_only_shells_name_a_real_session_and_exit_2(shells, system, accelerator):
    from harness.matrix import load_matrix

    hook = shells[system][accelerator]["hook"]
    out = subprocess.run(["bash", "-c", hook], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    session = line.split("nox -s ")[1].split()[0]
    matrix = load_matrix(ROOT / "matrix.toml")
    assert session in {cell.session for cell in matrix.cells}
    dockerfile = matrix.select(accelerator)[0].container["dockerfile"]
    assert f"({dockerfile})" in line


@needs_nix
def test_dev_shell_hook_uses_the_checkout_it_is_opened_in(shells, tmp_path):
    hook = shells["x86_64-linux"]["default"]["hook"]
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "__init__.py").touch()
    (tmp_path / "pyproject.toml").touch()
    script = f'unset PYTHONPATH\n{hook}\necho "PYTHONPATH=$PYTHONPATH"'
    out = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"PYTHONPATH={tmp_path}"
    assert "torch 2.13.0" in out.stderr  # the stand-in's torch, reported by the shell


@needs_nix
def test_cuda_shell_tells_a_non_nixos_host_how_to_reach_its_driver(shells, tmp_path):
    if Path("/run/opengl-driver/lib/libcuda.so.1").exists():
        pytest.skip("this host is NixOS with a driver: the hint is not shown")
    hook = shells["x86_64-linux"]["cuda"]["hook"]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    out = subprocess.run(
        ["bash", "-c", hook], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert "harness run cuda-1gpu" in out.stderr
    assert "nixglhost" in out.stderr or "numtide/nix-gl-host" in out.stderr


@needs_nix
def test_checks_run_the_kits_cpu_suite_without_slow_tests(nix):
    script = nix.eval("checks.x86_64-linux.tests.script")
    assert 'python -m pytest tests -m "not slow"' in script


@needs_nix
def test_a_too_old_torch_in_nixpkgs_is_refused_with_the_fix(nix, tmp_path):
    old = tmp_path / "old-nixpkgs"
    shutil.copytree(STUB, old)
    default = old / "default.nix"
    text = default.read_text()
    assert 'torchVersion = "2.13.0";' in text
    # below pyproject's floor (torch>=2.7)
    default.write_text(text.replace('torchVersion = "2.13.0";', 'torchVersion = "2.6.0";'))
    out = nix.run("eval", "--raw", f"path:{nix.flake}#packages.x86_64-linux.default.name", stub=old)
    assert out.returncode != 0
    message = out.stderr
    assert "torch 2.6.0" in message and ">= 2.7" in message
    assert "nix flake update nixpkgs" in message


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
