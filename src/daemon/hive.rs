//! The core: one [`Hive`] holds what every verb needs — the host's plan inputs, systemd,
//! the approvals, the agents' doors — and the components that own their state: the
//! per-agent locks, the harness supervisor. The verbs themselves live beside it, one
//! concern per file.

use std::sync::Arc;

use super::agent_side::AgentDoors;
use super::approvals::Approvals;
use super::changes::{Change, Changes};
use super::harness_supervisor::HarnessSupervisor;
use super::locks::AgentLocks;
use super::sd_notify::StatusLine;
use crate::plan::{self, Host, UnitPlan};
use crate::spec::{AgentName, AgentSpec};
use crate::systemd::Systemd;

pub struct Hive {
    pub host: Arc<Host>,
    pub sd: Systemd,
    pub approvals: Arc<Approvals>,
    pub(super) doors: Arc<dyn AgentDoors>,
    pub(super) changes: Changes,
    locks: Arc<AgentLocks>,
    pub(super) harness: Arc<HarnessSupervisor>,
    pub(super) status: StatusLine,
    /// Held by the one reconcile that runs; a reload during another waits for it.
    pub(super) reconciling: tokio::sync::Mutex<()>,
}

impl Hive {
    /// `changes` is the stream `approvals` publishes to as well.
    pub fn new(
        host: Host,
        sd: Systemd,
        doors: Arc<dyn AgentDoors>,
        approvals: Arc<Approvals>,
        changes: Changes,
    ) -> Self {
        let host = Arc::new(host);
        let locks = Arc::new(AgentLocks::default());
        let harness = Arc::new(HarnessSupervisor::new(
            host.clone(),
            sd.clone(),
            doors.clone(),
            locks.clone(),
        ));
        Self {
            status: StatusLine::new(sd.clone(), approvals.clone()),
            host,
            sd,
            approvals,
            doors,
            changes,
            locks,
            harness,
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    /// Listens to what changes in the hive from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Starts watching the host's systemd (`watch.rs`); a container it restarted by itself
    /// goes to the harness supervisor.
    pub async fn watch(&self, conn: &zbus::Connection) -> anyhow::Result<()> {
        super::watch::spawn(conn, self.status.clone(), self.harness.heal_started()).await
    }

    /// Tells systemd how the hive is doing (STATUS=).
    pub async fn refresh_status(&self) {
        self.status.refresh().await;
    }

    /// Keeps STATUS= following the approvals.
    pub fn spawn_status_on_approvals(&self) {
        super::sd_notify::spawn_status_on_approvals(self.subscribe(), self.status.clone());
    }

    /// The harness checks the startup adoption deferred.
    pub async fn check_deferred_harnesses(&self) {
        self.harness.check_deferred_harnesses().await;
    }

    pub(super) fn publish(&self, change: Change) {
        self.changes.publish(change);
    }

    pub(super) async fn lock(&self, name: &AgentName) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(name).await
    }

    pub(super) fn container_plan(&self, spec: &AgentSpec) -> UnitPlan {
        plan::container_unit(spec, &self.host)
    }
}
