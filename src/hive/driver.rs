//! The unit driver: brings an agent's units up and takes them down — its door, its side
//! units (egress proxy, ports, disk), its container, and through the harness supervisor
//! its harness. The verbs of lifecycle, reconcile and apply all reach systemd through it.
//! Its work is split by concern: `units.rs` (bring up, a system agent's switch),
//! `egress.rs`, `ports.rs`, `disk.rs`, `startup.rs` (what comes before READY=1).

use std::sync::Arc;

use anyhow::Result;

use super::agent_side::AgentDoors;
use super::ensure::{self, Outcome};
use super::error::Error;
use super::harness_supervisor::HarnessSupervisor;
use super::locks::AgentLocks;
use super::mode::Mode;
use super::specs;
use crate::plan::{self, Host, UnitPlan};
use crate::spec::{AgentName, AgentSpec};
use crate::systemd::Systemd;

pub(super) struct UnitDriver {
    pub(super) host: Arc<Host>,
    pub(super) sd: Systemd,
    pub(super) doors: Arc<dyn AgentDoors>,
    /// Keeps each agent's harness running inside its container.
    pub(super) harness: Arc<HarnessSupervisor>,
    locks: Arc<AgentLocks>,
}

impl UnitDriver {
    pub(super) fn new(
        host: Arc<Host>,
        sd: Systemd,
        doors: Arc<dyn AgentDoors>,
        locks: Arc<AgentLocks>,
    ) -> Self {
        let harness = Arc::new(HarnessSupervisor::new(
            host.clone(),
            sd.clone(),
            doors.clone(),
            locks.clone(),
        ));
        Self {
            host,
            sd,
            doors,
            harness,
            locks,
        }
    }

    /// The agent's container unit as its spec plans it on this host.
    pub(super) fn container_plan(&self, spec: &AgentSpec) -> UnitPlan {
        plan::container_unit(spec, &self.host)
    }

    /// [`ensure::ensure_running`], for the side units.
    pub(super) async fn ensure_running(
        sd: &Systemd,
        plan: &UnitPlan,
        mode: Mode,
    ) -> Result<Outcome> {
        ensure::ensure_running(sd, plan, mode).await
    }

    /// The agent's spec, for a heal that starts without one.
    pub(super) fn load_spec(&self, name: &AgentName) -> Result<AgentSpec, Error> {
        specs::load_spec(&self.host.roots, name)
    }

    /// The agent's lock, for a heal that starts without it.
    pub(super) async fn lock(&self, name: &AgentName) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(name).await
    }
}
