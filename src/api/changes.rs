//! The D-Bus adapter following the core: each change the core publishes becomes an agent
//! object exported or removed (with AgentNew/AgentRemoved) or an ApprovalNew/
//! ApprovalChanged signal. Method calls that add or remove an agent also export it
//! before they reply (exporting is idempotent), so a caller sees the object at once;
//! this covers what changes without a call: startup, SIGHUP reloads, the agents' own
//! requests, orphaned approvals.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use super::server::ManagerObject;
use super::MANAGER_PATH;
use crate::hive::{Change, Hive};

/// Follows `changes` (subscribed before anything could be published) for as long as the
/// core publishes.
pub(crate) fn follow(conn: Connection, hive: Arc<Hive>, mut changes: Receiver<Change>) {
    tokio::spawn(async move {
        let emitter = match SignalEmitter::new(&conn, MANAGER_PATH) {
            Ok(e) => e,
            Err(e) => {
                log::error!("D-Bus signals for changes: {e}");
                return;
            }
        };
        let server = conn.object_server();
        loop {
            let result = match changes.recv().await {
                Ok(change) => apply(server, &emitter, &hive, change).await,
                Err(RecvError::Lagged(missed)) => {
                    log::warn!("{missed} hive changes went by unseen; exporting every agent again");
                    resync(server, &emitter, &hive).await
                }
                Err(RecvError::Closed) => return,
            };
            if let Err(e) = result {
                log::warn!("updating D-Bus objects and signals: {e}");
            }
        }
    });
}

async fn apply(
    server: &zbus::ObjectServer,
    emitter: &SignalEmitter<'_>,
    hive: &Hive,
    change: Change,
) -> zbus::Result<()> {
    match change {
        // Read when handled, not when published: an agent destroyed since has no spec,
        // and its object must not come back.
        Change::AgentAdded(name) if hive.has_spec(&name) => {
            ManagerObject::export_agent(server, emitter, &name).await
        }
        Change::AgentAdded(_) | Change::AgentChanged(_) => Ok(()),
        Change::AgentRemoved(name) => ManagerObject::unexport_agent(server, emitter, &name).await,
        Change::ApprovalNew { id, agent } => {
            ManagerObject::approval_new(emitter, id, agent.as_str()).await
        }
        Change::ApprovalChanged { id, status } => {
            ManagerObject::approval_changed(emitter, id, status.as_str()).await
        }
    }
}

/// After missing changes: every agent the core knows gets its object.
async fn resync(
    server: &zbus::ObjectServer,
    emitter: &SignalEmitter<'_>,
    hive: &Hive,
) -> zbus::Result<()> {
    for name in hive.known_agents().await {
        ManagerObject::export_agent(server, emitter, &name).await?;
    }
    Ok(())
}
