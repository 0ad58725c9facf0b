//! The NixOS module's `services.hyperhive.agents.<name>` options are the spec file's TOML
//! keys, one for one: nix/module.nix renders them to /etc/hyperhive/agents/<name>.toml, and
//! the daemon refuses unknown keys. These tests fail when the two drift apart, and check
//! that what the module renders is a spec the daemon accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hyperhive::spec::bind::BindEntry;
use hyperhive::spec::size::Size;
use hyperhive::spec::{AgentName, AgentSpec, Network, SpecFile, Volatile};

/// The binding in nix/module.nix that holds the agent options.
const OPTIONS_BINDING: &str = "specOptions";

/// Every key a spec file can have: a SpecFile with every field set, serialized. The struct
/// literal has no `..Default::default()` on purpose: a new field does not compile here
/// until it is added, and then this test asks for it in the module too.
fn spec_keys() -> BTreeSet<String> {
    let full = SpecFile {
        root: Some("/srv/agents/alice".into()),
        system: Some("/nix/store/00000000000000000000000000000000-nixos-system-alice".into()),
        volatile: Some(Volatile::Overlay),
        path: vec!["/opt/tools/bin".into()],
        bind: vec![BindEntry::Short("/srv/data:/data:ro".into())],
        env: BTreeMap::from([("FOO".to_string(), "bar".to_string())]),
        memory_max: Some(Size::Text("2G".into())),
        cpu_weight: Some(100),
        tasks_max: Some(512),
        disk_max: Some(Size::Text("20G".into())),
        network: Some(Network::Private),
        egress: vec!["api.example.com".into()],
        ports: vec![8080],
        harness: Some(vec!["claude".into(), "--print".into()]),
        autostart: Some(false),
        private_users: Some(false),
        capabilities: vec!["CAP_NET_RAW".into()],
        turns: Some(true),
        turn_timeout: Some(60),
        restart_grace: Some(10),
        claude: Some(hyperhive::spec::ClaudeFile::default()),
    };
    let table: toml::Table = toml::from_str(&full.to_toml()).expect("a spec's TOML parses");
    table.keys().cloned().collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn module_agent_options_are_exactly_the_spec_file_keys() {
    let module = repo().join("nix/module.nix");
    let text = std::fs::read_to_string(&module)
        .unwrap_or_else(|e| panic!("reading {}: {e}", module.display()));
    let options: BTreeSet<String> = option_names(&text, OPTIONS_BINDING).into_iter().collect();
    let spec = spec_keys();
    assert!(
        spec.len() >= 10,
        "the populated SpecFile lost keys: {spec:?}"
    );

    let missing: Vec<_> = spec.difference(&options).collect();
    let extra: Vec<_> = options.difference(&spec).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "nix/module.nix {OPTIONS_BINDING} drifted from hyperhive::spec::SpecFile:\n  \
         spec keys with no option: {missing:?}\n  options that are no spec key: {extra:?}"
    );
}

/// nixpkgs' own lib: `HYPERHIVE_NIXPKGS_LIB` (a nixpkgs `lib/` directory), else the copy
/// vendored in nix/vendor/nixpkgs-lib (see its README). Missing is a failure, never a skip.
fn nixpkgs_lib() -> PathBuf {
    let lib = match std::env::var_os("HYPERHIVE_NIXPKGS_LIB") {
        Some(dir) => PathBuf::from(dir),
        None => repo().join("nix/vendor/nixpkgs-lib/lib"),
    };
    assert!(
        lib.join("default.nix").is_file(),
        "nixpkgs' lib is missing at {} (set HYPERHIVE_NIXPKGS_LIB to a nixpkgs lib/ directory)",
        lib.display()
    );
    lib
}

