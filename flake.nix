{
  description = "hyperhive: a hive of AI agents, each a transient systemd unit running a systemd-nspawn container";

  inputs = {
    # boot.isNspawnContainer (nix/container-base.nix) needs nixos-25.11 or later.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    # Only for claude-code (overlays.claude-unstable): stable lags too far behind.
    nixpkgs-unstable.url = "github:NixOS/nixpkgs/nixos-unstable";
  };

  outputs =
    {
      self,
      nixpkgs,
      nixpkgs-unstable,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packageOf = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system}.default;
    in
    {
      # hive-c0re and hivectl, with their units under lib/systemd/system, share/dbus-1/system.d,
      # lib/tmpfiles.d and lib/sysusers.d, man pages and bash/zsh/fish completions.
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      # services.hyperhive. Its package defaults to nix/package.nix built with the host's pkgs.
      nixosModules = {
        default = {
          imports = [ ./nix/module.nix ];
          # An agent's `config` is evaluated with these (claude-code from unstable).
          services.hyperhive.agentBaseModules = [
            self.nixosModules.container-base
            self.nixosModules.harness-base
          ];
        };
        # For agents' container configurations.
        container-base = ./nix/container-base.nix;
        harness-base = {
          imports = [ ./nix/harness-base.nix ];
          nixpkgs.overlays = [ self.overlays.claude-unstable ];
        };
      };

      # pkgs.claude-code from nixpkgs-unstable. Unstable is imported with its own allow-list:
      # the host's nixpkgs.config does not reach this import, and claude-code is unfree.
      overlays.claude-unstable = final: prev: {
        claude-code =
          (import nixpkgs-unstable {
            inherit (prev.stdenv.hostPlatform) system;
            config.allowUnfreePredicate =
              pkg:
              builtins.elem (prev.lib.getName pkg) [
                "claude-code"
              ];
          }).claude-code;
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ (packageOf pkgs) ];
          packages = [
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            # xmllint, for scripts/verify-units.
            pkgs.libxml2
          ];
        };
      });

      checks = forAllSystems (pkgs: {
        package = packageOf pkgs;

        # Boots NixOS with the module enabled: the daemon starts from the package's unit and
        # hivectl sees the declared agent.
        vm = pkgs.testers.runNixOSTest {
          name = "hyperhive";
          nodes.machine = {
            imports = [ self.nixosModules.default ];
            services.hyperhive = {
              enable = true;
              package = packageOf pkgs;
              adminUsers = [ "alice" ];
              agents.demo = {
                root = "/";
                volatile = "yes";
                memory_max = "512M";
                env.GREETING = "hello";
                bind = [
                  "/srv/data:/data:ro"
                  {
                    source = "/srv/a:b";
                    target = "/mnt/ab";
                    readonly = true;
                  }
                ];
              };
              # A NixOS agent: its own configuration, booted from the store.
              agents.nixos.config =
                { pkgs, ... }:
                {
                  environment.systemPackages = [ pkgs.hello ];
                };
            };
            users.users.alice.isNormalUser = true;
            # The same host with one more package in the agent: switching to it changes
            # the agent's system, which hive-c0re's reload switches in place.
            specialisation.more.configuration = {
              services.hyperhive.agents.nixos.config =
                { pkgs, ... }:
                {
                  environment.systemPackages = [ pkgs.jq ];
                };
            };
          };
          testScript = ''
            machine.wait_for_unit("hive-c0re.service")

            listing = machine.succeed("hivectl list")
            assert "demo" in listing, listing
            machine.succeed("hivectl list --json | grep -F hive-agent-demo.service")

            machine.succeed("grep -Fx 'root = \"/\"' /etc/hyperhive/agents/demo.toml")
            machine.succeed("grep -Fx 'volatile = \"yes\"' /etc/hyperhive/agents/demo.toml")

            # The package's unit, with ExecStart= rewritten and the module's drop-in.
            machine.succeed("systemctl show -P ExecStart hive-c0re.service | grep -F /nix/store/")
            machine.succeed("systemctl show -P Environment hive-c0re.service | grep -F HYPERHIVE_GIT=/nix/store/")
            machine.succeed("systemctl show -P RuntimeDirectoryPreserve hive-c0re.service | grep -Fx yes")

            machine.succeed("getent group hive-admin | grep -w alice")
            machine.succeed("test -d /var/lib/hyperhive/agents")
            machine.succeed("man -w hivectl-create")

            # The NixOS agent: booted from the store as h-nixos, its GC root present, its
            # harness up inside.
            machine.wait_until_succeeds("machinectl list --no-legend | grep -w h-nixos", timeout=120)
            machine.wait_until_succeeds("systemctl -M h-nixos is-active hive-harness.service", timeout=60)
            system = machine.succeed("readlink /nix/var/nix/gcroots/hyperhive/nixos").strip()
            assert "nixos-system" in system, system
            machine.succeed("grep -F 'system = \"' /etc/hyperhive/agents/nixos.toml")
            run = "systemd-run -M h-nixos --wait --pipe --quiet -- "
            machine.succeed(run + "/run/current-system/sw/bin/hello")
            machine.fail(run + "/run/current-system/sw/bin/jq --version")
            before = machine.succeed("systemctl show -P InvocationID hive-agent-nixos.service")

            # Change its packages: the host switches, hive-c0re reloads and switches the
            # agent in place (same InvocationID), its GC root follows.
            machine.succeed("/run/current-system/specialisation/more/bin/switch-to-configuration test")
            machine.wait_until_succeeds(run + "/run/current-system/sw/bin/jq --version", timeout=120)
            after = machine.succeed("systemctl show -P InvocationID hive-agent-nixos.service")
            assert before == after, (before, after)
            machine.succeed(f"test \"$(readlink /nix/var/nix/gcroots/hyperhive/nixos)\" != {system}")
            machine.succeed("systemctl -M h-nixos is-active hive-harness.service")
          '';
        };
      });
    };
}
