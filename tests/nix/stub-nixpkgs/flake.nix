# A stand-in for nixpkgs, for tests/test_flake.py only: just enough attributes
# for dtensor-harness' flake to evaluate where nixpkgs cannot be fetched. It
# proves the flake's outputs exist with the right names and inputs; it builds
# nothing (every derivation's builder fails on purpose).
{
  description = "stub nixpkgs for a structure check of dtensor-harness' flake";

  outputs = _: {
    lib = import ./lib.nix;
  };
}