/// Evaluates one case of nix/tests/render-agents.nix with the real lib: the rendered spec
/// files, or the evaluation's error text. `None` when nix-instantiate is not installed
/// outside CI (in CI that fails).
fn render(case: &str) -> Option<Result<BTreeMap<String, toml::Value>, String>> {
    let lib = nixpkgs_lib();
    let run = match Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(repo().join("nix/tests/render-agents.nix"))
        .arg("--arg")
        .arg("lib")
        .arg(format!("import {}", lib.display()))
        .args(["--argstr", "case", case])
        .output()
    {
        Ok(run) => run,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: nix-instantiate: {e} (scripts/ensure-deps.sh installs nix-bin)");
            return None;
        }
        Err(e) => panic!("nix-instantiate: {e}"),
    };
    if !run.status.success() {
        return Some(Err(String::from_utf8_lossy(&run.stderr).into_owned()));
    }
    Some(Ok(
        serde_json::from_slice(&run.stdout).expect("the renderer prints a JSON object")
    ))
}

/// nix/tests/render-agents.nix evaluates the module with nixpkgs' own lib for agents with
/// a root, a system and a NixOS `config`; each rendered file, written as TOML as
/// `pkgs.formats.toml` does, must parse and validate as the daemon's spec.
#[test]
fn rendered_agent_specs_parse_and_validate() {
    let Some(files) = render("good") else { return };
    let mut files = files.unwrap_or_else(|e| panic!("{e}"));
    // The daemon-wide defaults, as the daemon reads them; unset options left out.
    let hive = files
        .remove("hyperhive/hive.toml")
        .expect("hive.toml rendered");
    let hive = toml::to_string(&hive).unwrap();
    assert_eq!(
        hive,
        "[agents]\ndisk_max = \"20G\"\nmemory_max = \"25%\"\ntasks_max = 1024\n"
    );
    let defaults = hyperhive::spec::bounds::Defaults::from_toml(&hive, "hive.toml", 8 << 30)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            defaults.memory_max,
            defaults.tasks_max,
            defaults.cpu_weight,
            defaults.disk_max
        ),
        (2 << 30, 1024, 100, 20 << 30)
    );
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "hyperhive/agents/claude-agent.toml",
            "hyperhive/agents/full.toml",
            "hyperhive/agents/minimal.toml",
            "hyperhive/agents/nixos-more.toml",
            "hyperhive/agents/nixos.toml",
            "hyperhive/agents/pinned.toml",
        ]
    );

    let mut specs = BTreeMap::new();
    for (path, value) in &files {
        let text = toml::to_string(value).unwrap();
        let spec = SpecFile::from_toml(&text, path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let name = path
            .trim_start_matches("hyperhive/agents/")
            .trim_end_matches(".toml");
        let name = AgentName::parse(name).unwrap();
        AgentSpec::validate(&name, &spec).unwrap_or_else(|e| panic!("{e}\n{text}"));
        specs.insert(name.to_string(), spec);
    }

    let minimal = &specs["minimal"];
    assert_eq!(
        minimal,
        &SpecFile {
            root: Some("/srv/agents/minimal".into()),
            ..SpecFile::default()
        },
        "unset options must be left out of the file"
    );
    let full = &specs["full"];
    let keys: BTreeSet<String> = toml::from_str::<toml::Table>(&full.to_toml())
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut but_system = spec_keys();
    but_system.remove("system");
    // A Claude Code agent's harness is claude itself: the two exclude each other.
    but_system.remove("claude");
    assert_eq!(
        keys, but_system,
        "the full agent sets every option but system and claude"
    );
    let claude = specs["claude-agent"]
        .claude
        .as_ref()
        .expect("the claude agent renders its [claude] table");
    let claude_keys: BTreeSet<String> =
        toml::from_str::<toml::Table>(&toml::to_string(claude).unwrap())
            .unwrap()
            .keys()
            .cloned()
            .collect();
    let every: BTreeSet<String> = [
        "allowed_tools",
        "api_key_file",
        "budget_usd_per_day",
        "model",
        "permission",
        "permission_timeout",
        "prompt",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        claude_keys, every,
        "the claude agent sets every [claude] option"
    );
    assert_eq!(
        full.bind,
        [
            BindEntry::Short("/srv/data:/data:ro".into()),
            BindEntry::Full {
                source: "/srv/a:b".into(),
                target: Some("/mnt/x y".into()),
                readonly: true
            },
            BindEntry::Full {
                source: "/srv/same".into(),
                target: None,
                readonly: false
            },
        ]
    );
    assert_eq!(full.memory_max, Some(Size::Text("2G".into())));
    assert_eq!(full.network, Some(Network::Private));
    assert_eq!(full.autostart, Some(false));

    assert_eq!(
        specs["pinned"].system.as_deref(),
        Some(Path::new(
            "/nix/store/00000000000000000000000000000000-nixos-system-pinned"
        ))
    );
    // An agent's config becomes the system its spec boots; changing its packages is a new
    // system, and nothing else in the spec changes.
    let (nixos, more) = (&specs["nixos"], &specs["nixos-more"]);
    let system = nixos
        .system
        .as_ref()
        .expect("config renders a system")
        .display()
        .to_string();
    assert!(
        system.starts_with("/nix/store/")
            && system.ends_with("-nixos-system-hyperhive-agent-nixos"),
        "{system}"
    );
    assert_eq!(nixos.root, None);
    assert_ne!(nixos.system, more.system, "another package, another system");
    assert_eq!(
        SpecFile {
            system: None,
            ..nixos.clone()
        },
        SpecFile {
            system: None,
            ..more.clone()
        }
    );
}

