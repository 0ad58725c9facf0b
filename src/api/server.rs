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
    AgentName::parse(raw).map_err(|e| Error::InvalidArgument(e.to_string()))
}

fn object_path(name: &AgentName) -> OwnedObjectPath {
    OwnedObjectPath::try_from(agent_path(name.as_str())).expect("escaped agent path is valid")
}

/// The group whose members may see and decide approvals (units/sysusers.d).
pub const ADMIN_GROUP: &str = "hive-admin";

/// The caller's uid and supplementary groups, as the bus daemon knows them. Only the
/// bus's word counts: the caller's /proc entry is the caller's to change (a setgid exec,
/// a pid reused), so a bus that does not pass groups on leaves a non-root caller with none.
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
    let groups = creds.unix_group_ids().cloned().unwrap_or_default();
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
    match admin_gid() {
        Some(gid) if groups.contains(&gid) => Ok(format!("uid {uid}")),
        _ => Err(Error::AccessDenied(format!(
            "{what}: only root and members of {ADMIN_GROUP} may do this (caller uid {uid})"
        ))),
    }
}

/// The gid of [`ADMIN_GROUP`], looked up through NSS (getgrnam_r), so groups from LDAP,
/// sssd or systemd-userdb count as /etc/group's do.
fn admin_gid() -> Option<u32> {
    match nix::unistd::Group::from_name(ADMIN_GROUP) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        Ok(None) => None,
        Err(e) => {
            log::warn!("looking up group {ADMIN_GROUP}: {e}");
            None
        }
    }
}

fn check_note(note: &str) -> Result<(), Error> {
    if note.len() > MAX_NOTE {
        return Err(Error::InvalidArgument(format!(
            "note of {} bytes: at most {MAX_NOTE}",
            note.len()
        )));
    }
    Ok(())
}

/// Most approvals one reply carries.
pub const PAGE_ROWS: u32 = 1000;

/// Most text one reply carries (payloads, notes, …), far below the bus's message limit
/// (32 MiB on the system bus by default): a page ends early once its rows reach it.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Cuts `rows` to at most [`PAGE_BYTES`] of text (always keeping one row), and returns
/// the id to continue after, or 0 when the listing is done.
pub fn bound_page(mut rows: Vec<ApprovalRecord>, asked: usize) -> (Vec<ApprovalRecord>, i64) {
    let size = |r: &ApprovalRecord| {
        r.agent.len()
            + r.kind.len()
            + r.payload.len()
            + r.status.len()
            + r.note.len()
            + r.decided_by.len()
            + 64
    };
    let mut total = 0;
    let mut keep = rows.len();
    for (i, r) in rows.iter().enumerate() {
        total += size(r);
        if total > PAGE_BYTES && i > 0 {
            keep = i;
            break;
        }
    }
    let cut = keep < rows.len();
    rows.truncate(keep);
    let next = if cut || (asked > 0 && rows.len() >= asked) {
        rows.last().map_or(0, |r| r.id)
    } else {
        0
    };
    (rows, next)
}

/// The longest note an admin may give with a decision.
pub const MAX_NOTE: usize = 1024;

impl Manager {
    fn page(&self, all: bool, after: i64, limit: u32) -> Result<Vec<ApprovalRecord>, Error> {
        Ok(self
            .hive
            .approvals
            .page(all, after, limit as usize)?
            .iter()
            .map(ApprovalRecord::from)
            .collect())
    }

    /// CreateAgent and ReplaceAgent: root only; `replace` lets another spec replace the
    /// agent's.
    #[allow(clippy::too_many_arguments)]
    async fn create_or_replace(
        &self,
        name: &str,
        spec_toml: &str,
        replace: bool,
        header: &Header<'_>,
        conn: &Connection,
        server: &ObjectServer,
        emitter: &SignalEmitter<'_>,
    ) -> Result<String, Error> {
        let name = parse_name(name)?;
        let verb = if replace { "replace" } else { "create" };
        require_root(conn, header, &format!("{verb} agent {name}")).await?;
        let outcome = self.hive.create(&name, spec_toml, replace).await?;
        Self::export_agent(server, emitter, &name).await?;
        Ok(outcome.as_str().into())
    }

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
        self.create_or_replace(name, spec_toml, false, &header, conn, server, &emitter)
            .await
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
        self.create_or_replace(name, spec_toml, true, &header, conn, server, &emitter)
            .await
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

    /// The first page of approvals, oldest first: pending ones, or `all` of them; at most
    /// [`PAGE_ROWS`] rows and about [`PAGE_BYTES`] of text. ListApprovalsPage reads on.
    /// Pending approvals whose agent's state dir is gone are marked failed first.
    async fn list_approvals(
        &self,
        all: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        require_admin(conn, &header, "list approvals").await?;
        let rows = self.page(all, 0, PAGE_ROWS)?;
        Ok(bound_page(rows, PAGE_ROWS as usize).0)
    }

    /// Up to `limit` approvals (at most [`PAGE_ROWS`]; 0 means that many) with an id above
    /// `after`, oldest first, and the id to pass as `after` for the next page, or 0 when
    /// there is none.
    async fn list_approvals_page(
        &self,
        all: bool,
        after: i64,
        limit: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(Vec<ApprovalRecord>, i64), Error> {
        require_admin(conn, &header, "list approvals").await?;
        let limit = if limit == 0 {
            PAGE_ROWS
        } else {
            limit.min(PAGE_ROWS)
        };
        let rows = self.page(all, after, limit)?;
        Ok(bound_page(rows, limit as usize))
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

    /// What approving `id` would do, as JSON: the record, who asked and when, the spec
    /// diff, and the plan of the rebuild (host checks, units, property diff). Reads only.
    async fn show_approval(
        &self,
        id: i64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        require_admin(conn, &header, &format!("show approval {id}")).await?;
        let view = self.hive.show_approval(id).await?;
        Ok(serde_json::to_string(&view).expect("views serialize"))
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
        check_note(note)?;
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
        check_note(note)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, payload_len: usize) -> ApprovalRecord {
        ApprovalRecord {
            id,
            agent: "alice".into(),
            kind: "spec_change".into(),
            payload: "x".repeat(payload_len),
            status: "pending".into(),
            note: String::new(),
            decided_by: String::new(),
            created_at: 1,
            decided_at: 0,
            finished_at: 0,
        }
    }

    #[test]
    fn a_page_ends_at_its_row_count_or_its_byte_budget() {
        // Fewer rows than asked: the listing is done.
        let (rows, next) = bound_page((1..=3).map(|i| record(i, 10)).collect(), 5);
        assert_eq!((rows.len(), next), (3, 0));
        // As many as asked: there may be more, continue after the last.
        let (rows, next) = bound_page((1..=5).map(|i| record(i, 10)).collect(), 5);
        assert_eq!((rows.len(), next), (5, 5));
        // Rows of 64 KiB (older than the 4 KiB cap): cut at about PAGE_BYTES.
        let big: Vec<_> = (1..=1000).map(|i| record(i, 64 * 1024)).collect();
        let (rows, next) = bound_page(big, 1000);
        let bytes: usize = rows.iter().map(|r| r.payload.len()).sum();
        assert!(bytes <= PAGE_BYTES && rows.len() < 1000, "{bytes}");
        assert_eq!(next, rows.last().unwrap().id);
        // One row larger than the budget still goes out alone, so a listing always moves on.
        let (rows, next) = bound_page(vec![record(7, PAGE_BYTES + 1), record(8, 1)], 1000);
        assert_eq!((rows.len(), next), (1, 7));
    }
}
