//! What a NixOS system agent's container unit gets beyond a root agent's, the way
//! nixpkgs' `containers.<name>` boots one: an almost empty root of its own, the store and
//! the Nix state bound in read-only, the system's `init` as PID 1 (not `--boot`), the
//! signal and exit status of a container's systemd, and a GC root naming what runs.

use std::path::{Path, PathBuf};

use super::{bind_arg, literal_args, stamp, ExecCommand, Prop, UnitPlan};
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
            Prop::Bytes(vec![format!("HIVE_AGENT={name}").into_bytes()]),
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
