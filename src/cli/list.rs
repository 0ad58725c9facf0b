//! `hivectl list`: read straight from systemd (and the spec files), never from the
//! daemon, so it works while the daemon is down. `cli/status.rs` shows one agent.
//!
//! With `-H` the spec files are on another machine: agent names then come from the
//! daemon's `ListAgents` plus the units systemd holds there, and what only the local disk
//! knows (spec file, paths, the harness over its bus socket, the journal) is left out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::render::table;
use super::{RootArgs, Target};
use crate::inventory::{spec_names, unit_makes_an_agent};
use crate::paths::Roots;
use crate::spec::AgentName;
use crate::systemd::{ActiveState, SubState, Systemd, AGENT_UNITS};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON (an array of agents) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Do not print the header and footer
    #[arg(long)]
    pub no_legend: bool,
}

#[derive(Debug, Serialize)]
pub struct AgentRow {
    pub name: String,
    pub unit: String,
    pub machine: String,
    pub load_state: String,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    /// The spec file the agent is started from, if it has one.
    pub spec: Option<PathBuf>,
    /// The bounds a running agent uses 90 % or more of (`memory`, `tasks`), from its
    /// unit's properties: `hivectl status NAME` shows each with its use, and its disk.
    pub near_bounds: Vec<String>,
    /// Its disk image's use and bound (statvfs of the mounted image), where it has one;
    /// `disk` is then in `near_bounds` from 90 %. Left out over `-H`.
    pub disk: Option<crate::disk::DiskUse>,
}

pub(super) fn spec_path(roots: &Roots, name: &AgentName) -> Option<PathBuf> {
    roots.spec_paths(name).into_iter().find(|p| p.exists())
}

type UnitStates = BTreeMap<AgentName, (String, ActiveState, SubState)>;

/// (load, active, sub) of every hive-agent-* unit systemd holds.
async fn unit_states(sd: &Systemd) -> Result<UnitStates> {
    let mut units = UnitStates::new();
    for u in sd.list(AGENT_UNITS).await? {
        if let Some(n) = AgentName::from_container_unit(&u.name) {
            units.insert(n, (u.load_state, u.active_state, u.sub_state));
        }
    }
    Ok(units)
}

pub async fn rows(roots: &Roots, sd: &Systemd) -> Result<Vec<AgentRow>> {
    let units = unit_states(sd).await?;
    Ok(assemble(spec_names(roots), &units, |n| spec_path(roots, n)))
}

/// Agents the daemon knows; `None` when no daemon answers on that bus.
pub(super) async fn daemon_agents(conn: &zbus::Connection) -> Result<Option<Vec<AgentName>>> {
    let manager = crate::api::client::ManagerProxy::new(conn).await?;
    // A read: it does not start a daemon an admin stopped.
    let listed: zbus::Result<Vec<(String, String, String, zbus::zvariant::OwnedObjectPath)>> =
        super::daemon_call::read_if_up(&manager, "ListAgents", &()).await;
    match listed {
        Ok(agents) => Ok(Some(
            agents
                .iter()
                .filter_map(|a| AgentName::parse(&a.0).ok())
                .collect(),
        )),
        Err(e) if super::daemon_call::daemon_absent(&e) => Ok(None),
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
            .filter(|(_, u)| unit_makes_an_agent(&u.1))
            .map(|(n, _)| n.clone()),
    );
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let (load, active, sub) = units.get(&n).cloned().unwrap_or_else(|| {
                (
                    "not-loaded".into(),
                    ActiveState::Inactive,
                    SubState::from("dead"),
                )
            });
            AgentRow {
                unit: n.container_unit(),
                machine: n.machine(),
                spec: spec_of(&n),
                name: n.to_string(),
                load_state: load,
                active_state: active,
                sub_state: sub,
                near_bounds: Vec::new(),
                disk: None,
            }
        })
        .collect()
}

/// Fills in the bounds each running agent is near, from its unit's properties.
async fn flag_near_bounds(sd: &Systemd, rows: &mut [AgentRow]) {
    for r in rows.iter_mut().filter(|r| r.active_state.is_up()) {
        if let Ok(Some(props)) = sd.properties(&r.unit).await {
            r.near_bounds = super::bounds::UnitBounds::from_properties(&props).near();
        }
    }
}

/// Each agent's disk image use, read from its mounted filesystem (never by walking what the
/// agent wrote, so `list` stays fast); agents without an image are left out.
fn flag_disks(roots: &Roots, rows: &mut [AgentRow]) {
    for r in rows.iter_mut() {
        let Ok(name) = AgentName::parse(&r.name) else {
            continue;
        };
        if !roots.disk_image(&name).is_file() {
            continue;
        }
        if let Some(d) = super::bounds::disk_use(roots, &name) {
            if d.near() {
                r.near_bounds.push("disk".into());
            }
            r.disk = Some(d);
        }
    }
}

/// JSON without the fields only the local disk can fill in.
pub(super) fn without(value: serde_json::Value, local_only: &[&str]) -> serde_json::Value {
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
    let mut rows = match t {
        Target::Local => local_rows(&conn, &roots, &sd).await?,
        Target::Remote(_) => remote_rows(&conn, &sd).await?,
    };
    flag_near_bounds(&sd, &mut rows).await;
    if t.remote().is_none() {
        flag_disks(&roots, &mut rows);
    }
    if args.json {
        let mut v = serde_json::to_value(&rows)?;
        if t.remote().is_some() {
            v = without(v, &["spec", "disk"]);
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
                r.active_state.to_string(),
                r.sub_state.to_string(),
                r.machine.clone(),
                if r.near_bounds.is_empty() {
                    "-".to_owned()
                } else {
                    format!("near {}", r.near_bounds.join(","))
                },
            ]
        })
        .collect();
    let header = [
        "AGENT", "UNIT", "LOAD", "ACTIVE", "SUB", "MACHINE", "BOUNDS",
    ];
    print!(
        "{}",
        table(if args.no_legend { None } else { Some(&header) }, &body)
    );
    if !args.no_legend {
        println!("\n{} agents listed.", rows.len());
    }
    Ok(())
}
