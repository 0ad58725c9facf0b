# The base NixOS configuration of an agent's container: hive-c0re boots it with
# `systemd-nspawn --boot` as machine h-<name> in hive-agent-<name>.service, by default in
# a network namespace of its own with only lo. Import it in the agent's own configuration.
{ lib, pkgs, ... }:

{
  # Not boot.isContainer: renamed in nixos-25.11 (seed gotcha "boot.isNspawnContainer").
  boot.isNspawnContainer = true;

  # An agent's namespace has only lo (there is nothing to configure), and one whose spec
  # says `network = "host"` shares the host's, where interfaces, DHCP and firewall rules
  # would act on the host's own network: either way the container configures none.
  networking.useDHCP = lib.mkDefault false;
  networking.useNetworkd = lib.mkDefault false;
  networking.firewall.enable = lib.mkDefault false;
  networking.useHostResolvConf = lib.mkDefault true;
  # Keep the hostname nspawn gives the machine (h-<name>).
  networking.hostName = lib.mkDefault "";
  # Nothing to wait for in a namespace with only lo: wait-online would hold the boot.
  systemd.network.wait-online.enable = lib.mkDefault false;

  # hive-c0re gives the harness unit an explicit PATH that ends in the system profile
  # (/run/current-system/sw/bin), so git and whatever the agent's configuration adds to
  # environment.systemPackages are on it (seed gotcha "systemd service PATH != host PATH").
  environment.systemPackages = [ pkgs.git ];
}
