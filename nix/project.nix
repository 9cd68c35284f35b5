# Facts the flake reads from the repository instead of writing them twice:
# the version, the lowest torch the kit works with (pyproject.toml), the cells
# (nix/cells.json, made by `harness matrix list`) and the Dockerfiles of the
# accelerators Nix cannot serve (matrix.toml).
{ root }:
let
  inherit (builtins)
    filter
    fromTOML
    head
    match
    readFile
    ;
  pyproject = fromTOML (readFile (root + "/pyproject.toml"));
  matrix = fromTOML (readFile (root + "/matrix.toml"));

  torchRequirement = head (
    filter (d: match "torch[ ]*>=.*" d != null) pyproject.project.dependencies ++ [ "torch>=0" ]
  );

  # The cells as `harness matrix list --json --fields name,accelerator,mode,unit`
  # prints them (nix/cells.json; tests/test_accelerators.py keeps it in step):
  # cell names and units are harness.matrix's rule, not repeated here.
  cells = builtins.fromJSON (readFile (root + "/nix/cells.json"));

  # First native cell of an accelerator (overrides that drop cells are applied).
  exampleCell =
    accelerator:
    (head (filter (c: c.accelerator == accelerator && c.mode == "native") cells)).name;
in
{
  pname = pyproject.project.name;
  version = head (match ''.*__version__ = "([^"]+)".*'' (readFile (root + "/harness/_version.py")));
  minTorch = head (match "torch[ ]*>=[ ]*([0-9.]+).*" torchRequirement);
  inherit exampleCell;
  dockerfile = accelerator: matrix.accelerators.${accelerator}.container.dockerfile;

  # The package's sources: what setuptools reads, nothing else, so editing
  # docs or tests does not rebuild the package.
  src = builtins.path {
    path = root;
    name = "dtensor-harness-src";
    filter =
      path: type:
      let
        rel = builtins.substring (builtins.stringLength (toString root) + 1) (-1) (toString path);
        base = baseNameOf path;
      in
      base != "__pycache__"
      && (
        builtins.elem rel [
          "pyproject.toml"
          "README.md"
          "LICENSE"
          "harness"
        ]
        || builtins.substring 0 8 rel == "harness/"
      );
  };
}
