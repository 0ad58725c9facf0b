//! `hivectl status NAME`: one agent in detail, read straight from systemd, machined, the
//! agent's spec and state dirs and its journal — never from the daemon, except its
//! pending approvals (the daemon owns the store), so it works while the daemon is down.
//! With `-H` what only the local disk and bus sockets know is left out.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::bounds::UnitBounds;
use super::list::{daemon_agents, spec_path, without};
use super::{BadInput, RootArgs, Target};
use crate::paths::Roots;
use crate::spec::AgentName;
use crate::systemd::{Systemd, UnitStatus};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Agent name
    pub name: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct AgentStatus {
    pub name: String,
    /// The remote host (`-H`) it was read from; absent for this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub unit: String,
    pub machine: String,
    pub machine_registered: bool,
    pub spec: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub credentials_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// `null` when systemd holds no unit for the agent (stopped or never started).
    pub container: Option<UnitStatus>,
    /// hive-harness.service inside the container, read from the container's own systemd;
    /// `null` when the container is not running.
    pub harness: Option<UnitStatus>,
    /// The container unit's last failure, from systemd's journal entries: after an
    /// automatic restart its properties no longer say why (`null`: none recorded, or the
    /// journal cannot be read).
    pub last_crash: Option<super::crash::Crash>,
    /// The same for hive-harness.service, from the container's journal.
    pub harness_last_crash: Option<super::crash::Crash>,
    /// Where container root sits on the host: `{"host_uid": N, "count": N}` under the
    /// agent's own user namespace, `{"host_uid": 0, ...}` without one; `null` when the
    /// container is not running.
    pub user_namespace: Option<UidRange>,
    /// The agent's most recent journal lines (`hivectl logs`).
    pub recent_log: Vec<String>,
    /// Ids of the agent's pending approvals; `null` when the daemon is down or the caller
    /// may not see approvals (root and hive-admin only).
    pub pending_approvals: Option<Vec<i64>>,
    /// The NixOS system a system agent runs, as its GC root names it (the daemon moves the
    /// root on each boot and switch); `null` for an agent that boots a root directory.
    pub system: Option<RunningSystem>,
    /// Memory, tasks and CPU: each bound and its use, from the unit's properties (and the
    /// kernel's OOM count, on this host); `null` when systemd holds no unit.
    pub bounds: Option<super::bounds::UnitBounds>,
    /// What the agent has written on this host (state, credentials, journal) against its
    /// `disk_max`, and whether that bound is enforced; `null` over `-H` or without a spec.
    pub disk: Option<crate::disk::DiskUse>,
    /// The agent's last turn in the turn loop, from the daemon's `agent_turn` journal
    /// entries; `null` when none is recorded (or the journal cannot be read).
    pub last_turn: Option<super::tell::LastTurn>,
    /// What a Claude Code agent's turns cost today (UTC), from the same entries; `null`
    /// when none recorded a cost today.
    pub spent_today: Option<super::tell::SpentToday>,
    /// The agent's network as its spec says; `null` when the spec cannot be read.
    pub network: Option<super::network_status::NetworkStatus>,
}

/// A system agent's running system and the GC root that keeps it from the collector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunningSystem {
    pub running: PathBuf,
    pub gc_root: PathBuf,
}

impl RunningSystem {
    /// Read from the agent's GC root: a host path only root writes, never inside the
    /// agent's trees.
    fn of(name: &AgentName) -> Option<Self> {
        let gc_root = crate::plan::system::gc_root(name);
        let running = std::fs::read_link(&gc_root).ok()?;
        Some(Self { running, gc_root })
    }
}

/// One line of a uid_map: container uid 0 is `host_uid` on the host, for `count` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UidRange {
    pub host_uid: u64,
    pub count: u64,
}

/// The user namespace of a running container, from its leader's `/proc/<pid>/uid_map`
/// (readable by every user).
async fn user_namespace(sd: &Systemd, name: &AgentName) -> Option<UidRange> {
    let leader = sd.machine_leader(&name.machine()).await.ok()??;
    let map = std::fs::read_to_string(format!("/proc/{leader}/uid_map")).ok()?;
    let mut fields = map
        .lines()
        .next()?
        .split_whitespace()
        .map(str::parse::<u64>);
    match (
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ) {
        (0, host_uid, count) => Some(UidRange { host_uid, count }),
        _ => None,
    }
}

/// The agent's pending approvals, from the daemon (which owns the store).
async fn pending_approvals(conn: &zbus::Connection, name: &AgentName) -> Option<Vec<i64>> {
    let manager = crate::api::client::ManagerProxy::new(conn).await.ok()?;
    // A read: it does not start a daemon an admin stopped.
    let all: Vec<crate::api::ApprovalRecord> = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        super::daemon_call::read_if_up(&manager, "ListApprovals", &(false,)),
    )
    .await
    .ok()?
    .ok()?;
    Some(
        all.iter()
            .filter(|a| a.agent == name.as_str())
            .map(|a| a.id)
            .collect(),
    )
}

/// The harness unit's state, from the systemd inside the container, reached from inside
/// its namespaces as `systemctl -M` does (root only; `None` otherwise or on no answer).
/// The container unit's bounds and use; the OOM count is read from this host's cgroups.
async fn unit_bounds(sd: &Systemd, name: &AgentName, local: bool) -> Option<UnitBounds> {
    let props = sd.properties(&name.container_unit()).await.ok()??;
    let mut b = UnitBounds::from_properties(&props);
    if local {
        b.oom_kills = crate::cgroup::oom_kills(&name.container_unit());
    }
    Some(b)
}

