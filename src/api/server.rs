//! The server side of the API: thin methods that check the caller and call
//! [`crate::daemon::Hive`].

use std::sync::Arc;

use serde::Serialize;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::{interface, Connection, ObjectServer};

use super::{agent_path, ApprovalRecord, Error};
use crate::daemon::Hive;
use crate::spec::AgentName;

pub struct Manager {
    pub hive: Arc<Hive>,
}

/// One exported object per agent, like machined's per-machine objects.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub name: String,
    pub unit: String,
    pub machine: String,
}

#[interface(name = "org.hyperhive.Hive1.Agent")]
impl Agent {
    #[zbus(property)]
    fn name(&self) -> &str {
        &self.name
    }

    #[zbus(property)]
    fn unit(&self) -> &str {
        &self.unit
    }

    #[zbus(property)]
    fn machine(&self) -> &str {
        &self.machine
    }
}

fn parse_name(raw: &str) -> Result<AgentName, Error> {
    AgentName::parse(raw).map_err(Error::InvalidArgument)
}

fn object_path(name: &AgentName) -> OwnedObjectPath {
    OwnedObjectPath::try_from(agent_path(name.as_str())).expect("escaped agent path is valid")
}

/// The group whose members may see and decide approvals (units/sysusers.d).
pub const ADMIN_GROUP: &str = "hive-admin";

/// The caller's uid and groups, as the bus daemon knows them.
async fn caller(
    conn: &Connection,
    header: &Header<'_>,
    what: &str,
) -> Result<(u32, Vec<u32>), Error> {
    let sender = header
        .sender()
        .ok_or_else(|| Error::AccessDenied(format!("{what}: caller has no bus name")))?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let creds = dbus
        .get_connection_credentials(zbus::names::BusName::from(sender.to_owned()))
        .await
        .map_err(zbus::Error::from)?;
    let uid = creds.unix_user_id().ok_or_else(|| {
        Error::AccessDenied(format!("{what}: the bus did not say who the caller is"))
    })?;
    let groups = match creds.unix_group_ids() {
        Some(g) => g.clone(),
        // Older bus daemons do not pass groups on: read them from the caller's process.
        None => creds
            .process_id()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .map(|s| groups_from_status(&s))
            .unwrap_or_default(),
    };
    Ok((uid, groups))
}

/// Only root may create, start, stop or destroy agents; the D-Bus policy says the same,
/// this is the second lock.
async fn require_root(conn: &Connection, header: &Header<'_>, what: &str) -> Result<(), Error> {
    let (uid, _) = caller(conn, header, what).await?;
    if uid == 0 {
        Ok(())
    } else {
        Err(Error::AccessDenied(format!(
            "{what}: only root may do this (caller uid {uid})"
        )))
    }
}

/// Root and members of hive-admin may see and decide approvals. Returns who it was, for
/// the record.
async fn require_admin(
    conn: &Connection,
    header: &Header<'_>,
    what: &str,
) -> Result<String, Error> {
    let (uid, groups) = caller(conn, header, what).await?;
    if uid == 0 {
        return Ok("uid 0".into());
    }
    let admin_gid = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| group_gid(&g, ADMIN_GROUP));
    match admin_gid {
        Some(gid) if groups.contains(&gid) => Ok(format!("uid {uid}")),
        _ => Err(Error::AccessDenied(format!(
            "{what}: only root and members of {ADMIN_GROUP} may do this (caller uid {uid})"
        ))),
    }
}

