//! The core: one [`Hive`] holds what every verb needs — the host's plan inputs, systemd,
//! the approvals, the agents' doors — and the per-agent locks that keep two verbs on one
//! agent from interleaving. The verbs themselves live beside it, one concern per file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::agent_side::AgentDoors;
use super::approvals::Approvals;
use super::changes::{Change, Changes};
use super::harness_supervisor::HarnessWatch;
use crate::plan::{self, Host, UnitPlan};
use crate::spec::{AgentName, AgentSpec};
use crate::systemd::Systemd;

pub struct Hive {
    pub host: Host,
    pub sd: Systemd,
    pub approvals: Arc<Approvals>,
    pub(super) doors: Arc<dyn AgentDoors>,
    pub(super) changes: Changes,
    locks: Mutex<HashMap<AgentName, Arc<tokio::sync::Mutex<()>>>>,
    /// One watch per agent on its harness, replaced with each new harness.
    pub(super) harness_watches: Mutex<HashMap<AgentName, HarnessWatch>>,
    /// Held by the one reconcile that runs; a reload during another waits for it.
    pub(super) reconciling: tokio::sync::Mutex<()>,
    /// When this daemon started (the startup adoption waits for harnesses' signs of life
    /// until a bound after it).
    pub(super) started: tokio::time::Instant,
    /// Agents the startup adoption took on their harness's sign of life, whose check over
    /// the container's bus comes after every agent is adopted.
    pub(super) deferred_harness_checks: Mutex<Vec<AgentName>>,
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
        Self {
            host,
            sd,
            approvals,
            doors,
            changes,
            locks: Mutex::new(HashMap::new()),
            harness_watches: Mutex::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            started: tokio::time::Instant::now(),
            deferred_harness_checks: Mutex::new(Vec::new()),
        }
    }

    /// Listens to what changes in the hive from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub(super) fn publish(&self, change: Change) {
        self.changes.publish(change);
    }

    pub(super) async fn lock(&self, name: &AgentName) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .locks
            .lock()
            .expect("agent locks")
            .entry(name.clone())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    pub(super) fn container_plan(&self, spec: &AgentSpec) -> UnitPlan {
        plan::container_unit(spec, &self.host)
    }
}
