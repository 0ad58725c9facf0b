//! The server side of the API: thin methods that check the caller and call
//! [`crate::daemon::Hive`].

use std::sync::Arc;

use serde::Serialize;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::{interface, Connection, ObjectServer};

use super::{agent_path, Error};
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

/// Only root may change anything until approvals bring the admin group (issue 5); the
/// D-Bus policy says the same, this is the second lock.
async fn require_root(conn: &Connection, header: &Header<'_>, what: &str) -> Result<(), Error> {
    let sender = header
        .sender()
        .ok_or_else(|| Error::AccessDenied(format!("{what}: caller has no bus name")))?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus
        .get_connection_unix_user(zbus::names::BusName::from(sender.to_owned()))
        .await
        .map_err(zbus::Error::from)?;
    if uid == 0 {
        Ok(())
    } else {
        Err(Error::AccessDenied(format!(
            "{what}: only root may do this (caller uid {uid})"
        )))
    }
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

    async fn unexport_agent(
        server: &ObjectServer,
        emitter: &SignalEmitter<'_>,
        name: &AgentName,
    ) -> zbus::Result<()> {
        let path = object_path(name);
        if server.remove::<Agent, _>(&path).await? {
            Self::agent_removed(emitter, name.as_str(), path.as_ref()).await?;
        }
        Ok(())
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
    /// `created`, `adopted` or `replaced`.
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
        let outcome = self.hive.create(&name, spec_toml).await?;
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
