//! What a NixOS system agent's container unit gets beyond a root agent's, the way
//! nixpkgs' `containers.<name>` boots one: an almost empty root of its own, the store and
//! the Nix state bound in read-only, the system's `init` as PID 1 (not `--boot`), the
//! signal and exit status of a container's systemd, and a GC root naming what runs.

use std::path::{Path, PathBuf};

use super::{bind_arg, literal_args, stamp, ExecCommand, Prop, UnitPlan};
use crate::journal::fields;
use crate::paths::Roots;
use crate::spec::{AgentName, AgentSpec, SYSTEM_IN_CONTAINER};

/// The store, bound read-only (and idmapped, so its files are root's inside).
pub const STORE: &str = "/nix/store";

/// The host's Nix database and daemon socket, read-only as `containers.<name>` binds them:
/// `nix` inside reads the store's metadata and builds through the host's daemon.
pub const NIX_STATE: [&str; 2] = ["/nix/var/nix/db", "/nix/var/nix/daemon-socket"];

/// Where the daemon keeps one GC root per system agent, naming the system that runs, so
/// `nix-collect-garbage` cannot take it. Bound (resolved) at [`SYSTEM_IN_CONTAINER`].
pub const GC_ROOTS: &str = "/nix/var/nix/gcroots/hyperhive";

/// What a container's systemd takes as "power off" (nspawn's `--boot` sends the same).
pub const KILL_SIGNAL: &str = "SIGRTMIN+3";

/// nspawn's exit status when the container rebooted itself: start it again, and do not
/// count it a failure.
pub const REBOOT_EXIT_STATUS: i32 = 133;

/// `<state>/agents/<name>/root` for a system agent, else the spec's own root.
pub fn root_dir(spec: &AgentSpec, roots: &Roots) -> PathBuf {
    match &spec.root {
        Some(root) => root.clone(),
        None => prepared_root(roots, &spec.name),
    }
}

/// The root the daemon prepares for a system agent: host-root's directory inside the
/// agent's 0700 dir, made writable for the container's root by nspawn's ownership mode.
pub fn prepared_root(roots: &Roots, name: &AgentName) -> PathBuf {
    roots.agent_dir(name).join("root")
}

/// `/nix/var/nix/gcroots/hyperhive/<name>`.
pub fn gc_root(name: &AgentName) -> PathBuf {
    Path::new(GC_ROOTS).join(name.as_str())
}

/// The system's init inside the container, through the bound GC root.
pub fn init_in_container() -> String {
    format!("{SYSTEM_IN_CONTAINER}/init")
}

/// nspawn arguments of a system agent before its command: the store, the Nix state and
/// the running system, each read-only; idmapped under a user namespace.
pub fn binds(spec: &AgentSpec) -> Vec<String> {
    let idmap = spec.private_users;
    let mut out = vec![bind_arg(Path::new(STORE), Path::new(STORE), true, idmap)];
    for dir in NIX_STATE {
        out.push(bind_arg(Path::new(dir), Path::new(dir), true, idmap));
    }
    out.push(bind_arg(
        &gc_root(&spec.name),
        Path::new(SYSTEM_IN_CONTAINER),
        true,
        idmap,
    ));
    out.push(format!("--kill-signal={KILL_SIGNAL}"));
    out
}

/// The transient oneshot unit the daemon starts inside a running system agent to switch
/// it to `system` in place (`switch-to-configuration test`, as `containers.<name>`'s
/// reload does). Its path is resolved inside the container, in the bound store.
pub const SWITCH_UNIT: &str = "hive-switch.service";

