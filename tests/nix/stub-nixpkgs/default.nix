# `import nixpkgs { system; config; }` for the stand-in. Like nixpkgs, it
# refuses to evaluate an unfree package unless `config` admits it, so the
# flake's unfree predicate is exercised, not just defined.
{
  system ? builtins.currentSystem,
  config ? { },
  overlays ? [ ],
}:
let
  lib = import ./lib.nix;
  # Minimum torch the stand-in claims to carry; tests copy the stub and edit
  # this line to check the flake's version guard.
  torchVersion = "2.13.0";

  admitted =
    pkg:
    !(pkg.meta.unfree or false)
    || (config.allowUnfree or false)
    || (config.allowUnfreePredicate or (_: false)) pkg;

  refuse =
    pkg:
    throw "stub-nixpkgs: package '${lib.getName pkg}' has an unfree license, refusing to evaluate (config does not admit it)";

  # A real derivation (so `nix flake check --no-build` sees the right types)
  # whose builder fails: the stand-in never builds anything.
  mkPkg =
    attrs:
    let
      pkg =
        derivation {
          inherit system;
          name = attrs.name or "${attrs.pname}-${attrs.version or "0"}";
          builder = "/bin/sh";
          args = [
            "-c"
            "echo 'stub-nixpkgs builds nothing: this is a structure check' >&2; exit 1"
          ];
        }
        // attrs
        # nixpkgs merges passthru into the package; so does the stand-in.
        // (attrs.passthru or { });
    in
    if admitted pkg then pkg else refuse pkg;

  # Names of a package and everything it pulls in, forcing the unfree check
  # on each, as instantiating it in real nixpkgs would.
  closure =
    pkgs:
    builtins.concatMap (
      p:
      [ (lib.getName p) ]
      ++ closure ((p.dependencies or [ ]) ++ (p.buildInputs or [ ]) ++ (p.packages or [ ]))
    ) pkgs;

  cudaPackages = builtins.listToAttrs (
    map
      (n: {
        name = n;
        value = mkPkg {
          pname = n;
          version = "12.9";
          meta.unfree = n != "nccl";
        };
      })
      [
        "cuda_cudart"
        "cuda_cupti"
        "cuda_nvrtc"
        "cuda_nvtx"
        "cudnn"
        "libcublas"
        "libcufft"
        "libcufile"
        "libcurand"
        "libcusolver"
        "libcusparse"
        "libcusparse_lt"
        "libnvjitlink"
        "nccl"
      ]
  );

  pyPkg =
    pname: extra:
    mkPkg (
      {
        inherit pname;
        version = "1.0";
      }
      // extra
    );

  ps = {
    buildPythonPackage =
      attrs:
      assert attrs ? src && attrs ? version && attrs ? pname;
      mkPkg attrs;
    setuptools = pyPkg "setuptools" { };
    pytest = pyPkg "pytest" { };
    pytest-xdist = pyPkg "pytest-xdist" { };
    pytest-timeout = pyPkg "pytest-timeout" { };
    expecttest = pyPkg "expecttest" { };
    pyyaml = pyPkg "pyyaml" { };
    jsonschema = pyPkg "jsonschema" { };
    python-hostlist = pyPkg "python-hostlist" { };
    hypothesis = pyPkg "hypothesis" { };
    rich = pyPkg "rich" { };
    nox = pyPkg "nox" { };
    torch = pyPkg "torch" {
      version = torchVersion;
      variant = "cpu";
    };
    torchWithRocm = pyPkg "torch" {
      version = torchVersion;
      variant = "rocm";
    };
    # Like nixpkgs' torch-bin: a prebuilt CUDA wheel, unfree, linked to CUDA.
    torch-bin = pyPkg "torch" {
      version = torchVersion;
      variant = "cuda-bin";
      meta.unfree = true;
      buildInputs = builtins.attrValues cudaPackages;
    };
  };

  python3 = {
    pname = "python3";
    version = "3.13.5";
    pythonVersion = "3.13";
    pkgs = ps;
    withPackages =
      f:
      let
        chosen = f ps;
      in
      mkPkg {
        name = "python3-3.13.5-env";
        packages = chosen;
        closureNames = closure chosen;
      };
  };
in
{
  inherit lib system config cudaPackages python3;
  python3Packages = ps;
  ruff = mkPkg { pname = "ruff"; version = "1.0"; };
  git = mkPkg { pname = "git"; version = "2.50"; };
  mkShell =
    attrs:
    mkPkg (
      attrs
      // {
        name = attrs.name or "nix-shell";
        closureNames = closure (attrs.packages or [ ]);
      }
    );
  runCommand =
    name: env: script:
    mkPkg (env // { inherit name script; });
}
