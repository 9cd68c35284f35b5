# Facts the flake reads from the repository instead of writing them twice:
# the version, the lowest torch the kit works with (pyproject.toml), the cells
# and Dockerfiles of the accelerators Nix cannot serve (matrix.toml).
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

  # First native cell of an accelerator that overrides do not drop, named as
  # harness.matrix names it.
  exampleCell =
    accelerator:
    let
      spec = matrix.accelerators.${accelerator};
      unit = if accelerator == "gaudi" then "hpu" else if accelerator == "cpu" then "rank" else "gpu";
      name = n: "${accelerator}-${toString n}${unit}";
      kept = filter (n: !((matrix.overrides or { }).${name n}.drop or false)) spec.cells.native;
    in
    name (head (kept ++ spec.cells.native));
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
