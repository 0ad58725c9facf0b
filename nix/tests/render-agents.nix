# Evaluates nix/module.nix with a stand-in for nixpkgs' lib (just what the module uses,
# with the same meaning) and returns the spec files it renders under /etc/hyperhive/agents,
# as JSON-ready values. xtask/tests/nix_module.rs parses each one with the daemon's own spec
# parser, so the rendering is checked on machines without nixpkgs. A module change that
# uses another lib function needs it added here.
let
  # Agents as a user writes them; each option's default fills what is left out, as the
  # module system would.
  agents = {
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
      network = "private";
      harness = [
        "claude"
        "--print"
      ];
      autostart = false;
      private_users = false;
      capabilities = [ "CAP_NET_RAW" ];
      turns = true;
      turn_timeout = 300;
    };
  };

  pairs = set: map (name: { inherit name; value = set.${name}; }) (builtins.attrNames set);
  lib = {
    mkOption = opt: opt;
    mkEnableOption = what: {
      default = false;
      description = "Whether to enable ${what}.";
    };
    mkIf = cond: content: if cond then content else { };
    literalExpression = text: text;
    filterAttrs = pred: set: builtins.listToAttrs (builtins.filter (p: pred p.name p.value) (pairs set));
    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    mapAttrs' = f: set: builtins.listToAttrs (map (p: f p.name p.value) (pairs set));
    mapAttrsToList = f: set: map (p: f p.name p.value) (pairs set);
    nameValuePair = name: value: { inherit name value; };
    # Types only carry what the harness needs: a submodule's options, for their defaults.
    types =
      let
        any = { };
      in
      {
        str = any;
        bool = any;
        package = any;
        ints = {
          positive = any;
          between = _: _: any;
        };
        enum = _: any;
        nullOr = t: t;
        listOf = _: any;
        either = _: _: any;
        attrsOf = t: { attrsOf = t; };
        submodule = m: { submodule = m; };
      };
  };

  eval =
    config:
    import ../module.nix {
      inherit config lib;
      pkgs = {
        callPackage = _: _: "hyperhive-package";
        git = "/nix/store/git";
        # The real one writes this value as TOML; the test does that part.
        formats.toml = _: { generate = _name: value: value; };
      };
    };

  # The module's own option declarations give each agent its defaults.
  declared = (eval { services.hyperhive = { }; }).options.services.hyperhive;
  agentOptions = declared.agents.type.attrsOf.submodule.options;
  withDefaults =
    agent: builtins.mapAttrs (name: opt: agent.${name} or opt.default) agentOptions;
  bindDefaults =
    b:
    if builtins.isString b then
      b
    else
      {
        target = null;
        readonly = false;
      }
      // b;

  module = eval {
    services.hyperhive = {
      enable = true;
      package = "hyperhive-package";
      adminUsers = [ ];
      agents = builtins.mapAttrs (
        _: agent:
        withDefaults agent
        // {
          bind = map bindDefaults (agent.bind or [ ]);
        }
      ) agents;
    };
  };
  etc = module.config.environment.etc;
in
assert builtins.all (a: a.assertion) module.config.assertions;
builtins.mapAttrs (_: entry: entry.source) etc
