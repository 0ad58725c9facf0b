# The harness's part of an agent's container: claude-code on the system profile (so it is
# on the PATH hive-c0re gives the harness unit). claude-code is unfree: it alone is
# allowed, by name (seed gotcha "claude-code is unfree"). The flake's
# nixosModules.harness-base adds overlays.claude-unstable so that pkgs.claude-code is
# nixpkgs-unstable's; stable lags too far behind.
{ lib, pkgs, ... }:

{
  nixpkgs.config.allowUnfreePredicate =
    pkg:
    builtins.elem (lib.getName pkg) [
      "claude-code"
    ];

  environment.systemPackages = [ pkgs.claude-code ];
}
