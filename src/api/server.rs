//! The server side of the API, an adapter around the core: thin methods that check the
//! caller, call [`crate::hive::Hive`], and map its errors to the wire's.

use std::sync::Arc;

use serde::Serialize;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::{interface, Connection, ObjectServer};

use super::access::{require_admin, require_root};
use super::calls::Calls;
use super::paging::{bound_page, check_note, PAGE_ROWS};
use super::{agent_path, ApprovalRecord, ApprovalShown, Error};
use crate::hive::{Hive, Trigger};
use crate::reconcile::{Action, StepResult};
use crate::spec::AgentName;

/// The object exported at `/org/hyperhive/hive1` serving `org.hyperhive.Hive1.Manager`
/// (named apart from systemd's `Manager` proxy in `crate::systemd::proxies`).
pub struct ManagerObject {
    pub hive: Arc<Hive>,
    /// Every method holds one while it runs: a stopping daemon waits for them.
    pub calls: Calls,
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

impl ManagerObject {
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
impl ManagerObject {
    /// Agents the daemon knows: (name, unit, machine, object path).
    async fn list_agents(&self) -> Vec<(String, String, String, OwnedObjectPath)> {
        let _call = self.calls.enter();
        // known_agents is a sorted set, so the list comes out sorted by name.
        self.hive
            .known_agents()
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
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("stop agent {name}")).await?;
        Ok(self.hive.stop(&name).await?)
    }

    /// `hivectl tell`: wakes the agent's turn with an admin's message.
    async fn tell_agent(
        &self,
        name: &str,
        message: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let _call = self.calls.enter();
        let name = parse_name(name)?;
        let by = require_admin(conn, &header, &format!("tell agent {name}")).await?;
        Ok(self.hive.tell(&name, message, &by, false).await?)
    }

    /// `hivectl tell --new-session`: the same, and a Claude Code agent starts a new
    /// conversation with it instead of resuming its session.
    async fn tell_agent_new_session(
        &self,
        name: &str,
        message: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let name = parse_name(name)?;
        let by = require_admin(conn, &header, &format!("tell agent {name}")).await?;
        Ok(self.hive.tell(&name, message, &by, true).await?)
    }

    /// `hivectl login`: claude's login flow in a Claude Code agent's container, on a
    /// terminal allocated there; returns the terminal's master for the caller to relay.
    async fn login_agent(
        &self,
        name: &str,
        term: &str,
        args: Vec<String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<zbus::zvariant::OwnedFd, Error> {
        let _call = self.calls.enter();
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("log in agent {name}")).await?;
        Ok(self.hive.login(&name, term, &args).await?.into())
    }

    async fn restart_agent(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let _call = self.calls.enter();
        let name = parse_name(name)?;
        require_root(conn, &header, &format!("restart agent {name}")).await?;
        Ok(self.hive.restart(&name).await?)
    }

    async fn rebuild_agent(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, Error> {
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
        require_admin(conn, &header, "list approvals").await?;
        let limit = if limit == 0 {
            PAGE_ROWS
        } else {
            limit.min(PAGE_ROWS)
        };
        let rows = self.page(all, after, limit)?;
        Ok(bound_page(rows, limit as usize))
    }

    /// The newest approval's id, 0 when there is none: ids are dense and never reused, so
    /// `ListApprovalsPage(true, LastApprovalId - n, n)` reads the newest `n`.
    async fn last_approval_id(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<i64, Error> {
        require_admin(conn, &header, "list approvals").await?;
        Ok(self.hive.approvals.last_id()?)
    }

    async fn get_approval(
        &self,
        id: i64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ApprovalRecord, Error> {
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
        require_admin(conn, &header, &format!("show approval {id}")).await?;
        let view = self.hive.show_approval(id).await?;
        Ok(serde_json::to_string(&ApprovalShown::from(&view)).expect("views serialize"))
    }

    /// Approves and applies; returns the approval as it ended (applied or failed).
    async fn approve(
        &self,
        id: i64,
        note: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ApprovalRecord, Error> {
        let _call = self.calls.enter();
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
        let _call = self.calls.enter();
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
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, Error> {
        let _call = self.calls.enter();
        require_root(conn, &header, "reload").await?;
        let steps = self.hive.reload(prune, Trigger::Reload).await;
        // The reply comes after the objects match what reconcile left, as after create.
        for s in &steps {
            let pruned = s.action == Action::Stop && s.result == Some(StepResult::Ok);
            let exported = if pruned {
                Self::unexport_agent(server, &emitter, &s.agent).await
            } else if s.plan.is_some() {
                Self::export_agent(server, &emitter, &s.agent).await
            } else {
                Ok(())
            };
            if let Err(e) = exported {
                log::warn!("agent {}: updating its D-Bus object: {e}", s.agent);
            }
        }
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
        let _call = self.calls.enter();
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
    pub async fn approval_new(
        emitter: &SignalEmitter<'_>,
        id: i64,
        agent: &str,
    ) -> zbus::Result<()>;

    /// An approval changed status.
    #[zbus(signal)]
    pub async fn approval_changed(
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
