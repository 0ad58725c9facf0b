//! What changed in the hive, published by the core for whoever listens: the D-Bus adapter
//! exports agent objects and emits its signals from it, STATUS= is refreshed from it. The
//! core never waits for a listener, nor knows who listens.

use tokio::sync::broadcast;

use crate::spec::AgentName;
use crate::store::Status;

/// One change. Agent changes carry only the name: a listener reads the rest from the
/// core when it handles the change, so a late one never acts on stale facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The agent has a spec now (created, started, rebuilt, found by a reload).
    AgentAdded(AgentName),
    /// The agent is gone (destroyed, or pruned by a reload).
    AgentRemoved(AgentName),
    /// The agent's units changed (stopped, restarted, rebuilt by an approval).
    AgentChanged(AgentName),
    /// An agent asked for something.
    ApprovalNew { id: i64, agent: AgentName },
    /// An approval's status changed.
    ApprovalChanged { id: i64, status: Status },
}

/// Changes kept for a slow listener before it misses some (it is told how many, and
/// resynchronises). A reconcile of every agent publishes one per agent.
const BACKLOG: usize = 4096;

/// The sending side, shared by every part of the core that changes something.
#[derive(Debug, Clone)]
pub struct Changes(broadcast::Sender<Change>);

impl Default for Changes {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Changes {
    /// Tells every listener; nobody listening is fine.
    pub fn publish(&self, change: Change) {
        let _ = self.0.send(change);
    }

    /// A listener that sees every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.0.subscribe()
    }
}
