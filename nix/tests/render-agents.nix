# Evaluates nix/module.nix with nixpkgs' own lib (the module system, the real option types)
# and returns the spec files it renders under /etc/hyperhive/agents, as JSON-ready values.
# Only the NixOS options the module sets are declared here, as typed stubs; an agent's
# `config` is evaluated with the real nix/container-base.nix and nix/harness-base.nix
# against typed stubs of the NixOS options they set, into a stand-in toplevel path that
# depends on its packages. Assertions fail as NixOS fails them (top-level.nix).
# xtask/tests/nix_module.rs runs each case:
#   nix-instantiate --eval --strict --json nix/tests/render-agents.nix \
#     --arg lib 'import <nixpkgs lib>' --argstr case good
{
  lib,
  case ? "good",
}:

let
  inherit (lib) mkOption types;

  # A package as the module system sees one: a derivation with an out path.
  fakePackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  };
  pkgs = {
    callPackage = _: _: fakePackage "hyperhive";
    git = fakePackage "git";
    ripgrep = fakePackage "ripgrep";
    jq = fakePackage "jq";
    claude-code = fakePackage "claude-code";
    # nix/cockpit.nix builds the page with it; the stand-in keeps the build script.
    runCommand = name: _: script: fakePackage name // { inherit script; };
    # The real one writes a TOML file in the store; this keeps the value for the test.
    formats.toml = _: {
      generate = name: value: {
        outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" (builtins.toJSON value))}-${name}";
        inherit value;
      };
    };
  };

  # The host's NixOS options nix/module.nix sets, with their NixOS types.
  hostStubs = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment.pathsToLink = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      services.cockpit.enable = mkOption {
        type = types.bool;
        default = false;
      };
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule { options.source = mkOption { type = types.path; }; });
        default = { };
      };
      boot.kernel.sysctl = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.str types.int ]));
        default = { };
      };
      systemd.packages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      systemd.tmpfiles.packages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      services.dbus.packages = mkOption {
        type = types.listOf types.path;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf (
          types.submodule {
            options = {
              wantedBy = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              path = mkOption {
                type = types.listOf (types.oneOf [ types.package types.str ]);
                default = [ ];
              };
              environment = mkOption {
                type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
                default = { };
              };
              reloadTriggers = mkOption {
                type = types.listOf (types.oneOf [ types.str types.path types.package types.attrs ]);
                default = [ ];
              };
              restartTriggers = mkOption {
                type = types.listOf (types.oneOf [ types.str types.path types.package types.attrs ]);
                default = [ ];
              };
            };
          }
        );
        default = { };
      };
      users.groups = mkOption {
        type = types.attrsOf (types.submodule {
          options.members = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        });
        default = { };
      };
    };
  };

  # The container's NixOS options the base modules set.
  containerStubs = {
    options = {
      boot.isNspawnContainer = mkOption { type = types.bool; default = false; };
      networking.useDHCP = mkOption { type = types.bool; default = true; };
      networking.useNetworkd = mkOption { type = types.bool; default = false; };
      networking.firewall.enable = mkOption { type = types.bool; default = true; };
      networking.useHostResolvConf = mkOption { type = types.bool; default = false; };
      systemd.network.wait-online.enable = mkOption { type = types.bool; default = true; };
      networking.hostName = mkOption { type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$"; default = "nixos"; };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      nixpkgs.config = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      nixpkgs.overlays = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
    };
  };

  # Stands in for nixos/lib/eval-config.nix: the real module system over the real base
  # modules, a toplevel path made from the system's packages (so a package change is a
  # new system), and the unfree allow-list checked as nixpkgs would.
  evalAgentSystem =
    { name, modules }:
    let
      sys = lib.evalModules {
        modules = modules ++ [
          containerStubs
          { _module.args.pkgs = pkgs; }
        ];
      };
      c = sys.config;
      packages = map (p: p.name) c.environment.systemPackages;
      hash = builtins.substring 0 32 (builtins.hashString "sha256" (builtins.toJSON packages));
    in
    assert c.boot.isNspawnContainer;
    assert c.nixpkgs.config.allowUnfreePredicate pkgs.claude-code;
    assert !(c.nixpkgs.config.allowUnfreePredicate (fakePackage "other-unfree"));
    "/nix/store/${hash}-nixos-system-hyperhive-agent-${name}";

  cases = {
    good = {
      minimal.root = "/srv/agents/minimal";
      full = {
        root = "/";
        volatile = "yes";
        path = [ "/opt/tools/bin" ];
        bind = [
          "/srv/data:/data:ro"
          {
            source = "/srv/a:b";
            target = "/mnt/x y";
            readonly = true;
          }
          { source = "/srv/same"; }
        ];
        env.FOO = "bar";
        memory_max = "2G";
        cpu_weight = 100;
        tasks_max = 512;
        disk_max = "20G";
        network = "private";
        egress = [
          "api.example.com"
          "*.example.org:8443"
        ];
        ports = [ 8080 ];
        harness = [
          "claude"
          "--print"
        ];
        autostart = false;
        private_users = false;
        capabilities = [ "CAP_NET_RAW" ];
        turns = true;
        turn_timeout = 300;
        restart_grace = 10;
      };
      claude-agent = {
        root = "/";
        volatile = "yes";
        path = [ "/opt/claude/bin" ];
        claude = {
          model = "claude-sonnet-4-5";
          allowed_tools = [ "Bash(git log:*)" "Read" ];
          permission = "approvals";
          permission_timeout = 120;
          budget_usd_per_day = 2.5;
          prompt = "Keep the docs in /state/docs.";
          api_key_file = "/run/keys/claude-agent";
        };
      };
      pinned.system = "/nix/store/00000000000000000000000000000000-nixos-system-pinned";
      # "Declare a NixOS agent" and "change its packages" (docs/operations.md).
      nixos = {
        config = { pkgs, ... }: { environment.systemPackages = [ pkgs.ripgrep ]; };
        memory_max = "2G";
      };
      nixos-more = {
        config = { pkgs, ... }: { environment.systemPackages = [ pkgs.ripgrep pkgs.jq ]; };
        memory_max = "2G";
      };
    };
    # services.cockpit on: nix/cockpit.nix adds the page (the result is what it installs).
    cockpit.minimal.root = "/srv/agents/minimal";
    bad-name."Bad_Name".root = "/srv/a";
    config-and-root = {
      both = {
        root = "/srv/a";
        config = { };
      };
    };
    neither.empty.memory_max = "1G";
    bad-type.weights = {
      root = "/srv/a";
      cpu_weight = 0;
    };
    bad-config.typo = {
      config = { boot.isNspawnContainer = "yes"; };
    };
  };

  eval = lib.evalModules {
    modules = [
      ../module.nix
      hostStubs
      {
        _module.args.pkgs = pkgs;
        services.cockpit.enable = case == "cockpit";
        services.hyperhive = {
          enable = true;
          agents = cases.${case};
          # The daemon-wide defaults (hive.toml): some set, the rest left to hyperhive.
          defaults = lib.optionalAttrs (case == "good") {
            memory_max = "25%";
            tasks_max = 1024;
            disk_max = "20G";
          };
          inherit evalAgentSystem;
        };
      }
    ];
  };
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) eval.config.assertions);
  etc = eval.config.environment.etc;
in
if failed != [ ] then
  throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
else if case == "cockpit" then
  {
    inherit (eval.config.environment) pathsToLink;
    packages = map (p: p.name) eval.config.environment.systemPackages;
    scripts = map (p: p.script or "") eval.config.environment.systemPackages;
  }
else
  builtins.mapAttrs (_: entry: entry.source.value) etc
