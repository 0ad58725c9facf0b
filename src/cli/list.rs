//! `hivectl list` and `hivectl status`: read straight from systemd (and the spec files),
//! never from the daemon, so they work while it is down.
//!
//! With `-H` the spec files are on another machine: agent names then come from the
//! daemon's `ListAgents` plus the units systemd holds there, and what only the local disk
//! knows (spec file, paths, the harness over its bus socket, the journal) is left out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::render::{format_usec, table};
use super::{BadInput, RootArgs, Target};
use crate::daemon::spec_names;
use crate::paths::Roots;
use crate::spec::AgentName;
use crate::systemd::{Systemd, UnitStatus};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON (an array of agents) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Do not print the header and footer
    #[arg(long)]
    pub no_legend: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Agent name
    pub name: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct AgentRow {
    pub name: String,
    pub unit: String,
    pub machine: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// The spec file the agent is started from, if it has one.
    pub spec: Option<PathBuf>,
}

fn spec_path(roots: &Roots, name: &AgentName) -> Option<PathBuf> {
    roots.spec_paths(name).into_iter().find(|p| p.exists())
}

type UnitStates = BTreeMap<AgentName, (String, String, String)>;

/// (load, active, sub) of every hive-agent-* unit systemd holds.
async fn unit_states(sd: &Systemd) -> Result<UnitStates> {
    let mut units = UnitStates::new();
    for u in sd.list("hive-agent-*.service").await? {
        if let Some(n) = AgentName::from_container_unit(&u.0) {
            units.insert(n, (u.2, u.3, u.4));
        }
    }
    Ok(units)
}

pub async fn rows(roots: &Roots, sd: &Systemd) -> Result<Vec<AgentRow>> {
    let units = unit_states(sd).await?;
    Ok(assemble(spec_names(roots), &units, |n| spec_path(roots, n)))
}

/// Agents the daemon knows; `None` when no daemon answers on that bus.
async fn daemon_agents(conn: &zbus::Connection) -> Result<Option<Vec<AgentName>>> {
    let manager = crate::api::client::ManagerProxy::new(conn).await?;
    match manager.list_agents().await {
        Ok(agents) => Ok(Some(
            agents
                .iter()
                .filter_map(|a| AgentName::parse(&a.0).ok())
                .collect(),
        )),
        Err(e)
            if matches!(
                crate::systemd::error_name(&e),
                Some(
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                        | "org.freedesktop.DBus.Error.NameHasNoOwner"
                )
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The rows for a remote host: names from its daemon (whatever specs it has on its disk)
/// and its running units; no spec paths.
async fn remote_rows(conn: &zbus::Connection, sd: &Systemd) -> Result<Vec<AgentRow>> {
    let units = unit_states(sd).await?;
    let names = daemon_agents(conn).await?.unwrap_or_default();
    Ok(assemble(names, &units, |_| None))
}

fn assemble(
    names: impl IntoIterator<Item = AgentName>,
    units: &UnitStates,
    spec_of: impl Fn(&AgentName) -> Option<PathBuf>,
) -> Vec<AgentRow> {
    let mut names: Vec<AgentName> = names.into_iter().collect();
    names.extend(
        units
            .iter()
            .filter(|(_, u)| crate::daemon::unit_makes_an_agent(&u.1))
            .map(|(n, _)| n.clone()),
    );
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let (load, active, sub) = units
                .get(&n)
                .cloned()
                .unwrap_or_else(|| ("not-loaded".into(), "inactive".into(), "dead".into()));
            AgentRow {
                unit: n.container_unit(),
                machine: n.machine(),
                spec: spec_of(&n),
                name: n.to_string(),
                load_state: load,
                active_state: active,
                sub_state: sub,
            }
        })
        .collect()
}

/// JSON without the fields only the local disk can fill in.
fn without(value: serde_json::Value, local_only: &[&str]) -> serde_json::Value {
    match value {
        serde_json::Value::Object(mut m) => {
            for k in local_only {
                m.remove(*k);
            }
            serde_json::Value::Object(m)
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(|v| without(v, local_only)).collect())
        }
        v => v,
    }
}