/// A group's gid from /etc/group text.
pub fn group_gid(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Supplementary groups from /proc/<pid>/status ("Groups:\t10 27 ...").
pub fn groups_from_status(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Manager {
    /// Exports the agent's object if it is not yet, announcing it with AgentNew.
    pub async fn export_agent(
        server: &ObjectServer,
        emitter: &SignalEmitter<'_>,
        name: &AgentName,
    ) -> zbus::Result<()> {
        let path = object_path(name);
        let agent = Agent {
            name: name.to_string(),
            unit: name.container_unit(),
            machine: name.machine(),
        };
        if server.at(&path, agent).await? {
            Self::agent_new(emitter, name.as_str(), path.as_ref()).await?;
        }
        Ok(())
    }

    pub async fn unexport_agent(
        server: &ObjectServer,
        emitter: &SignalEmitter<'_>,
        name: &AgentName,
    ) -> zbus::Result<()> {
        let path = object_path(name);
        match server.remove::<Agent, _>(&path).await {
            Ok(true) => Self::agent_removed(emitter, name.as_str(), path.as_ref()).await,
            // Not exported (an agent destroyed earlier, purged now): nothing to remove.
            Ok(false) | Err(zbus::Error::InterfaceNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[interface(name = "org.hyperhive.Hive1.Manager")]
impl Manager {
    /// Agents the daemon knows: (name, unit, machine, object path).
    async fn list_agents(&self) -> Vec<(String, String, String, OwnedObjectPath)> {
        // known_agents is a sorted set, so the list comes out sorted by name.
        crate::daemon::known_agents(&self.hive.host.roots, &self.hive.sd)
            .await
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    n.container_unit(),
                    n.machine(),
                    object_path(&n),
                )
            })
            .collect()
    }

    /// The object path of an agent the daemon knows.
    async fn get_agent(
        &self,
        name: &str,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, Error> {
        let name = parse_name(name)?;
        let path = object_path(&name);
        if server.interface::<_, Agent>(&path).await.is_ok() {
            Ok(path)
        } else {
            Err(Error::NoSuchAgent(format!("no agent {name}")))
        }
    }

    /// Validates `spec_toml`, saves it, and brings the container unit up. Returns
    /// `created`, `adopted` (units without a spec), `replaced` or `unchanged` (the agent
    /// already has this spec). An agent with another spec is refused (InvalidArgument,
    /// listing the differences): ReplaceAgent replaces it.
    async fn create_agent(
        &self,
        name: &str,
        spec_toml: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, Error> {
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("create agent {name}")).await?;
        let outcome = self.hive.create(&name, spec_toml, false).await?;
        Self::export_agent(server, &emitter, &name).await?;
        Ok(outcome.as_str().into())
    }

    /// CreateAgent that replaces an agent's other spec with this one (`hivectl create
    /// --replace`).
    async fn replace_agent(
        &self,
        name: &str,
        spec_toml: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, Error> {
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("replace agent {name}")).await?;
        let outcome = self.hive.create(&name, spec_toml, true).await?;
        Self::export_agent(server, &emitter, &name).await?;
        Ok(outcome.as_str().into())
    }

    async fn start_agent(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, Error> {
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("start agent {name}")).await?;
        let outcome = self.hive.start(&name).await?;
        Self::export_agent(server, &emitter, &name).await?;
        Ok(outcome.as_str().into())
    }

    async fn stop_agent(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("stop agent {name}")).await?;
        self.hive.stop(&name).await
    }

    async fn restart_agent(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("restart agent {name}")).await?;
        self.hive.restart(&name).await
    }

    async fn rebuild_agent(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, Error> {
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("rebuild agent {name}")).await?;
        let outcome = self.hive.rebuild(&name).await?;
        Self::export_agent(server, &emitter, &name).await?;
        Ok(outcome.as_str().into())
    }

    /// Stops the agent and removes its spec; `purge` also deletes its state and credentials.
    async fn destroy_agent(
        &self,
        name: &str,
        purge: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), Error> {
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("destroy agent {name}")).await?;
        self.hive.destroy(&name, purge).await?;
        Self::unexport_agent(server, &emitter, &name).await?;
        Ok(())
    }

    /// Approvals, oldest first: pending ones, or `all` of them. Pending approvals whose
    /// agent's state dir is gone are marked failed first.
    async fn list_approvals(
        &self,
        all: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        require_admin(conn, &header, "list approvals").await?;
        Ok(self
            .hive
            .approvals
            .list(all)?
            .iter()
            .map(ApprovalRecord::from)
            .collect())
    }

    async fn get_approval(
        &self,
        id: i64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ApprovalRecord, Error> {
        require_admin(conn, &header, &format!("read approval {id}")).await?;
        Ok(ApprovalRecord::from(&self.hive.approvals.get(id)?))
    }

    /// Approves and applies; returns the approval as it ended (applied or failed).
    async fn approve(
        &self,
        id: i64,
        note: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ApprovalRecord, Error> {
        let by = require_admin(conn, &header, &format!("approve {id}")).await?;
        let note = (!note.is_empty()).then_some(note);
        Ok(ApprovalRecord::from(
            &self.hive.approve(id, &by, note).await?,
        ))
    }

    async fn deny(
        &self,
        id: i64,
        note: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ApprovalRecord, Error> {
        let by = require_admin(conn, &header, &format!("deny {id}")).await?;
        let note = (!note.is_empty()).then_some(note);
        Ok(ApprovalRecord::from(&self.hive.deny(id, &by, note).await?))
    }

    /// Brings every agent to its spec (as at the daemon's start): creates what is
    /// missing, rebuilds what drifted, keeps what matches; `prune` also stops agents
    /// whose spec is gone. Returns the steps as JSON (see docs/dbus-api.md).
    async fn reload(
        &self,
        prune: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        require_root(conn, &header, "reload").await?;
        let steps =
            crate::daemon::reload(&self.hive, conn, prune, crate::daemon::Trigger::Reload).await;
        Ok(serde_json::to_string(&steps).expect("steps serialize"))
    }

    /// What a reload would do with `names` (every agent when empty), with the host checks,
    /// the units it would create and their diff against the live ones; touches nothing.
    /// Returns JSON (see docs/dbus-api.md).
    async fn plan(
        &self,
        names: Vec<String>,
        prune: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        require_root(conn, &header, "plan").await?;
        let names = names
            .iter()
            .map(|n| parse_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        let plans = self.hive.plan(&names, prune).await?;
        Ok(serde_json::to_string(&plans).expect("plans serialize"))
    }

    /// An agent asked for something (emitted by the daemon when a request arrives).
    #[zbus(signal)]
    async fn approval_new(emitter: &SignalEmitter<'_>, id: i64, agent: &str) -> zbus::Result<()>;

    /// An approval changed status.
    #[zbus(signal)]
    async fn approval_changed(
        emitter: &SignalEmitter<'_>,
        id: i64,
        status: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn agent_new(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn agent_removed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;
}
