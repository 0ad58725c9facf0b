# services.hyperhive: the hive-c0re daemon run from the package's own units, declared
# agents rendered to /etc/hyperhive/agents/<name>.toml (a NixOS agent's `config` evaluated
# into the system its spec boots), and the hive-admin group.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;

  cfg = config.services.hyperhive;
  settingsFormat = pkgs.formats.toml { };

  # The table form of a bind, for paths that contain ':'.
  bindTable = types.submodule {
    options = {
      source = mkOption {
        type = types.str;
        description = "Absolute path on the host.";
      };
      target = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Absolute path in the container; the source's path when null.";
      };
      readonly = mkOption {
        type = types.bool;
        default = false;
        description = "Whether the bind is read-only.";
      };
    };
  };

  # The options of services.hyperhive.agents.<name>: exactly the keys of the agent spec file
  # (docs/spec.md, hyperhive::spec::SpecFile), named as in the file.
  # xtask/tests/nix_module.rs fails when the two sets differ. Unset (null or empty) fields
  # are left out of the rendered file, so the daemon's defaults apply.
  specOptions = {
    root = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/srv/agents/alice";
      description = ''
        The container's root directory, an absolute path. `"/"` with `volatile = "yes"`
        boots an ephemeral copy of the host. Set exactly one of `root`, `system` and
        `config`.
      '';
    };
    system = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/nix/store/…-nixos-system-alice";
      description = ''
        A NixOS system (a toplevel in /nix/store, or any directory with an executable
        `init`) booted from the store as the agent's container; `config` sets it from a
        configuration. Set exactly one of `root`, `system` and `config`.
      '';
    };
    volatile = mkOption {
      type = types.nullOr (
        types.enum [
          "no"
          "yes"
          "state"
          "overlay"
        ]
      );
      default = null;
      description = "How systemd-nspawn treats the root (`--volatile=`); `no` when null.";
    };
    path = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/opt/tools/bin" ];
      description = ''
        Directories put first on the agent's PATH, before the host's git and
        /run/current-system/sw/bin. No entry may contain ':'.
      '';
    };
    bind = mkOption {
      type = types.listOf (types.either types.str bindTable);
      default = [ ];
      example = [
        "/srv/data:/data:ro"
        {
          source = "/srv/a:b";
          target = "/mnt/x";
        }
      ];
      description = ''
        Extra binds: `SRC[:DST[:ro|rw]]` strings (systemd-nspawn's syntax, `\:` escapes a
        colon) or `{ source, target, readonly }` tables. Targets may not be `/`, `/state`,
        `/root/.claude` or `/run/hyperhive`, which hyperhive binds itself.
      '';
    };
    env = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        FOO = "bar";
      };
      description = "Environment of the agent; not PATH and no `HIVE_` prefix.";
    };
    memory_max = mkOption {
      type = types.nullOr (types.either types.ints.positive types.str);
      default = null;
      example = "2G";
      description = "`MemoryMax=` of the agent's container unit: bytes, or a number with K, M, G or T.";
    };
    cpu_weight = mkOption {
      type = types.nullOr (types.ints.between 1 10000);
      default = null;
      description = "`CPUWeight=` of the agent's container unit.";
    };
    tasks_max = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      description = "`TasksMax=` of the agent's container unit.";
    };
    disk_max = mkOption {
      type = types.nullOr (types.either types.ints.positive types.str);
      default = null;
      example = "20G";
      description = "One bound over the agent's state, credentials and journal on the host (docs/persistence.md): bytes, or a number with K, M, G or T; at least 64M. Default: `services.hyperhive.defaults.disk_max`.";
    };
    network = mkOption {
      type = types.nullOr (
        types.enum [
          "host"
          "private"
        ]
      );
      default = null;
      description = "The container's network: a private namespace with only lo (when null or \"private\"), or the host's (\"host\": the agent shares the host's loopback services, abstract sockets, addresses and DNS).";
    };
    egress = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "api.anthropic.com" "*.pypi.org" "files.example.com:8443" ];
      description = "Destinations the agent may reach through its egress proxy (private network only): HOST[:PORT] (port 443 when none), *.DOMAIN[:PORT], or an address or CIDR.";
    };
    ports = mkOption {
      type = types.listOf types.port;
      default = [ ];
      example = [ 8080 ];
      description = "TCP ports on the agent's own loopback that the host reaches on unix sockets /run/hyperhive/<name>/port-<PORT>.sock, e.g. its web UI (private network only).";
    };
    harness = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [
        "claude"
        "--print"
      ];
      description = "The harness command and its arguments, run inside the container.";
    };
    autostart = mkOption {
      type = types.nullOr types.bool;
      default = null;
      description = ''
        Whether hive-c0re brings the agent up by itself: at its start (so after every
        reboot) and on reload. Null means yes.
      '';
    };
    turns = mkOption {
      type = types.nullOr types.bool;
      default = null;
      description = ''
        Run the harness command once per turn: at start and on each wake (a decision on
        one of the agent's approvals, an admin's `hivectl tell`), with the wake on stdin
        and in HIVE_TURN, HIVE_WAKE_REASON, HIVE_WAKE_MESSAGE. Null means no: the command
        runs once. Only an admin sets it. See docs/agent-side.md.
      '';
    };
    turn_timeout = mkOption {
      type = types.nullOr (types.ints.between 1 86400);
      default = null;
      description = "With turns: seconds a turn may run before it is killed (null means 600).";
    };
    restart_grace = mkOption {
      type = types.nullOr (types.ints.between 0 60);
      default = null;
      description = ''
        Seconds a listening agent is given to finish its turn before an approved change
        restarts its container (null means hive-c0re's default, 3). See docs/agent-side.md.
      '';
    };
    claude = mkOption {
      type = types.nullOr (
        types.submodule {
          options = {
            model = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "The model for every turn (null: claude's own default).";
            };
            allowed_tools = mkOption {
              type = types.listOf types.str;
              default = [ ];
              example = [ "Bash(git log:*)" "Read" ];
              description = "Tools claude may use without asking, one tool or rule each.";
            };
            permission = mkOption {
              type = types.nullOr (types.enum [ "approvals" "deny" ]);
              default = null;
              description = ''
                Who answers claude's permission questions: approvals (an admin, as a
                tool_use approval; null means this) or deny.
              '';
            };
            permission_timeout = mkOption {
              type = types.nullOr (types.ints.between 1 3600);
              default = null;
              description = "Seconds a permission question waits for an admin (null means 300).";
            };
            budget_usd_per_day = mkOption {
              type = types.nullOr (types.either types.int types.float);
              default = null;
              description = "Dollars a day (UTC); past it the agent's wakes wait.";
            };
            prompt = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "Text appended to the system prompt after hyperhive's own.";
            };
            api_key_file = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "/run/keys/alice-anthropic";
              description = ''
                A host file holding an Anthropic API key, handed to claude as a systemd
                credential (never on a command line or in the unit's environment).
              '';
            };
          };
        }
      );
      default = null;
      description = ''
        A Claude Code agent: the harness runs `claude` from the agent's PATH each turn,
        with the hive's MCP tools, the wake as a prompt and its session kept (implies
        turns; exclusive with harness). The claude-code package is unfree: allow it by
        name. See docs/agent-side.md.
      '';
    };
    private_users = mkOption {
      type = types.nullOr types.bool;
      default = null;
      description = ''
        Whether the container gets its own user namespace, so that its root is an
        unprivileged host UID range (null means yes). Turning it off makes the agent real
        host root inside its container; an agent's own request can never turn it off.
      '';
    };
    capabilities = mkOption {
      type = types.listOf (
        types.enum [
          "CAP_NET_RAW"
          "CAP_NET_BROADCAST"
          "CAP_LINUX_IMMUTABLE"
          "CAP_AUDIT_CONTROL"
          "CAP_SYS_TTY_CONFIG"
        ]
      );
      default = [ ];
      example = [ "CAP_NET_RAW" ];
      description = "Capabilities the agent keeps among those hyperhive drops by default (docs/units.md).";
    };
  };

  # Options of an agent that are no spec key: what the module turns into one.
  nixosOptions = {
    config = mkOption {
      type = types.nullOr types.deferredModule;
      default = null;
      example = lib.literalExpression "{ pkgs, ... }: { environment.systemPackages = [ pkgs.ripgrep ]; }";
      description = ''
        The agent's own NixOS configuration, as `containers.<name>.config`: evaluated with
        `services.hyperhive.agentBaseModules` (the container base and the harness base)
        into a system whose path becomes the spec's `system`.
      '';
    };
  };

  # The system an agent's `config` evaluates to.
  agentSystem =
    name: agent:
    cfg.evalAgentSystem {
      inherit name;
      modules = cfg.agentBaseModules ++ [ agent.config ];
    };

  # One agent's spec file, built key by key from specOptions so nothing else slips in.
  specFile =
    name: agent:
    let
      bindEntry =
        b:
        if builtins.isString b then
          b
        else
          lib.filterAttrs (_: v: v != null) { inherit (b) source target readonly; };
      fields = lib.genAttrs (builtins.attrNames specOptions) (key: agent.${key}) // {
        bind = map bindEntry agent.bind;
        system = if agent.config != null then "${agentSystem name agent}" else agent.system;
        claude =
          if agent.claude == null then
            null
          else
            lib.filterAttrs (
              _: v:
              !builtins.elem v [
                null
                [ ]
              ]
            ) agent.claude;
      };
    in
    lib.filterAttrs (
      _: v:
      !builtins.elem v [
        null
        [ ]
        { }
      ]
    ) fields;

  # /etc/hyperhive/hive.toml: the bounds every agent gets where its spec sets none.
  hiveToml = settingsFormat.generate "hyperhive-hive.toml" {
    agents = lib.filterAttrs (_: v: v != null) cfg.defaults;
  };

  validName = name: builtins.match "[a-z][a-z0-9-]{0,30}" name != null;

  # Each declared agent's spec file, by name.
  specSources = builtins.mapAttrs (
    name: agent: settingsFormat.generate "hyperhive-agent-${name}.toml" (specFile name agent)
  ) cfg.agents;