/// Bad input fails the evaluation with the module system's (or NixOS's assertion) error,
/// naming the option or the agent.
#[test]
fn bad_agents_fail_the_evaluation_with_the_module_systems_error() {
    for (case, want) in [
        (
            "bad-name",
            "Failed assertions:\n       - services.hyperhive.agents.Bad_Name: agent names match",
        ),
        (
            "config-and-root",
            "- services.hyperhive.agents.both: set exactly one of root, system and config",
        ),
        (
            "neither",
            "- services.hyperhive.agents.empty: set exactly one of root, system and config",
        ),
        (
            "bad-type",
            "A definition for option `services.hyperhive.agents.weights.cpu_weight' is not of type `null or integer between 1 and 10000",
        ),
        (
            "bad-config",
            "A definition for option `boot.isNspawnContainer' is not of type `boolean'",
        ),
    ] {
        let Some(result) = render(case) else { return };
        let err = result.expect_err(case);
        assert!(err.contains(want), "{case}: wanted {want:?} in:\n{err}");
    }
}

#[test]
fn the_scanner_reads_only_top_level_bindings() {
    let nix = r#"
      let
        other = { nope = 1; };
        specOptions = {
          # a comment with { braces } and nope = 1;
          root = mkOption { type = types.str; description = "a } in a string"; };
          bind = lib.mkOption {
            default = [ { source = "/a"; } ];
            description = ''
              ''${not an interpolation} and ${toString 1} and an escaped ''' quote
            '';
          };
          /* block { comment } */ env = mkOption { default = { FOO = "x${"}"}"; }; };
        };
      in specOptions
    "#;
    assert_eq!(option_names(nix, "specOptions"), ["root", "bind", "env"]);
}

/// The names bound at the top level of the attrset `binding = { ... };`, each of which must
/// be bound to `mkOption` or `lib.mkOption`. Understands Nix comments, strings, indented
/// strings and interpolations, so braces inside them do not count.
fn option_names(src: &str, binding: &str) -> Vec<String> {
    let start = src
        .match_indices(binding)
        .find_map(|(i, _)| {
            let before_ok = src[..i]
                .chars()
                .next_back()
                .is_none_or(|c| c.is_whitespace());
            let rest = src[i + binding.len()..].trim_start();
            let rest = rest.strip_prefix('=')?.trim_start();
            (before_ok && rest.starts_with('{')).then(|| src.len() - rest.len())
        })
        .unwrap_or_else(|| panic!("no `{binding} = {{` in the module"));

    #[derive(Debug, PartialEq)]
    enum Ctx {
        Brace,
        Interp,
        Str,
        IndStr,
    }
    let s: Vec<char> = src[start..].chars().collect();
    let mut stack: Vec<Ctx> = Vec::new();
    let mut names = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        match stack.last() {
            Some(Ctx::Str) => {
                match (c, next) {
                    ('\\', _) | ('$', Some('$')) => i += 1,
                    ('"', _) => {
                        stack.pop();
                    }
                    ('$', Some('{')) => {
                        stack.push(Ctx::Interp);
                        i += 1;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            Some(Ctx::IndStr) => {
                match (c, next, s.get(i + 2).copied()) {
                    ('\'', Some('\''), Some('$' | '\'')) => i += 2,
                    ('\'', Some('\''), Some('\\')) => i += 3,
                    ('\'', Some('\''), _) => {
                        stack.pop();
                        i += 1;
                    }
                    ('$', Some('$'), _) => i += 1,
                    ('$', Some('{'), _) => {
                        stack.push(Ctx::Interp);
                        i += 1;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        // Code, at the top of the set (stack = [Brace]) or deeper.
        match (c, next) {
            (c, _) if c.is_whitespace() => {}
            ('#', _) => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i + 1 < s.len() && !(s[i] == '*' && s[i + 1] == '/') {
                    i += 1;
                }
                i += 1;
            }
            ('"', _) => stack.push(Ctx::Str),
            ('\'', Some('\'')) => {
                stack.push(Ctx::IndStr);
                i += 1;
            }
            ('{', _) => {
                stack.push(Ctx::Brace);
                if stack.len() == 1 {
                    expect_key = true;
                }
            }
            ('}', _) => {
                stack.pop();
                if stack.is_empty() {
                    return names;
                }
            }
            (';', _) if stack.len() == 1 => expect_key = true,
            (c, _) if expect_key && stack.len() == 1 => {
                let ident: String = s[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''))
                    .collect();
                assert!(
                    !ident.is_empty() && (c.is_ascii_alphabetic() || c == '_'),
                    "{binding}: a binding that is not a plain name at {:?}",
                    s[i..].iter().take(40).collect::<String>()
                );
                assert_ne!(
                    ident, "inherit",
                    "{binding}: `inherit` is not understood here"
                );
                i += ident.chars().count();
                let rest: String = s[i..].iter().take(200).collect();
                let value = rest
                    .trim_start()
                    .strip_prefix('=')
                    .map(str::trim_start)
                    .unwrap_or_else(|| panic!("{binding}.{ident}: no `=` after the name"));
                assert!(
                    value.starts_with("mkOption") || value.starts_with("lib.mkOption"),
                    "{binding}.{ident} is not bound to mkOption"
                );
                names.push(ident);
                expect_key = false;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    panic!("{binding}: the attrset is not closed");
}

/// With services.cockpit on, nix/cockpit.nix (imported by the module) puts the Cockpit page
/// in the system path: share/cockpit/hyperhive from cockpit/hyperhive/, with share/cockpit
/// linked into the system profile where Cockpit looks. Without Cockpit ("good") it adds
/// nothing but the package.
#[test]
fn the_cockpit_page_is_installed_when_cockpit_is_on() {
    let Some(out) = render("cockpit") else { return };
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    let strings = |k: &str| -> Vec<String> {
        out[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(strings("pathsToLink"), ["/share/cockpit"]);
    assert!(strings("packages").contains(&"hyperhive-cockpit".to_owned()));
    let script = strings("scripts").concat();
    assert!(
        script.contains("-hyperhive $out/share/cockpit/hyperhive"),
        "{script}"
    );
}
