# The cuda shell's allowUnfreePredicate: NVIDIA's CUDA libraries and the
# prebuilt torch wheel that links them, nothing else. Every other shell
# evaluates nixpkgs with no unfree package allowed.
{ lib }:
let
  prefixes = [
    "cuda" # cuda_cudart, cuda_nvrtc, cuda_cupti, cudatoolkit, ...
    "cudnn"
    "libcu" # libcublas, libcufft, libcurand, libcusolver, libcusparse(_lt), ...
    "libnv" # libnvjitlink, libnvshmem, ...
    "cusparselt"
    "cutensor"
    "nccl"
  ];
in
pkg:
let
  name = lib.getName pkg;
in
# torch-bin is the CUDA wheel: its license lists CUDA's EULA.
name == "torch" || lib.any (p: lib.hasPrefix p name) prefixes
