# The few nixpkgs.lib functions the flake uses, written with builtins only.
let
  hasPrefix = pre: s: builtins.substring 0 (builtins.stringLength pre) s == pre;
in
{
  inherit hasPrefix;
  genAttrs =
    names: f:
    builtins.listToAttrs (
      map (n: {
        name = n;
        value = f n;
      }) names
    );
  getName = x: x.pname or (builtins.parseDrvName x.name).name;
  versionAtLeast = v: min: builtins.compareVersions v min >= 0;
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  any = builtins.any;
  concatStringsSep = builtins.concatStringsSep;
  licenses.bsd3 = {
    shortName = "bsd3";
    free = true;
  };
}
