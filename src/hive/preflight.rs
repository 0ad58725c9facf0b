//! Checks against the host that a spec's validation cannot make: do the paths it names
//! exist, are the binaries there. Run before anything is written, so bad input touches
//! nothing; `hivectl plan` shows every one of them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use crate::reconcile::view::{Check, Verdict};

use crate::plan::system::{NIX_STATE, STORE};
use crate::plan::{self, Host, HARNESS_IN_CONTAINER};
use crate::spec::AgentSpec;

impl Check {
    pub(super) fn of(what: &str, result: Result<String, String>) -> Check {
        let (verdict, detail) = match result {
            Ok(d) => (Verdict::Ok, d),
            Err(d) => (Verdict::Fail, d),
        };
        Check {
            what: what.into(),
            verdict,
            detail,
        }
    }
}

/// The first failed check as the one-line error create, start, rebuild and reconcile give.
pub fn check(spec: &AgentSpec, host: &Host) -> Result<(), String> {
    match checks(spec, host)
        .into_iter()
        .find(|c| c.verdict == Verdict::Fail)
    {
        Some(c) => Err(format!("agent {}: {} {}", spec.name, c.what, c.detail)),
        None => Ok(()),
    }
}

/// Every check, in the order an admin would fix them.
pub fn checks(spec: &AgentSpec, host: &Host) -> Vec<Check> {
    let mut out = Vec::new();
    match &spec.root {
        Some(dir) => {
            let root = match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(dir.display().to_string()),
                Ok(_) => Err(format!("{}: not a directory", dir.display())),
                Err(e) => Err(format!("{}: {}", dir.display(), io_reason(&e))),
            };
            out.push(Check::of("root", root));
        }
        None => out.extend(system_checks(spec)),
    }
    for b in &spec.binds {
        let source = match std::fs::metadata(&b.source) {
            Ok(_) => Ok(format!(
                "{} (bound at {})",
                b.source.display(),
                b.target.display()
            )),
            Err(e) => Err(format!("{}: {}", b.source.display(), io_reason(&e))),
        };
        out.push(Check::of("bind source", source));
    }
    // Name the binary and where its path comes from, so the admin knows what to fix.
    for (what, path) in [
        ("systemd-nspawn (--nspawn / HYPERHIVE_NSPAWN)", &host.nspawn),
        ("hive-c0re", &host.hive_c0re),
        (
            "hive-harness (--harness / HYPERHIVE_HARNESS)",
            &host.hive_harness,
        ),
    ] {
        let found = executable(path).map(|()| path.display().to_string());
        out.push(Check::of(what, found));
    }
    if let Some(c) = harness_command(spec, host) {
        out.push(c);
    }
    if let Some(key) = spec.claude.as_ref().and_then(|c| c.api_key_file.as_ref()) {
        // Read by nspawn as the host's root at each start, following links: never from a
        // tree an agent writes into, where it could plant a link to any host file and be
        // handed that file as its "key".
        let roots = &host.roots;
        let in_agents_tree = key.starts_with(&roots.state) || key.starts_with(&roots.run);
        let file = match std::fs::metadata(key) {
            _ if in_agents_tree => Err(format!(
                "{}: inside {} or {}, which agents write into; keep the key elsewhere (e.g. /etc/hyperhive/keys)",
                key.display(),
                roots.state.display(),
                roots.run.display()
            )),
            Ok(m) if m.is_file() => Ok(format!(
                "{} (credential {})",
                key.display(),
                plan::API_KEY_CREDENTIAL
            )),
            Ok(_) => Err(format!("{}: not a regular file", key.display())),
            Err(e) => Err(format!("{}: {}", key.display(), io_reason(&e))),
        };
        out.push(Check::of("claude API key file", file));
    }
    let mut network = Check::of("network", Ok(crate::plan::network::describe(spec)));
    if spec.network == crate::spec::Network::Host {
        // Allowed, but the admin should see what it gives away every time it is planned.
        network.verdict = Verdict::Warn;
    }
    out.push(network);
    out
}