in
{
  # The Cockpit page, when services.cockpit is on.
  imports = [ ./cockpit.nix ];

  options.services.hyperhive = {
    enable = lib.mkEnableOption "hyperhive, AI agents in systemd-nspawn containers run as transient systemd units";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The hyperhive package: hive-c0re, hivectl and their units.";
    };

    agents = mkOption {
      type = types.attrsOf (types.submodule { options = specOptions // nixosOptions; });
      default = { };
      example = lib.literalExpression ''
        {
          alice = {
            root = "/";
            volatile = "yes";
            memory_max = "2G";
            bind = [ "/srv/shared:/shared:ro" ];
          };
        }
      '';
      description = ''
        Declared agents. Each becomes the spec file /etc/hyperhive/agents/<name>.toml,
        the spec `hivectl start <name>` uses when `hivectl create` saved none. Names match
        `^[a-z][a-z0-9-]{0,30}$`.
      '';
    };

    agentBaseModules = mkOption {
      type = types.listOf types.deferredModule;
      default = [
        ./container-base.nix
        ./harness-base.nix
      ];
      defaultText = lib.literalExpression "[ ./nix/container-base.nix ./nix/harness-base.nix ]";
      description = ''
        NixOS modules every agent's `config` is evaluated with. The flake's
        `nixosModules.default` sets its own container-base and harness-base (with
        claude-code from nixpkgs-unstable).
      '';
    };

    evalAgentSystem = mkOption {
      type = types.functionTo types.raw;
      internal = true;
      default =
        { name, modules }:
        (import "${pkgs.path}/nixos/lib/eval-config.nix" {
          system = null;
          modules = modules ++ [
            {
              nixpkgs.hostPlatform = lib.mkDefault pkgs.stdenv.hostPlatform;
              system.name = lib.mkDefault "hyperhive-agent-${name}";
            }
          ];
        }).config.system.build.toplevel;
      defaultText = lib.literalExpression "nixpkgs' nixos/lib/eval-config.nix, with the host's platform";
      description = "How an agent's modules become a NixOS system; the module tests replace it.";
    };

    defaults = {
      memory_max = mkOption {
        type = types.nullOr (types.either types.ints.positive types.str);
        default = null;
        example = "25%";
        description = "`MemoryMax=` of every agent whose spec sets none: bytes, a number with K, M, G or T, or a share of the host's memory (`25%`). null: hyperhive's shipped default, a quarter of the host's memory (at least 512M). `MemoryHigh=` is 90 % of it.";
      };
      tasks_max = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "`TasksMax=` of every agent whose spec sets none. null: 4096.";
      };
      cpu_weight = mkOption {
        type = types.nullOr (types.ints.between 1 10000);
        default = null;
        description = "`CPUWeight=` of every agent whose spec sets none. null: 100.";
      };
      disk_max = mkOption {
        type = types.nullOr (types.either types.ints.positive types.str);
        default = null;
        example = "20G";
        description = "Disk bound of every agent whose spec sets none (docs/persistence.md). null: 10G.";
      };
    };

    adminUsers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "alice" ];
      description = "Users added to the hive-admin group, whose members may decide approvals.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = lib.concatLists (
      lib.mapAttrsToList (name: agent: [
        {
          assertion = validName name;
          message = "services.hyperhive.agents.${name}: agent names match ^[a-z][a-z0-9-]{0,30}$";
        }
        {
          assertion =
            lib.count (x: x != null) [
              agent.root
              agent.system
              agent.config
            ] == 1;
          message = "services.hyperhive.agents.${name}: set exactly one of root, system and config";
        }
      ]) cfg.agents
    );

    environment.systemPackages = [ cfg.package ];

    # Every booted agent holds several inotify instances as the host's root; the kernel's
    # default of 128 stops a host at about 20 agents (units/sysctl.d/50-hyperhive.conf).
    boot.kernel.sysctl."fs.inotify.max_user_instances" = lib.mkDefault 8192;
    boot.kernel.sysctl."fs.inotify.max_user_watches" = lib.mkDefault 524288;

    # hive-c0re.service and hive.slice as the package ships them; this adds a drop-in.
    systemd.packages = [ cfg.package ];
    systemd.services.hive-c0re = {
      # Units from systemd.packages keep no [Install] section on NixOS.
      wantedBy = [ "multi-user.target" ];
      # A service's PATH is not the host's: agents and the daemon need the host's git and
      # whatever the system profile has (seed gotcha "systemd service PATH != host PATH").
      # e2fsprogs: each agent's disk image is made, checked and grown with mkfs.ext4,
      # e2fsck and resize2fs (docs/persistence.md, "Disk"); without them disks are unbounded.
      path = [
        pkgs.git
        pkgs.e2fsprogs
        "/run/current-system/sw"
      ];
      environment.HYPERHIVE_GIT = "${pkgs.git}/bin/git";
      # nixos-rebuild switch reloads (not restarts) the daemon when a declared agent
      # changes: its reconcile rebuilds that agent and creates new ones, and leaves the rest.
      reloadTriggers = builtins.attrValues specSources;
      # The defaults are read at the daemon's start; a restart never stops an agent, and its
      # startup reconcile rebuilds the agents whose bounds they change.
      restartTriggers = [ hiveToml ];
    };

    services.dbus.packages = [ cfg.package ];
    systemd.tmpfiles.packages = [ cfg.package ];

    # The package's sysusers.d/hyperhive.conf declares the group for other distributions;
    # NixOS declares users and groups itself.
    users.groups.hive-admin.members = cfg.adminUsers;

    environment.etc =
      lib.mapAttrs' (
        name: source: lib.nameValuePair "hyperhive/agents/${name}.toml" { inherit source; }
      ) specSources
      // {
        "hyperhive/hive.toml".source = hiveToml;
      };
  };
}
