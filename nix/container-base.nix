# The base NixOS configuration of an agent's container: hive-c0re boots it with
# `systemd-nspawn --boot` as machine h-<name> in hive-agent-<name>.service, by default in
# the host's network namespace. Import it in the agent's own configuration.
{ lib, pkgs, ... }:

{
  # Not boot.isContainer: renamed in nixos-25.11 (seed gotcha "boot.isNspawnContainer").
  boot.isNspawnContainer = true;

  # Agents share the host's network namespace unless their spec says `network =
  # "private"`, so by default the container must not configure interfaces, run DHCP or
  # load firewall rules: all of that would act on the host's own network. An agent with a
  # private network may turn these back on.
  networking.useDHCP = lib.mkDefault false;
  networking.useNetworkd = lib.mkDefault false;
  networking.firewall.enable = lib.mkDefault false;
  networking.useHostResolvConf = lib.mkDefault true;
  # Keep the hostname nspawn gives the machine (h-<name>).
  networking.hostName = lib.mkDefault "";

  # hive-c0re gives the harness unit an explicit PATH that ends in the system profile
  # (/run/current-system/sw/bin), so git and whatever the agent's configuration adds to
  # environment.systemPackages are on it (seed gotcha "systemd service PATH != host PATH").
  environment.systemPackages = [ pkgs.git ];
}
