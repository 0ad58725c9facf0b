//! Spec → `hive-harness.service`, the transient unit the daemon creates inside each
//! container over the container's own bus.

use super::{agent_path, literal_args, stamp, ExecCommand, Host, Prop, UnitPlan};
use crate::journal::fields;
use crate::paths::SOCKET_IN_CONTAINER;
use crate::spec::AgentSpec;

pub const HARNESS_UNIT: &str = "hive-harness.service";

/// Where the container unit binds the host's hive-harness (read-only). Under /opt so the
/// mount point can be created on volatile roots, whose /usr is read-only.
pub const HARNESS_IN_CONTAINER: &str = "/opt/hyperhive/bin/hive-harness";

/// The harness feeds systemd's watchdog from its own loop at a quarter of this: a hung
/// harness is killed and restarted after it; one cut off from the daemon is not.
pub const HARNESS_WATCHDOG_USEC: u64 = 10_000_000;

/// Delay before systemd restarts a failed harness.
pub const HARNESS_RESTART_USEC: u64 = 1_000_000;

pub fn harness_unit(spec: &AgentSpec, host: &Host) -> UnitPlan {
    let name = &spec.name;
    let mut argv = vec![HARNESS_IN_CONTAINER.to_string()];
    if let Some(timeout) = spec.turns {
        argv.push("--turns".into());
        argv.push(format!("--turn-timeout={timeout}"));
    }
    if let Some(c) = &spec.claude {
        argv.extend(super::claude::harness_args(c));
    }
    if !spec.harness.is_empty() {
        argv.push("--".into());
        argv.extend(spec.harness.iter().cloned());
    }
    let env = agent_env(spec, host);
    let mut properties = vec![
        (
            "Description".into(),
            Prop::Str(format!("hyperhive harness of agent {name}")),
        ),
        // READY=1 is sent only once the harness is connected to its socket.
        ("Type".into(), Prop::Str("notify".into())),
        ("NotifyAccess".into(), Prop::Str("main".into())),
        ("WatchdogUSec".into(), Prop::U64(HARNESS_WATCHDOG_USEC)),
        ("Restart".into(), Prop::Str("on-failure".into())),
        ("RestartUSec".into(), Prop::U64(HARNESS_RESTART_USEC)),
        ("Environment".into(), Prop::Strv(env)),
        // Lines of the harness and the agent's command carry the agent's name into the
        // container's journal, which the host reads (a bound /var/log/journal/<id>, or
        // --link-journal=try-host without a persistent host journal):
        // `journalctl -m HIVE_AGENT=<name>` tells the agent's whole story.
    ];
    properties.extend(runs_harness(name.as_str(), argv));
    if let Some(c) = &spec.claude {
        properties.extend(super::claude::harness_properties(c));
    }
    stamp(HARNESS_UNIT.into(), None, properties, None)
}

/// The environment the agent's programs run with inside its container (the harness, and
/// an admin's `hivectl login`).
pub fn agent_env(spec: &AgentSpec, host: &Host) -> Vec<String> {
    // The PATH the agent's command sees: anything the spec adds is on it (seed gotcha
    // "service PATH != host PATH"), whatever the container's defaults are.
    let mut env = vec![
        format!("PATH={}", agent_path(spec, host)),
        fields::assign(fields::AGENT, &spec.name),
        fields::assign(fields::ENV_SOCKET, SOCKET_IN_CONTAINER),
    ];
    if super::egress::has_egress(spec) {
        // Before the spec's own env, so an admin's explicit value wins.
        env.extend(super::egress::proxy_env());
    }
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

/// A unit inside the container that runs hive-harness with `argv` (argv\[0\] included),
/// its lines carrying the agent's name.
pub(super) fn runs_harness(agent: &str, argv: Vec<String>) -> [(String, Prop); 2] {
    [
        (
            "LogExtraFields".into(),
            Prop::Bytes(vec![fields::assign(fields::AGENT, agent).into_bytes()]),
        ),
        (
            "ExecStart".into(),
            Prop::Exec(vec![ExecCommand {
                path: HARNESS_IN_CONTAINER.into(),
                argv: literal_args(argv),
                ignore_failure: false,
            }]),
        ),
    ]
}
