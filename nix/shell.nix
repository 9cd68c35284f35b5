# One `nix develop` shell: Python with the harness on the chosen torch, nox,
# pytest and ruff; or, for an accelerator Nix cannot serve, a shell that says
# which container to use and exits.
{ pkgs, project }:
rec {
  # The interpreter of a shell and of checks.tests: harness (so `harness` on
  # PATH), its test extras, and nox.
  pythonWith =
    harness:
    pkgs.python3.withPackages (ps: [
      harness
      ps.pytest-xdist
      ps.pytest-timeout
      ps.hypothesis
      ps.rich
      ps.nox
    ]);

  dev =
    {
      name,
      harness,
      extraPackages ? [ ],
      hook ? "",
    }:
    pkgs.mkShell {
      name = "dtensor-harness-${name}";
      packages = [
        (pythonWith harness)
        pkgs.ruff
        pkgs.git
      ]
      ++ extraPackages;
      passthru = {
        inherit harness;
        torch = harness.torch;
      };
      shellHook = ''
        # Opened in the checkout: import the working tree, not the store copy,
        # so edits need no rebuild (the store copy still provides `harness`).
        if [ -f harness/__init__.py ] && [ -f pyproject.toml ]; then
          export PYTHONPATH="$PWD''${PYTHONPATH:+:$PYTHONPATH}"
        fi
        ${hook}
        echo "dtensor-harness ${name} shell: torch ${harness.torch.version} from nixpkgs; try: harness matrix list" >&2
      '';
    };

  # `why` completes "dtensor-harness: ...; use its container: ...".
  containerOnly =
    { name, why }:
    pkgs.mkShell {
      name = "dtensor-harness-${name}";
      shellHook = ''
        echo "dtensor-harness: ${why}; use its container: nox -s test-${project.exampleCell name} (${project.dockerfile name})" >&2
        exit 2
      '';
    };
}