/// Whether the spec's own harness command resolves on the agent's PATH, looked for from
/// the host: in the spec's binds, else under the container's root. Only a warning, since a
/// root may hold symlinks that resolve only inside the container (a NixOS profile).
fn harness_command(spec: &AgentSpec, host: &Host) -> Option<Check> {
    // A Claude Code agent's harness runs `claude` from the agent's PATH each turn.
    let claude = "claude".to_string();
    let cmd = match &spec.claude {
        Some(_) => &claude,
        None => spec.harness.first()?,
    };
    let what = "harness command";
    let candidates: Vec<PathBuf> = if cmd.contains('/') {
        vec![PathBuf::from(cmd)]
    } else {
        plan::agent_path(spec, host)
            .split(':')
            .map(|dir| Path::new(dir).join(cmd))
            .collect()
    };
    for inside in &candidates {
        if let Some(on_host) = host_view(spec, host, inside) {
            if executable(&on_host).is_ok() {
                return Some(Check::of(
                    what,
                    Ok(format!("{cmd} is {}", inside.display())),
                ));
            }
        }
    }
    Some(Check {
        what: what.into(),
        verdict: Verdict::Warn,
        detail: format!(
            "{cmd}: not found as an executable on the agent's PATH under {} or its binds",
            match (&spec.root, &spec.system) {
                (Some(root), _) => format!("root {}", root.display()),
                (None, Some(system)) => format!("system {}", system.display()),
                (None, None) => "its root".into(),
            }
        ),
    })
}

/// Where a path inside the container is on the host: through a bind, or under the root.
fn host_view(spec: &AgentSpec, host: &Host, inside: &Path) -> Option<PathBuf> {
    if inside == Path::new(HARNESS_IN_CONTAINER) {
        return Some(host.hive_harness.clone());
    }
    for b in spec.binds.iter().rev() {
        if let Ok(rest) = inside.strip_prefix(&b.target) {
            return Some(b.source.join(rest));
        }
    }
    match (&spec.root, &spec.system) {
        (Some(root), _) => Some(root.join(inside.strip_prefix("/").ok()?)),
        // A system agent's root is the agent's to write: never looked into from the host.
        // Its profile is the system's own, in the store.
        (None, Some(system)) => Some(system.join(inside.strip_prefix("/run/current-system").ok()?)),
        (None, None) => None,
    }
}

/// Host checks of a system agent: its `init` is executable, the store and the Nix state
/// it is given exist. Looked up on the host in the store, never in the agent's root.
fn system_checks(spec: &AgentSpec) -> Vec<Check> {
    let Some(system) = &spec.system else {
        return Vec::new();
    };
    let mut out = vec![];
    let init = system.join("init");
    out.push(Check::of(
        "system",
        executable(&init).map(|()| format!("{} (its init is PID 1)", system.display())),
    ));
    for dir in std::iter::once(STORE).chain(NIX_STATE) {
        let found = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(format!("{dir} (bound read-only)")),
            Ok(_) => Err(format!("{dir}: not a directory")),
            Err(e) => Err(format!(
                "{dir}: {}; a system agent needs Nix on the host",
                io_reason(&e)
            )),
        };
        out.push(Check::of("nix", found));
    }
    out
}

/// `Ok` if `path` is an executable regular file.
pub fn executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("{}: not an executable file", path.display())),
        Err(e) => Err(format!("{}: {}", path.display(), io_reason(&e))),
    }
}