pub fn switch_unit(spec: &AgentSpec, system: &Path, timeout_usec: u64) -> UnitPlan {
    let name = &spec.name;
    let program = system
        .join("bin/switch-to-configuration")
        .display()
        .to_string();
    let properties = vec![
        (
            "Description".into(),
            Prop::Str(format!(
                "hyperhive: switch agent {name} to {}",
                system.display()
            )),
        ),
        ("Type".into(), Prop::Str("oneshot".into())),
        ("TimeoutStartUSec".into(), Prop::U64(timeout_usec)),
        // A failed switch is collected too, so the next one can start; its output stays
        // in the container's journal.
        ("CollectMode".into(), Prop::Str("inactive-or-failed".into())),
        (
            "LogExtraFields".into(),
            Prop::Bytes(vec![fields::assign(fields::AGENT, name).into_bytes()]),
        ),
        (
            "ExecStart".into(),
            Prop::Exec(vec![ExecCommand {
                path: program.clone(),
                argv: literal_args(vec![program, "test".into()]),
                ignore_failure: false,
            }]),
        ),
    ];
    stamp(SWITCH_UNIT.into(), None, properties, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{container_unit, Host};
    use crate::spec::SpecFile;

    fn host() -> Host {
        crate::plan::test_host()
    }

    fn spec(toml: &str) -> AgentSpec {
        let file = SpecFile::from_toml(toml, "t").unwrap();
        AgentSpec::validate(&AgentName::parse("alice").unwrap(), &file).unwrap()
    }

    fn argv(plan: &UnitPlan) -> Vec<String> {
        match plan.get("ExecStart") {
            Some(Prop::Exec(cmds)) => cmds[0].argv.clone(),
            other => panic!("ExecStart: {other:?}"),
        }
    }

    const SYSTEM: &str = "system = \"/nix/store/aaaa-nixos-system-alice\"\n";

    #[test]
    fn a_system_boots_its_init_from_the_bound_gc_root_not_with_boot() {
        let plan = container_unit(&spec(SYSTEM), &host());
        let argv = argv(&plan);
        assert!(argv.contains(&"--directory=/var/lib/hyperhive/agents/alice/root".into()));
        for bind in [
            "--bind-ro=/nix/store:/nix/store:idmap",
            "--bind-ro=/nix/var/nix/db:/nix/var/nix/db:idmap",
            "--bind-ro=/nix/var/nix/daemon-socket:/nix/var/nix/daemon-socket:idmap",
            "--bind-ro=/nix/var/nix/gcroots/hyperhive/alice:/nix/var/hyperhive/system:idmap",
            "--kill-signal=SIGRTMIN+3",
            "--private-users=pick",
            "--private-users-ownership=auto",
        ] {
            assert!(argv.contains(&bind.to_string()), "{bind} missing: {argv:?}");
        }
        assert!(!argv.contains(&"--boot".to_string()), "{argv:?}");
        assert_eq!(
            &argv[argv.len() - 2..],
            ["--", "/nix/var/hyperhive/system/init"]
        );
        // The store path is nowhere on the command line: only the GC root names it.
        assert!(!argv.iter().any(|a| a.contains("aaaa")), "{argv:?}");
        for key in ["RestartForceExitStatus", "SuccessExitStatus"] {
            assert_eq!(plan.get(key), Some(&Prop::ExitStatus(vec![133])), "{key}");
        }
    }

    #[test]
    fn another_system_is_the_same_plan_and_a_root_agent_is_unchanged() {
        let other = spec("system = \"/nix/store/bbbb-nixos-system-alice\"\n");
        assert_eq!(
            container_unit(&spec(SYSTEM), &host()).hash,
            container_unit(&other, &host()).hash,
            "a system change is switched in place, not drift"
        );
        let root = container_unit(&spec("root = \"/srv/a\"\n"), &host());
        let argv = argv(&root);
        assert!(argv.contains(&"--boot".to_string()));
        assert!(!argv.iter().any(|a| a.contains("/nix/")), "{argv:?}");
        assert!(root.get("RestartForceExitStatus").is_none());
    }

    #[test]
    fn without_a_user_namespace_the_nix_binds_are_plain() {
        let plan = container_unit(&spec(&format!("{SYSTEM}private_users = false\n")), &host());
        assert!(argv(&plan).contains(&"--bind-ro=/nix/store:/nix/store".to_string()));
    }

    #[test]
    fn the_switch_runs_the_new_systems_activation_bounded() {
        let plan = switch_unit(
            &spec(SYSTEM),
            Path::new("/nix/store/bbbb-nixos-system-alice"),
            120_000_000,
        );
        assert_eq!(plan.unit, SWITCH_UNIT);
        assert_eq!(plan.get("Type"), Some(&Prop::Str("oneshot".into())));
        assert_eq!(plan.get("TimeoutStartUSec"), Some(&Prop::U64(120_000_000)));
        assert_eq!(
            argv(&plan),
            [
                "/nix/store/bbbb-nixos-system-alice/bin/switch-to-configuration",
                "test"
            ]
        );
    }
}
