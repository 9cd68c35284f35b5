# dtensor-harness as a Python package, built from this repository against
# the torch a shell chooses (CPU, CUDA wheel or ROCm).
{
  lib,
  python,
  torch,
  project,
}:
let
  ps = python.pkgs;
in
if !(lib.versionAtLeast torch.version project.minTorch) then
  throw "dtensor-harness: this nixpkgs has torch ${torch.version}, the kit needs torch >= ${project.minTorch} (pyproject.toml): run `nix flake update nixpkgs` or point the nixpkgs input at a newer revision"
else
  ps.buildPythonPackage {
    inherit (project) pname version src;
    pyproject = true;
    build-system = [ ps.setuptools ];
    dependencies = [
      torch
      ps.pytest
      ps.expecttest
      ps.pyyaml # harness ci
      ps.jsonschema # matrix.toml's schema (harness.matrix_schema)
      ps.python-hostlist # Slurm node lists (harness.ranks.launch)
    ];
    # checks.<system>.tests runs the suite; the package only proves it imports.
    doCheck = false;
    pythonImportsCheck = [
      "harness"
      "harness.matrix"
    ];
    passthru = { inherit torch; };
    meta = {
      description = "A public, versioned kit for testing PyTorch DTensor on every accelerator";
      license = lib.licenses.bsd3;
      mainProgram = "harness";
    };
  }