async fn harness_status(host_sd: &Systemd, name: &AgentName) -> Option<UnitStatus> {
    let timeout = std::time::Duration::from_secs(2);
    let read = async {
        host_sd
            .container(&name.machine(), timeout)
            .await
            .ok()?
            .status(crate::plan::HARNESS_UNIT)
            .await
            .ok()?
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Fields `status -H` leaves out: they come from this machine's disk and bus sockets.
const REMOTE_LEAVES_OUT: [&str; 13] = [
    "network",
    "spec",
    "disk",
    "last_crash",
    "harness_last_crash",
    "state_dir",
    "credentials_dir",
    "runtime_dir",
    "harness",
    "recent_log",
    "last_turn",
    "spent_today",
    "system",
];

pub async fn status(t: &Target, roots: &RootArgs, args: StatusArgs) -> Result<()> {
    let roots = roots.roots()?;
    let name = AgentName::parse(&args.name).map_err(|e| BadInput(e.to_string()))?;
    let conn = t.connect().await?;
    let sd = Systemd::reader(&conn).await?;
    let unit = sd.status(&name.container_unit()).await?;
    if let Some(host) = t.remote() {
        let st = remote_status(&conn, &sd, &roots, &name, unit, host).await?;
        if args.json {
            let v = without(serde_json::to_value(&st)?, &REMOTE_LEAVES_OUT);
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", super::status_text::render_status(&st));
        }
        return Ok(());
    }
    let st = local_status(&conn, &sd, &roots, &name, unit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", super::status_text::render_status(&st));
    }
    Ok(())
}

/// The agent on a host reached with `-H`: what its systemd and its daemon say, nothing of
/// that host's disk.
async fn remote_status(
    conn: &zbus::Connection,
    sd: &Systemd,
    roots: &Roots,
    name: &AgentName,
    unit: Option<UnitStatus>,
    host: &super::remote::Host,
) -> Result<AgentStatus> {
    let known = daemon_agents(conn)
        .await
        .ok()
        .flatten()
        .is_some_and(|a| a.contains(name));
    if unit.is_none() && !known {
        return Err(BadInput(format!(
            "no agent {name} on {}: hive-c0re does not know it and there is no unit {}",
            host.destination(),
            name.container_unit()
        ))
        .into());
    }
    Ok(AgentStatus {
        machine_registered: sd
            .machine_registered(&name.machine())
            .await
            .unwrap_or(false),
        host: Some(host.to_string()),
        name: name.to_string(),
        unit: name.container_unit(),
        machine: name.machine(),
        spec: None,
        state_dir: roots.state_dir(name),
        credentials_dir: roots.claude_dir(name),
        runtime_dir: roots.runtime_dir(name),
        harness: None,
        // The remote host's /proc is not ours to read.
        user_namespace: None,
        bounds: unit_bounds(sd, name, false).await,
        disk: None,
        container: unit,
        last_crash: None,
        harness_last_crash: None,
        last_turn: None,
        spent_today: None,
        network: None,
        system: None,
        recent_log: Vec::new(),
        pending_approvals: pending_approvals(conn, name).await,
    })
}

/// The agent on this host: systemd, machined, its spec and dirs, and its journal.
async fn local_status(
    conn: &zbus::Connection,
    sd: &Systemd,
    roots: &Roots,
    name: &AgentName,
    unit: Option<UnitStatus>,
) -> Result<AgentStatus> {
    let spec = spec_path(roots, name);
    if unit.is_none() && spec.is_none() {
        return Err(BadInput(format!(
            "no agent {name}: no spec and no unit {}",
            name.container_unit()
        ))
        .into());
    }
    Ok(AgentStatus {
        host: None,
        machine_registered: sd
            .machine_registered(&name.machine())
            .await
            .unwrap_or(false),
        name: name.to_string(),
        unit: name.container_unit(),
        machine: name.machine(),
        spec,
        // In its image where it has one (docs/persistence.md, "Disk").
        state_dir: if roots.disk_image(name).is_file() {
            roots.disk_dir(name).join("state")
        } else {
            roots.state_dir(name)
        },
        credentials_dir: if roots.disk_image(name).is_file() {
            roots.disk_dir(name).join("claude")
        } else {
            roots.claude_dir(name)
        },
        runtime_dir: roots.runtime_dir(name),
        harness: if unit.as_ref().is_some_and(|u| u.is_up()) {
            harness_status(sd, name).await
        } else {
            None
        },
        user_namespace: if unit.as_ref().is_some_and(|u| u.is_up()) {
            user_namespace(sd, name).await
        } else {
            None
        },
        last_crash: super::crash::read(&name.container_unit(), None),
        harness_last_crash: if unit.as_ref().is_some_and(|u| u.is_up()) {
            super::crash::read(crate::plan::HARNESS_UNIT, Some(&name.machine()))
        } else {
            None
        },
        bounds: unit_bounds(sd, name, true).await,
        disk: super::bounds::disk_use(roots, name),
        container: unit,
        recent_log: super::logs::recent(name, 10),
        last_turn: super::tell::last_turn(name),
        spent_today: super::tell::spent_today(name),
        network: super::network_status::read(roots, name),
        system: RunningSystem::of(name),
        pending_approvals: pending_approvals(conn, name).await,
    })
}
