//! The container's command line: `systemd-nspawn` with its machine, root, journal, user
//! namespace, binds, capabilities and network, then what it boots (pure).

use std::path::Path;

use super::{
    agent_journal_dir, agent_machine_id, bind_arg, claude, disk, egress, system, Host,
    HARNESS_IN_CONTAINER, WAIT_ONLINE,
};
use crate::journal::fields;
use crate::spec::{AgentSpec, Network, Volatile, DROPPED_CAPABILITIES};

/// The variable the container's systemd reads its burst of mount table changes per second
/// from, and what hyperhive sets it to (systemd's default is 5).
pub const MOUNT_BURST_VAR: &str = "SYSTEMD_DEFAULT_MOUNT_RATE_LIMIT_BURST";
pub const MOUNT_BURST: u32 = 25;

/// nspawn's command line: the machine, its root and journal, the binds, capabilities,
/// network, and what it boots.
pub(super) fn argv(spec: &AgentSpec, host: &Host) -> Vec<String> {
    let name = &spec.name;
    let roots = &host.roots;
    let machine = name.machine();
    let mut argv: Vec<String> = vec![
        host.nspawn.display().to_string(),
        "--quiet".into(),
        "--keep-unit".into(),
        "--register=yes".into(),
        format!("--machine={machine}"),
        format!("--directory={}", system::root_dir(spec, roots).display()),
        format!("--volatile={}", spec.volatile.as_str()),
        // READY=1 once the container's systemd finished booting, so the start job (and
        // `hivectl create`) completes when the agent is really up.
        "--notify-ready=yes".into(),
        "--console=passive".into(),
    ];
    match agent_journal_dir(spec, host) {
        Some(dir) => {
            argv.push(format!("--uuid={}", agent_machine_id(name)));
            argv.push("--link-journal=no".into());
            let source = disk::journal_source(host, name).unwrap_or_else(|| dir.clone());
            argv.push(bind_arg(&source, &dir, false, true));
        }
        None => argv.push("--link-journal=try-host".into()),
    }
    argv.extend(bind_args(spec, host));
    let dropped: Vec<&str> = DROPPED_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| !spec.capabilities.iter().any(|k| k == c))
        .collect();
    if !dropped.is_empty() {
        argv.push(format!("--drop-capability={}", dropped.join(",")));
    }
    if let Some(c) = &spec.claude {
        argv.extend(claude::nspawn_args(c));
    }
    // The spec's env is not passed here: a command line is world-readable (ExecStart on
    // the bus, /proc/*/cmdline). The harness unit carries it, inside the container.
    argv.push(format!("--setenv={}", fields::assign(fields::AGENT, name)));
    // The container's systemd pauses its mount table watch for the rest of a second once
    // it saw 5 changes in one (its default burst), and a boot makes more than that (each
    // early service's credentials are a mount): local-fs.target then waits ~0.9 s for
    // nothing. Measured on 252 and 257, a container booted in 1.6 s, and in 0.6–0.8 s
    // with this. A mount storm the agent makes itself costs only its own CPU. Read from
    // PID 1's environment by systemd ≥ 253 and Debian 12's 252, which carries it; NixOS's
    // stage 2 (a system agent's init) passes its environment on when it execs systemd.
    argv.push(format!("--setenv={MOUNT_BURST_VAR}={MOUNT_BURST}"));
    match spec.network {
        // Host networking (an admin's explicit choice): no flag at all, so nspawn never
        // creates a netns.
        Network::Host => {}
        // Only lo: no route out, no DNS server, none of the host's loopback services,
        // abstract sockets or link-local addresses.
        Network::Private => argv.push("--private-network".into()),
    }
    if spec.system.is_some() {
        // The system's own init is PID 1, as containers.<name> runs it: it activates the
        // system, then execs its systemd.
        argv.push("--".into());
        argv.push(system::init_in_container());
    } else {
        argv.push("--boot".into());
        argv.push("--".into());
        // An empty /etc (volatile roots) must not stop the boot at a firstboot prompt.
        argv.push("systemd.firstboot=off".into());
        if spec.network == Network::Private {
            // In its own namespace the container's root may configure links, so a root
            // whose presets enable systemd-networkd starts it, and its wait-online then
            // holds the boot (and READY=1) for two minutes waiting for a link that will
            // never come: lo is all there is.
            argv.push(format!("systemd.mask={WAIT_ONLINE}"));
        }
    }
    argv
}

/// The container's user namespace and binds: its own dirs (idmapped where it writes), its
/// socket dir, the harness, a system agent's store, the egress proxy's, and the spec's own.
fn bind_args(spec: &AgentSpec, host: &Host) -> Vec<String> {
    let name = &spec.name;
    let roots = &host.roots;
    let mut argv = Vec::new();
    // Binds the agent writes through are idmapped in its user namespace: its root owns
    // them inside, and on the host they stay owned by the host's root in a 0700 tree
    // (docs/persistence.md).
    let idmap = spec.private_users;
    if spec.private_users {
        argv.push("--private-users=pick".into());
        argv.push(format!("--private-users-ownership={}", ownership(spec)));
    }
    argv.push(bind_arg(
        &disk::state_source(host, name),
        Path::new("/state"),
        false,
        idmap,
    ));
    argv.push(bind_arg(
        &disk::claude_source(host, name),
        Path::new("/root/.claude"),
        false,
        idmap,
    ));
    // Read-only: the agent reaches its socket but can neither remove nor replace it, so a
    // daemon restart always rebinds the socket the harness connects to.
    argv.push(bind_arg(
        &roots.runtime_dir(name),
        Path::new("/run/hyperhive"),
        true,
        idmap,
    ));
    argv.push(bind_arg(
        &host.hive_harness,
        Path::new(HARNESS_IN_CONTAINER),
        true,
        false,
    ));
    if spec.system.is_some() {
        argv.extend(system::binds(spec));
    }
    argv.extend(egress::container_args(spec, host));
    for b in &spec.binds {
        argv.push(bind_arg(&b.source, &b.target, b.readonly, idmap));
    }
    argv
}

/// How nspawn treats file ownership in the container's root under a user namespace. A
/// volatile root (or the host's own `/`) only lends its read-only /usr: it is used as it
/// is (`off`; its files show as nobody inside, which a booting systemd tolerates). A root
/// of the agent's own is idmapped where the filesystem can, and chowned otherwise
/// (`auto`), so the container's root owns its tree.
/// A system agent's prepared root is its own (`auto`): with `off` it stays host root's and
/// its init cannot write it.
fn ownership(spec: &AgentSpec) -> &'static str {
    if spec.volatile == Volatile::Yes || spec.root.as_deref() == Some(Path::new("/")) {
        "off"
    } else {
        "auto"
    }
}
