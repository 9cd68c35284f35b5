# One `nix develop` shell: Python with the harness on the chosen torch, nox,
# pytest and ruff; or, for an accelerator Nix cannot serve, a shell that says
# which container to use and exits.
{ pkgs, project }:
{
  dev =
    {
      name,
      harness,
      extraPackages ? [ ],
      hook ? "",
    }:
    let
      python = pkgs.python3.withPackages (ps: [
        harness
        ps.pytest-xdist
        ps.pytest-timeout
        ps.hypothesis
        ps.rich
        ps.nox
      ]);
    in
    pkgs.mkShell {
      name = "dtensor-harness-${name}";
      packages = [
        python
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

  containerOnly =
    { name, what }:
    pkgs.mkShell {
      name = "dtensor-harness-${name}";
      shellHook = ''
        echo "dtensor-harness: nixpkgs has no ${what} packages; use its container: nox -s test-${project.exampleCell name} (${project.dockerfile name})" >&2
        exit 2
      '';
    };
}