/// Agent dirs whose spec this user cannot even look for (each agent's dir is 0700): a
/// stopped agent among them would be missing from the spec files' view.
fn unreadable_agent_dirs(roots: &Roots) -> Vec<AgentName> {
    let Ok(dir) = std::fs::read_dir(roots.agents_dir()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| AgentName::parse(e.file_name().to_str()?).ok())
        .filter(|n| {
            matches!(
                std::fs::metadata(roots.saved_spec(n)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied
            )
        })
        .collect()
}

/// This host's rows. Specs this user cannot read are not a reason to omit an agent: the
/// daemon (ListAgents is open to anyone) names them; without it, say what is missing.
async fn local_rows(conn: &zbus::Connection, roots: &Roots, sd: &Systemd) -> Result<Vec<AgentRow>> {
    let units = unit_states(sd).await?;
    let mut names = spec_names(roots);
    let hidden = unreadable_agent_dirs(roots);
    if !hidden.is_empty() {
        match daemon_agents(conn).await {
            Ok(Some(known)) => names.extend(known),
            _ => eprintln!(
                "hivectl: note: cannot read the specs under {} as this user and hive-c0re is \
                 not answering: stopped agents may be missing; run as root to see every agent",
                roots.agents_dir().display(),
            ),
        }
    }
    Ok(assemble(names, &units, |n| spec_path(roots, n)))
}

pub async fn list(t: &Target, roots: &RootArgs, args: ListArgs) -> Result<()> {
    let roots = roots.roots()?;
    let conn = t.connect().await?;
    let sd = Systemd::reader(&conn).await?;
    let rows = match t {
        Target::Local => local_rows(&conn, &roots, &sd).await?,
        Target::Remote(_) => remote_rows(&conn, &sd).await?,
    };
    if args.json {
        let mut v = serde_json::to_value(&rows)?;
        if t.remote().is_some() {
            v = without(v, &["spec"]);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.unit.clone(),
                r.load_state.clone(),
                r.active_state.clone(),
                r.sub_state.clone(),
                r.machine.clone(),
            ]
        })
        .collect();
    let header = ["AGENT", "UNIT", "LOAD", "ACTIVE", "SUB", "MACHINE"];
    print!(
        "{}",
        table(if args.no_legend { None } else { Some(&header) }, &body)
    );
    if !args.no_legend {
        println!("\n{} agents listed.", rows.len());
    }
    Ok(())
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
    let all = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        manager.list_approvals(false),
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
const REMOTE_LEAVES_OUT: [&str; 8] = [
    "spec",
    "last_crash",
    "harness_last_crash",
    "state_dir",
    "credentials_dir",
    "runtime_dir",
    "harness",
    "recent_log",
];

pub async fn status(t: &Target, roots: &RootArgs, args: StatusArgs) -> Result<()> {
    let roots = roots.roots()?;
    let name = AgentName::parse(&args.name).map_err(|e| BadInput(e.to_string()))?;
    let conn = t.connect().await?;
    let sd = Systemd::reader(&conn).await?;
    let unit = sd.status(&name.container_unit()).await?;
    if let Some(host) = t.remote() {
        let known = daemon_agents(&conn)
            .await
            .ok()
            .flatten()
            .is_some_and(|a| a.contains(&name));
        if unit.is_none() && !known {
            return Err(BadInput(format!(
                "no agent {name} on {}: hive-c0re does not know it and there is no unit {}",
                host.destination(),
                name.container_unit()
            ))
            .into());
        }
        let st = AgentStatus {
            machine_registered: sd
                .machine_registered(&name.machine())
                .await
                .unwrap_or(false),
            host: Some(host.to_string()),
            name: name.to_string(),
            unit: name.container_unit(),
            machine: name.machine(),
            spec: None,
            state_dir: roots.state_dir(&name),
            credentials_dir: roots.claude_dir(&name),
            runtime_dir: roots.runtime_dir(&name),
            harness: None,
            // The remote host's /proc is not ours to read.
            user_namespace: None,
            container: unit,
            last_crash: None,
            harness_last_crash: None,
            recent_log: Vec::new(),
            pending_approvals: pending_approvals(&conn, &name).await,
        };
        if args.json {
            let v = without(serde_json::to_value(&st)?, &REMOTE_LEAVES_OUT);
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", render_status(&st));
        }
        return Ok(());
    }
    let spec = spec_path(&roots, &name);
    if unit.is_none() && spec.is_none() {
        return Err(BadInput(format!(
            "no agent {name}: no spec and no unit {}",
            name.container_unit()
        ))
        .into());
    }
    let st = AgentStatus {
        host: None,
        machine_registered: sd
            .machine_registered(&name.machine())
            .await
            .unwrap_or(false),
        name: name.to_string(),
        unit: name.container_unit(),
        machine: name.machine(),
        spec,
        state_dir: roots.state_dir(&name),
        credentials_dir: roots.claude_dir(&name),
        runtime_dir: roots.runtime_dir(&name),
        harness: if unit.as_ref().is_some_and(|u| u.is_up()) {
            harness_status(&sd, &name).await
        } else {
            None
        },
        user_namespace: if unit.as_ref().is_some_and(|u| u.is_up()) {
            user_namespace(&sd, &name).await
        } else {
            None
        },
        last_crash: super::crash::read(&name.container_unit(), None),
        harness_last_crash: if unit.as_ref().is_some_and(|u| u.is_up()) {
            super::crash::read(crate::plan::HARNESS_UNIT, Some(&name.machine()))
        } else {
            None
        },
        container: unit,
        recent_log: super::logs::recent(&name, 10),
        pending_approvals: pending_approvals(&conn, &name).await,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", render_status(&st));
    }
    Ok(())
}

/// Text for `hivectl status`, in the spirit of `systemctl status`.
pub fn render_status(st: &AgentStatus) -> String {
    let mut out = String::new();
    let (dot, state) = match &st.container {
        Some(u) => (
            if u.is_failed() {
                "×"
            } else if u.is_up() {
                "●"
            } else {
                "○"
            },
            format!(
                "{} ({}) since {}",
                u.active_state,
                u.sub_state,
                format_usec(u.state_change_timestamp)
            ),
        ),
        None => ("○", "inactive (no unit loaded)".to_string()),
    };
    out.push_str(&format!("{dot} {} - hyperhive agent\n", st.name));
    out.push_str(&format!("      Unit: {}\n", st.unit));
    out.push_str(&format!("    Active: {state}\n"));
    if let Some(u) = &st.container {
        out.push_str(&format!(
            "    Result: {}   Main: {} (code={}, status={})   Restarts: {}\n",
            u.result,
            u.main_pid,
            u.exec_main_code_name(),
            u.exec_main_status,
            u.n_restarts
        ));
        out.push_str(&format!("Invocation: {}\n", u.invocation_id));
    }
    if st.host.is_none() {
        let line = |what: &str, c: &super::crash::Crash| {
            format!(
                "{what} at {}: {} (result {}, invocation {})",
                format_usec(c.at_usec),
                c.how(),
                c.result,
                c.invocation_id
            )
        };
        match (&st.last_crash, &st.harness_last_crash) {
            (None, None) => out.push_str("Last crash: none recorded\n"),
            (c, h) => {
                let mut lines = c.iter().map(|c| line("container", c));
                let mut rest = h.iter().map(|h| line("harness", h));
                let first = lines.next().or_else(|| rest.next()).unwrap_or_default();
                out.push_str(&format!("Last crash: {first}\n"));
                for l in lines.chain(rest) {
                    out.push_str(&format!("            {l}\n"));
                }
            }
        }
    }
    match st.user_namespace {
        Some(UidRange { host_uid: 0, .. }) => {
            out.push_str("   User NS: none: container root is host root (private_users = false)\n")
        }
        Some(r) => out.push_str(&format!(
            "   User NS: container root is host uid {} ({} ids)\n",
            r.host_uid, r.count
        )),
        None => {}
    }
    match (&st.host, &st.harness) {
        (Some(host), _) => out.push_str(&format!(
            "   Harness: not read over -H (systemctl -H {host}/{} status {})\n",
            st.machine,
            crate::plan::HARNESS_UNIT
        )),
        (None, Some(h)) => out.push_str(&format!(
            "   Harness: {} ({}), result {}, {} restarts\n",
            h.active_state, h.sub_state, h.result, h.n_restarts
        )),
        (None, None) => out.push_str("   Harness: -\n"),
    }
    out.push_str(&format!(
        "   Machine: {} ({})\n",
        st.machine,
        if st.machine_registered {
            "registered"
        } else {
            "not registered"
        }
    ));
    if let Some(host) = &st.host {
        // The spec and the dirs are on that host's disk; its journal is one ssh away.
        out.push_str(&format!("      Host: {host}\n"));
    } else {
        let spec = st
            .spec
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!("      Spec: {spec}\n"));
        out.push_str(&format!("     State: {}\n", st.state_dir.display()));
        out.push_str(&format!("     Creds: {}\n", st.credentials_dir.display()));
        out.push_str(&format!("   Runtime: {}\n", st.runtime_dir.display()));
    }
    let pending = match &st.pending_approvals {
        Some(ids) if ids.is_empty() => "none".to_string(),
        Some(ids) => {
            ids.iter()
                .map(|id| format!("#{id}"))
                .collect::<Vec<_>>()
                .join(" ")
                + " (hivectl approvals)"
        }
        None => "unknown (daemon down, or not root/hive-admin)".to_string(),
    };
    out.push_str(&format!(" Approvals: {pending}\n"));
    if let Some(host) = &st.host {
        out.push_str(&format!(
            "       Log: hivectl -H {host} logs {} -n 20\n",
            st.name
        ));
    }
    if !st.recent_log.is_empty() {
        out.push('\n');
        for line in &st.recent_log {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
