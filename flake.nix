{
  description = "dtensor-harness: `nix develop` shells per accelerator (cpu, cuda, rocm; xpu and gaudi point to their containers)";

  # Pinned by flake.lock; docs/nix.md says where the pin came from and how to move it.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      project = import ./nix/project.nix { root = ./.; };
      allowUnfreeCuda = import ./nix/unfree.nix { inherit lib; };

      # CUDA wheels and ROCm are Linux x86_64; elsewhere those shells say so.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
      ];
      gpuSystems = [ "x86_64-linux" ];

      perSystem =
        system:
        let
          # No unfree package anywhere but in the cuda shell's nixpkgs.
          pkgs = import nixpkgs { inherit system; };
          cudaPkgs = import nixpkgs {
            inherit system;
            config.allowUnfreePredicate = allowUnfreeCuda;
          };
          harnessWith =
            p: torch:
            import ./nix/harness.nix {
              inherit lib project torch;
              python = p.python3;
            };
          shells = import ./nix/shell.nix { inherit pkgs project; };
          cudaShells = import ./nix/shell.nix {
            pkgs = cudaPkgs;
            inherit project;
          };
          harness = harnessWith pkgs pkgs.python3.pkgs.torch;
          onGpuSystem = builtins.elem system gpuSystems;
          notHere =
            name:
            shells.containerOnly {
              inherit name;
              why = "the ${name} shell is built for ${lib.concatStringsSep ", " gpuSystems}, not ${system}";
            };
        in
        {
          packages.default = harness;

          devShells = {
            default = shells.dev {
              name = "cpu";
              inherit harness;
            };
            # torch-bin: NVIDIA's prebuilt wheel, so no hours-long CUDA build of torch.
            cuda =
              if onGpuSystem then
                cudaShells.dev {
                  name = "cuda";
                  harness = harnessWith cudaPkgs cudaPkgs.python3.pkgs.torch-bin;
                  # nix-gl-host is numtide's flake, not found in nixpkgs; used if nixpkgs has it.
                  extraPackages = lib.optionals (cudaPkgs ? nix-gl-host) [ cudaPkgs.nix-gl-host ];
                  hook = ''
                    if [ ! -e /run/opengl-driver/lib/libcuda.so.1 ]; then
                      glhost="nixglhost"
                      command -v nixglhost >/dev/null || glhost="nix run github:numtide/nix-gl-host --"
                      echo "dtensor-harness: no /run/opengl-driver (not NixOS?): run GPU commands as \`$glhost harness run ${project.exampleCell "cuda"}\` so torch finds the host's libcuda" >&2
                    fi
                  '';
                }
              else
                notHere "cuda";
            rocm =
              if onGpuSystem then
                shells.dev {
                  name = "rocm";
                  harness = harnessWith pkgs (
                    pkgs.python3.pkgs.torchWithRocm or (pkgs.python3.pkgs.torch.override {
                      rocmSupport = true;
                      cudaSupport = false;
                    })
                  );
                }
              else
                notHere "rocm";
            xpu = shells.containerOnly {
              name = "xpu";
              why = "nixpkgs has no Intel XPU packages";
            };
            gaudi = shells.containerOnly {
              name = "gaudi";
              why = "nixpkgs has no Intel Gaudi packages";
            };
          };

          checks = {
            package = harness;
            # The kit's own CPU suite, as CI runs it: everything not marked slow.
            tests =
              pkgs.runCommand "dtensor-harness-tests"
                {
                  nativeBuildInputs = [
                    (shells.pythonWith harness)
                    pkgs.git
                  ];
                }
                ''
                  cp -r ${self} source
                  chmod -R u+w source
                  cd source
                  export HOME="$TMPDIR" OMP_NUM_THREADS=1
                  python -m pytest tests -m "not slow" -q
                  touch $out
                '';
          };
        };

      bySystem = lib.genAttrs systems perSystem;
      pick = attr: lib.genAttrs systems (system: bySystem.${system}.${attr});
    in
    {
      packages = pick "packages";
      devShells = pick "devShells";
      checks = pick "checks";
      # For tests and for other flakes that want the same unfree policy.
      lib = {
        inherit allowUnfreeCuda;
        inherit (project) minTorch version;
      };
    };
}
