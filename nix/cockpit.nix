# hyperhive's Cockpit page (cockpit/hyperhive/: plain HTML/JS on cockpit.js, no build
# step), installed where Cockpit looks for packages when services.cockpit is on: the system
# path's share/cockpit/hyperhive, NixOS's counterpart of /usr/share/cockpit/hyperhive. The
# page talks to the system bus as the logged-in user, so the D-Bus policy and hive-c0re's
# own checks (root and hive-admin) are its only access rules.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  page = pkgs.runCommand "hyperhive-cockpit" { } ''
    mkdir -p $out/share/cockpit
    cp -r ${../cockpit/hyperhive} $out/share/cockpit/hyperhive
  '';
in
{
  config =
    lib.mkIf (config.services.hyperhive.enable && (config.services.cockpit.enable or false))
      {
        environment.systemPackages = [ page ];
        environment.pathsToLink = [ "/share/cockpit" ];
      };
}
