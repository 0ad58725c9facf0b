//! The core's one door for its adapters: a [`Hive`] holds the components, each owning its
//! state, and forwards the verbs the adapters call. Nothing here decides anything.
//!
//! The components, lowest first (each reaches only those below it, through its fields):
//! - [`AgentLocks`] (`locks.rs`): the per-agent locks, shared.
//! - [`HarnessSupervisor`] (`harness_supervisor.rs`): each agent's harness — ensured,
//!   watched, healed; owns the harnesses' watches.
//! - [`UnitDriver`] (`driver.rs`): brings an agent's units up and down (`units.rs`,
//!   `egress.rs`, `ports.rs`, `disk.rs`), and rediscovers agents at start (`startup.rs`).
//! - [`Planner`] (`planner.rs`): reconcile's facts and decisions, read only.
//! - [`Lifecycle`] (`lifecycle.rs`): create, start, stop, restart, rebuild, destroy, tell.
//! - [`Reconciler`] (`reconciler.rs`): carries out reconcile, one at a time.
//! - [`Applier`] (`apply.rs`): decides approvals and applies them.
//!
//! Beside them: [`Approvals`] (the store), [`StatusLine`] (STATUS=), the host's watch
//! (`watch.rs`), and what an agent may ask (`agent_side.rs`, served straight from the
//! approvals).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::agent_side::AgentDoors;
use super::apply::{self, Applier};
use super::approval_view::{self, ApprovalView};
use super::approvals::Approvals;
use super::changes::{Change, Changes};
use super::driver::UnitDriver;
use super::ensure::{Created, Outcome};
use super::harness_supervisor::HarnessSupervisor;
use super::lifecycle::Lifecycle;
use super::locks::AgentLocks;
use super::planner::Planner;
use super::reconciler::{Reconciler, Trigger};
use super::sd_notify::StatusLine;
use super::{login, specs, watch, Error};
use crate::plan::Host;
use crate::reconcile::view::AgentPlan;
use crate::reconcile::Step;
use crate::spec::AgentName;
use crate::store::Approval;
use crate::systemd::Systemd;

pub struct Hive {
    host: Arc<Host>,
    sd: Systemd,
    pub approvals: Arc<Approvals>,
    changes: Changes,
    status: StatusLine,
    harness: Arc<HarnessSupervisor>,
    driver: Arc<UnitDriver>,
    planner: Arc<Planner>,
    lifecycle: Arc<Lifecycle>,
    reconciler: Reconciler,
    applier: Arc<Applier>,
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
        let status = StatusLine::new(sd.clone(), approvals.clone());
        let driver = Arc::new(UnitDriver::new(
            host.clone(),
            sd.clone(),
            doors,
            locks.clone(),
        ));
        let planner = Arc::new(Planner::new(host.clone(), sd.clone()));
        let lifecycle = Arc::new(Lifecycle::new(
            driver.clone(),
            locks.clone(),
            approvals.clone(),
            changes.clone(),
        ));
        let reconciler = Reconciler::new(
            driver.clone(),
            planner.clone(),
            locks.clone(),
            changes.clone(),
            status.clone(),
        );
        let applier = Arc::new(Applier::new(
            driver.clone(),
            lifecycle.clone(),
            locks,
            approvals.clone(),
            changes.clone(),
        ));
        Self {
            harness: driver.harness.clone(),
            host,
            sd,
            approvals,
            changes,
            status,
            driver,
            planner,
            lifecycle,
            reconciler,
            applier,
        }
    }

    /// Listens to what changes in the hive from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    // Start-up and the daemon's own tasks.

    /// Starts watching the host's systemd (`watch.rs`); a container whose start job
    /// finished goes to the harness supervisor.
    pub async fn watch(&self, conn: &zbus::Connection) -> anyhow::Result<()> {
        watch::spawn(conn, self.status.clone(), self.harness.heal_started()).await
    }

    /// Every agent systemd runs or a spec names, its door reopened (before READY=1).
    pub async fn rediscover(&self) -> BTreeSet<AgentName> {
        self.driver.rediscover().await
    }

    /// Tells systemd how the hive is doing (STATUS=).
    pub async fn refresh_status(&self) {
        self.status.refresh().await;
    }

    /// Keeps STATUS= following the approvals.
    pub fn spawn_status_on_approvals(&self) {
        super::sd_notify::spawn_status_on_approvals(self.subscribe(), self.status.clone());
    }

    /// Closes expired `tool_use` approvals now and then.
    pub fn spawn_expiry(&self) {
        apply::spawn_expiry(self.applier.clone());
    }

    /// An approval approved but not applied by the previous daemon, applied now.
    pub async fn resume_approved(&self) {
        self.applier.resume_approved().await;
    }

    /// The harness checks the startup adoption deferred.
    pub async fn check_deferred_harnesses(&self) {
        self.harness.check_deferred_harnesses().await;
    }

    // The agents.

    /// Whether the agent has a spec on disk, saved or declared (valid or not).
    pub fn has_spec(&self, name: &AgentName) -> bool {
        specs::has_spec(&self.host.roots, name)
    }

    /// Agents with a spec, plus those whose unit makes an agent (see `crate::inventory`).
    pub async fn known_agents(&self) -> BTreeSet<AgentName> {
        crate::inventory::known_agents(&self.host.roots, &self.sd).await
    }

    pub async fn create(
        &self,
        name: &AgentName,
        spec_toml: &str,
        replace: bool,
    ) -> Result<Created, Error> {
        self.lifecycle.create(name, spec_toml, replace).await
    }

    pub async fn start(&self, name: &AgentName) -> Result<Outcome, Error> {
        self.lifecycle.start(name).await
    }

    pub async fn stop(&self, name: &AgentName) -> Result<(), Error> {
        self.lifecycle.stop(name).await
    }

    pub async fn restart(&self, name: &AgentName) -> Result<(), Error> {
        self.lifecycle.restart(name).await
    }

    pub async fn rebuild(&self, name: &AgentName) -> Result<Outcome, Error> {
        self.lifecycle.rebuild(name).await
    }

    pub async fn destroy(&self, name: &AgentName, purge: bool) -> Result<(), Error> {
        self.lifecycle.destroy(name, purge).await
    }

    pub async fn tell(
        &self,
        name: &AgentName,
        message: &str,
        by: &str,
        new_session: bool,
    ) -> Result<(), Error> {
        self.lifecycle.tell(name, message, by, new_session).await
    }

    pub async fn login(
        &self,
        name: &AgentName,
        term: &str,
        args: &[String],
    ) -> Result<OwnedFd, Error> {
        login::login(&self.host, &self.sd, &self.harness, name, term, args).await
    }

    // Reconcile.

    pub async fn reload(&self, prune: bool, trigger: Trigger) -> Vec<Step> {
        self.reconciler.reload(prune, trigger).await
    }

    pub async fn plan(&self, names: &[AgentName], prune: bool) -> Result<Vec<AgentPlan>, Error> {
        self.planner.plan(names, prune).await
    }

    // Approvals.

    pub async fn approve(&self, id: i64, by: &str, note: Option<&str>) -> Result<Approval, Error> {
        self.applier.approve(id, by, note).await
    }

    pub async fn deny(&self, id: i64, by: &str, note: Option<&str>) -> Result<Approval, Error> {
        self.applier.deny(id, by, note).await
    }

    pub async fn show_approval(&self, id: i64) -> Result<ApprovalView, Error> {
        approval_view::show(&self.approvals, &self.host.roots, &self.planner, id).await
    }
}