pub use crate::safe_fs::io_reason;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Roots;
    use crate::spec::{AgentName, SpecFile};

    fn host(dir: &Path) -> Host {
        Host {
            roots: Roots::default(),
            nspawn: "/bin/sh".into(),
            hive_c0re: "/bin/sh".into(),
            hive_harness: dir.join("no-harness"),
            base_path: vec!["/usr/bin".into()],
            journal: None,
            defaults: crate::spec::bounds::Defaults::shipped(8 << 30),
            disk_images: false,
        }
    }

    fn spec(toml: &str) -> AgentSpec {
        let file = SpecFile::from_toml(toml, "test").unwrap();
        AgentSpec::validate(&AgentName::parse("alice").unwrap(), &file).unwrap()
    }

    #[test]
    fn an_api_key_file_in_a_tree_agents_write_into_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let planted = h.roots.state.join("agents/alice/state/key");
        let s = spec(&format!(
            "root = \"/\"\nvolatile = \"yes\"\n[claude]\napi_key_file = \"{}\"\n",
            planted.display()
        ));
        let key = checks(&s, &h)
            .into_iter()
            .find(|c| c.what == "claude API key file")
            .unwrap();
        assert_eq!(key.verdict, Verdict::Fail);
        assert!(
            key.detail.contains("which agents write into"),
            "{}",
            key.detail
        );
        let outside = dir.path().join("key");
        std::fs::write(&outside, "sk-test\n").unwrap();
        let s = spec(&format!(
            "root = \"/\"\nvolatile = \"yes\"\n[claude]\napi_key_file = \"{}\"\n",
            outside.display()
        ));
        let key = checks(&s, &h)
            .into_iter()
            .find(|c| c.what == "claude API key file")
            .unwrap();
        assert_eq!(key.verdict, Verdict::Ok, "{}", key.detail);
    }

    #[test]
    fn the_first_failure_is_the_error_and_every_check_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(&format!(
            "root = \"/\"\nvolatile = \"yes\"\nbind = [\"{}/gone:/data\"]\n",
            dir.path().display()
        ));
        let all = checks(&s, &host(dir.path()));
        let verdicts: Vec<_> = all.iter().map(|c| (c.what.as_str(), c.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("root", Verdict::Ok),
                ("bind source", Verdict::Fail),
                ("systemd-nspawn (--nspawn / HYPERHIVE_NSPAWN)", Verdict::Ok),
                ("hive-c0re", Verdict::Ok),
                (
                    "hive-harness (--harness / HYPERHIVE_HARNESS)",
                    Verdict::Fail
                ),
                ("network", Verdict::Ok),
            ]
        );
        assert_eq!(
            check(&s, &host(dir.path())).unwrap_err(),
            format!(
                "agent alice: bind source {}/gone: No such file or directory",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_harness_command_is_looked_for_in_binds_and_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let tools = dir.path().join("tools");
        std::fs::create_dir(&tools).unwrap();
        let tool = tools.join("claude");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = spec(&format!(
            "root = \"/\"\nvolatile = \"yes\"\npath = [\"/opt/tools\"]\nbind = [\"{}:/opt/tools:ro\"]\nharness = [\"claude\"]\n",
            tools.display()
        ));
        let c = harness_command(&found, &host(dir.path())).unwrap();
        assert_eq!(
            (c.verdict, c.detail.as_str()),
            (Verdict::Ok, "claude is /opt/tools/claude")
        );
        let on_root = spec("root = \"/\"\nvolatile = \"yes\"\nharness = [\"sh\", \"-c\", \"x\"]\n");
        assert_eq!(
            harness_command(&on_root, &host(dir.path()))
                .unwrap()
                .verdict,
            Verdict::Ok
        );
        let missing = spec("root = \"/\"\nvolatile = \"yes\"\nharness = [\"no-such-cmd-x\"]\n");
        let c = harness_command(&missing, &host(dir.path())).unwrap();
        assert_eq!(c.verdict, Verdict::Warn, "{c:?}");
        assert!(
            check(
                &missing,
                &Host {
                    hive_harness: "/bin/sh".into(),
                    ..host(dir.path())
                }
            )
            .is_ok(),
            "a warning refuses nothing"
        );
    }
}
