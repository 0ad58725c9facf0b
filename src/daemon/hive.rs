//! The agent lifecycle: create, start, stop, restart, rebuild, destroy. Each verb loads or
//! validates the spec, plans the unit, and asks systemd; per-agent locks keep two verbs
//! on one agent from interleaving.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use super::approvals::Approvals;
use super::preflight;
use crate::api::Error;
use crate::failpoint;
use crate::journal::{self, Event};
use crate::plan::{self, Host, UnitPlan};
use crate::socket::Sockets;
use crate::spec::{AgentName, AgentSpec, SpecFile};
use crate::store::{Approval, Decision, Outcome as ApprovalOutcome};
use crate::systemd::{anyhow_error_name, Systemd, UNIT_EXISTS};

/// How long to try reaching a just-booted container's bus before giving up.
const CONTAINER_BUS_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times to look again while systemd garbage-collects a unit we just stopped or
/// reset. Each look is a D-Bus round trip plus a short pause; the whole wait is bounded.
const SETTLE_ATTEMPTS: u32 = 100;
const SETTLE_PAUSE: Duration = Duration::from_millis(20);

/// What `ensure_running` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A new unit was created.
    Created,
    /// A matching unit was already up and was kept (same InvocationID).
    Adopted,
    /// A unit was up with other properties (or a rebuild was asked) and was replaced.
    Replaced,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Adopted => "adopted",
            Outcome::Replaced => "replaced",
        }
    }
}

/// What `create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The agent already had this very spec and was up: nothing was touched.
    Unchanged,
    /// Units were created, adopted (no spec before) or replaced.
    Done(Outcome),
}

impl Created {
    pub fn as_str(self) -> &'static str {
        match self {
            Created::Unchanged => "unchanged",
            Created::Done(o) => o.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Keep a running unit if its plan hash matches, replace it otherwise.
    Create,
    /// Keep whatever runs.
    Start,
    /// Always replace what runs.
    Rebuild,
}

/// A running watch on an agent's harness, and the container invocation it lives in.
struct HarnessWatch {
    task: tokio::task::JoinHandle<()>,
    /// InvocationID of the container unit the harness was ensured in.
    container: String,
}

impl HarnessWatch {
    /// Still watching the harness of this very container invocation.
    fn covers(&self, container: &str) -> bool {
        !self.task.is_finished() && self.container == container
    }
}

pub struct Hive {
    pub host: Host,
    pub sd: Systemd,
    pub sockets: Sockets,
    pub approvals: Arc<Approvals>,
    locks: Mutex<HashMap<AgentName, Arc<tokio::sync::Mutex<()>>>>,
    /// One watch per agent on its harness, replaced with each new harness.
    harness_watches: Mutex<HashMap<AgentName, HarnessWatch>>,
    /// Held by the one reconcile that runs; a reload during another waits for it.
    pub(super) reconciling: tokio::sync::Mutex<()>,
}

impl Hive {
    pub fn new(host: Host, sd: Systemd, sockets: Sockets, approvals: Arc<Approvals>) -> Self {
        Self {
            host,
            sd,
            sockets,
            approvals,
            locks: Mutex::new(HashMap::new()),
            harness_watches: Mutex::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    /// Tells systemd how the hive is doing (`systemctl status hive-c0re` shows it).
    pub async fn refresh_status(&self) {
        let units = match self.sd.list("hive-agent-*.service").await {
            Ok(u) => u,
            Err(e) => {
                log::warn!("counting agents for STATUS=: {e:#}");
                return;
            }
        };
        let running = units
            .iter()
            .filter(|u| u.3 == "active" && u.4 == "running")
            .count();
        let failed = units.iter().filter(|u| u.3 == "failed").count();
        let restarting = units.iter().filter(|u| u.4 == "auto-restart").count();
        let status = match self.approvals.problem() {
            None => format!(
                "{running} agents running, {failed} failed, {restarting} restarting, {} approvals pending",
                self.pending_approvals()
            ),
            Some(problem) => format!(
                "{running} agents running, {failed} failed, {restarting} restarting; {problem}"
            ),
        };
        super::notify(&[sd_notify::NotifyState::Status(&status)]);
    }

    /// Pending approvals, for STATUS=. Approvals are served from issue 5 on.
    fn pending_approvals(&self) -> usize {
        self.approvals.pending()
    }

    pub(super) fn stop_harness_watch(&self, name: &AgentName) {
        if let Some(old) = self
            .harness_watches
            .lock()
            .expect("watches lock")
            .remove(name)
        {
            old.task.abort();
        }
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

    /// The agent's spec: the one `create` saved, else a declared one under the config root.
    pub fn load_spec(&self, name: &AgentName) -> Result<AgentSpec, Error> {
        load_spec(&self.host.roots, name)
    }

    pub(super) fn container_plan(&self, spec: &AgentSpec) -> UnitPlan {
        plan::container_unit(spec, &self.host)
    }
}

/// An agent's spec: the one `create` saved, else a declared one under the config root.
pub fn load_spec(roots: &crate::paths::Roots, name: &AgentName) -> Result<AgentSpec, Error> {
    {
        for path in roots.spec_paths(name) {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let origin = path.display().to_string();
                    let file = SpecFile::from_toml(&text, &origin)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                    return AgentSpec::validate(name, &file)
                        .map_err(|e| Error::InvalidArgument(e.to_string()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Failed(format!(
                        "agent {name}: reading {}: {}",
                        path.display(),
                        preflight::io_reason(&e)
                    )))
                }
            }
        }
        Err(Error::NoSuchAgent(format!(
            "no agent {name}: no spec at {} or {}",
            roots.saved_spec(name).display(),
            roots.declared_spec(name).display()
        )))
    }
}

impl Hive {
    /// Creates an agent, never clobbering one: an agent that already has this very spec is
    /// left as it is (started if it is down) and `Unchanged` is returned; one with another
    /// spec is refused with the differences, field by field, unless `replace` — so nothing
    /// an approval applied is dropped without the admin asking for exactly that.
    pub async fn create(
        &self,
        name: &AgentName,
        spec_toml: &str,
        replace: bool,
    ) -> Result<Created, Error> {
        let file = SpecFile::from_toml(spec_toml, &format!("spec for agent {name}"))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let spec =
            AgentSpec::validate(name, &file).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        preflight::check(&spec, &self.host).map_err(Error::InvalidArgument)?;

        let _guard = self.lock(name).await;
        let existing = match self.load_spec(name) {
            Ok(old) => Some(Ok(old)),
            Err(Error::NoSuchAgent(_)) => None,
            Err(e) => Some(Err(e)),
        };
        match existing {
            Some(Ok(old)) if old == spec => {
                // Nothing to change: keep whatever runs (same InvocationID), start it if
                // it is down.
                self.prepare_dirs(&spec).map_err(Error::failed)?;
                let plan = self.container_plan(&spec);
                let outcome = self
                    .bring_up(&spec, &plan, Mode::Start, None)
                    .await
                    .with_context(|| format!("agent {name}"))
                    .map_err(Error::failed)?;
                if outcome == Outcome::Adopted {
                    return Ok(Created::Unchanged);
                }
                journal::emit(
                    Event::AgentStarted,
                    Some(name),
                    Some(&plan.unit),
                    &[],
                    &format!("agent {name}: started {} (create, spec unchanged)", plan.unit),
                );
                return Ok(Created::Done(outcome));
            }
            Some(Ok(old)) if !replace => {
                return Err(Error::InvalidArgument(format!(
                    "agent {name} exists with another spec ({}); nothing changed. To apply this \
                     spec use `hivectl create {name} --replace …`, or edit {} and run `hivectl rebuild {name}`",
                    crate::spec::differences(&old, &spec).join("; "),
                    self.spec_origin(name).display(),
                )))
            }
            Some(Err(e)) if !replace => {
                return Err(Error::InvalidArgument(format!(
                    "agent {name} exists but its spec cannot be read ({e}); nothing changed. \
                     `hivectl create {name} --replace …` writes a new one"
                )))
            }
            _ => {}
        }
        self.prepare_dirs(&spec).map_err(Error::failed)?;
        let saved = self.host.roots.saved_spec(name);
        write_atomic(&saved, spec.to_file().to_toml().as_bytes())
            .with_context(|| format!("agent {name}: saving spec {}", saved.display()))
            .map_err(Error::failed)?;
        failpoint::hit("create:spec-saved");

        let plan = self.container_plan(&spec);
        let outcome = self
            .bring_up(&spec, &plan, Mode::Create, None)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        failpoint::hit("create:container-up");
        let event = if outcome == Outcome::Adopted {
            Event::Adopted
        } else {
            Event::AgentCreated
        };
        journal::emit(
            event,
            Some(name),
            Some(&plan.unit),
            &[
                ("HIVE_OUTCOME", outcome.as_str().into()),
                ("HIVE_PLAN", plan.hash.clone()),
            ],
            &format!("agent {name}: {} {}", outcome.as_str(), plan.unit),
        );
        Ok(Created::Done(outcome))
    }

    /// The spec file an agent's spec is read from: the saved one, else the declared one.
    fn spec_origin(&self, name: &AgentName) -> std::path::PathBuf {
        let roots = &self.host.roots;
        roots
            .spec_paths(name)
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| roots.saved_spec(name))
    }

    pub async fn start(&self, name: &AgentName) -> Result<Outcome, Error> {
        let spec = self.load_spec(name)?;
        preflight::check(&spec, &self.host).map_err(Error::InvalidArgument)?;
        let _guard = self.lock(name).await;
        self.prepare_dirs(&spec).map_err(Error::failed)?;
        let plan = self.container_plan(&spec);
        let outcome = self
            .bring_up(&spec, &plan, Mode::Start, None)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        if outcome != Outcome::Adopted {
            journal::emit(
                Event::AgentStarted,
                Some(name),
                Some(&plan.unit),
                &[],
                &format!("agent {name}: started {}", plan.unit),
            );
        }
        Ok(outcome)
    }

    pub async fn stop(&self, name: &AgentName) -> Result<(), Error> {
        self.require_known(name).await?;
        let _guard = self.lock(name).await;
        let unit = name.container_unit();
        // Before stopping: a daemon killed in between must not bring the agent back.
        mark_stopped(&self.host.roots, name, true).map_err(Error::failed)?;
        self.stop_harness_watch(name);
        self.sd
            .stop(&unit)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        journal::emit(
            Event::AgentStopped,
            Some(name),
            Some(&unit),
            &[],
            &format!("agent {name}: stopped {unit}"),
        );
        Ok(())
    }

    /// Restarts the running unit as it is; an agent that is not up is started from its spec.
    pub async fn restart(&self, name: &AgentName) -> Result<(), Error> {
        let unit = name.container_unit();
        let up = self
            .sd
            .status(&unit)
            .await
            .map_err(Error::failed)?
            .is_some_and(|s| s.is_up());
        if !up {
            return self.start(name).await.map(|_| ());
        }
        let spec = self.load_spec(name)?;
        let _guard = self.lock(name).await;
        self.sd
            .restart(&unit)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        // The harness unit lived in the old container; the new one needs its own.
        self.ensure_harness(&spec, Mode::Start, None)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        journal::emit(
            Event::AgentStarted,
            Some(name),
            Some(&unit),
            &[],
            &format!("agent {name}: restarted {unit}"),
        );
        Ok(())
    }

    /// Replaces the agent's units with ones planned from its current spec.
    pub async fn rebuild(&self, name: &AgentName) -> Result<Outcome, Error> {
        let spec = self.load_spec(name)?;
        preflight::check(&spec, &self.host).map_err(Error::InvalidArgument)?;
        let _guard = self.lock(name).await;
        self.rebuild_locked(&spec, None)
            .await
            .map_err(Error::failed)
    }

    /// Rebuilds from `spec` with the agent's lock held; `approval` stamps the new units
    /// and the events with the approval that asked for it.
    async fn rebuild_locked(&self, spec: &AgentSpec, approval: Option<i64>) -> Result<Outcome> {
        let name = &spec.name;
        self.prepare_dirs(spec)?;
        let mut plan = self.container_plan(spec);
        let mut fields = vec![];
        if let Some(id) = approval {
            plan::stamp_approval(&mut plan, id);
            fields.push(("HIVE_APPROVAL_ID", id.to_string()));
        }
        journal::emit(
            Event::RebuildStarted,
            Some(name),
            Some(&plan.unit),
            &fields,
            &format!("agent {name}: rebuilding {}", plan.unit),
        );
        let outcome = self
            .bring_up(spec, &plan, Mode::Rebuild, approval)
            .await
            .with_context(|| format!("agent {name}: rebuilding"))?;
        failpoint::hit("rebuild:container-up");
        fields.push(("HIVE_OUTCOME", outcome.as_str().into()));
        fields.push(("HIVE_PLAN", plan.hash.clone()));
        journal::emit(
            Event::RebuildFinished,
            Some(name),
            Some(&plan.unit),
            &fields,
            &format!("agent {name}: rebuilt {}", plan.unit),
        );
        Ok(outcome)
    }

    /// An admin approves: record the decision, then apply the change by writing the new
    /// spec and rebuilding. The approval ends applied or failed, and says which.
    pub async fn approve(&self, id: i64, by: &str, note: Option<&str>) -> Result<Approval, Error> {
        let decided = self.approvals.decide(id, Decision::Approve, by, note)?;
        failpoint::hit("approve:decided");
        let outcome = match self.apply(&decided).await {
            Ok(()) => {
                failpoint::hit("approve:applied");
                ApprovalOutcome::Applied
            }
            Err(e) => ApprovalOutcome::Failed(format!("{e:#}")),
        };
        self.approvals.finish(id, outcome)
    }

    pub async fn deny(&self, id: i64, by: &str, note: Option<&str>) -> Result<Approval, Error> {
        self.approvals.decide(id, Decision::Deny, by, note)
    }

    async fn apply(&self, a: &Approval) -> Result<()> {
        let name = &a.agent;
        let _guard = self.lock(name).await;
        let (_, spec) =
            super::approvals::requested_spec(&self.host.roots, a).map_err(anyhow::Error::msg)?;
        preflight::check(&spec, &self.host).map_err(anyhow::Error::msg)?;
        let saved = self.host.roots.saved_spec(name);
        write_atomic(&saved, spec.to_file().to_toml().as_bytes())
            .with_context(|| format!("agent {name}: saving spec {}", saved.display()))?;
        failpoint::hit("approve:spec-saved");
        self.rebuild_locked(&spec, Some(a.id)).await?;
        Ok(())
    }

    /// An approval the daemon recorded as approved but did not finish applying (it was
    /// killed in between) is applied now: the admin's decision stands. Applying is
    /// idempotent (the spec converges), so a change already written is not doubled; one
    /// whose rebuild already brought the agent up is only recorded, not rebuilt again.
    pub async fn resume_approved(&self) {
        let all = match self.approvals.approved() {
            Ok(all) => all,
            Err(e) => {
                log::error!("reading approvals to resume: {e}");
                return;
            }
        };
        for a in all
            .iter()
            .filter(|a| a.status == crate::store::Status::Approved)
        {
            let outcome = if self.rebuilt_for(a).await {
                log::warn!("approval {} of agent {}: applied but not recorded when hive-c0re stopped; recording it", a.id, a.agent);
                ApprovalOutcome::Applied
            } else {
                log::warn!("approval {} of agent {}: approved but not applied when hive-c0re stopped; applying it now", a.id, a.agent);
                match self.apply(a).await {
                    Ok(()) => ApprovalOutcome::Applied,
                    Err(e) => ApprovalOutcome::Failed(format!("{e:#}")),
                }
            };
            if let Err(e) = self.approvals.finish(a.id, outcome) {
                log::error!("approval {}: recording its outcome: {e}", a.id);
            }
        }
    }

    /// Whether the approval's rebuild already brought its agent's container up: the live
    /// unit runs stamped with the approval's id (the stamp only comes from that rebuild,
    /// which saved the spec first). Applying again would rebuild the agent a second time.
    async fn rebuilt_for(&self, a: &Approval) -> bool {
        let stamp = format!("HIVE_APPROVAL_ID={}", a.id);
        match self.sd.status(&a.agent.container_unit()).await {
            Ok(Some(st)) => st.is_up() && st.environment.contains(&stamp),
            Ok(None) => false,
            Err(e) => {
                log::warn!("approval {}: reading its agent's unit: {e:#}", a.id);
                false
            }
        }
    }

    /// Stops and forgets the agent. Its state and credentials stay unless `purge`.
    pub async fn destroy(&self, name: &AgentName, purge: bool) -> Result<(), Error> {
        // An agent destroyed earlier keeps its state and credentials; purging them later
        // must still be possible, though the agent itself is gone.
        let leftovers = purge && self.host.roots.agent_dir(name).is_dir();
        if let Err(e) = self.require_known(name).await {
            if !leftovers {
                return Err(e);
            }
        }
        let _guard = self.lock(name).await;
        let unit = name.container_unit();
        let roots = &self.host.roots;
        let ctx = |what: &str| format!("agent {name}: {what}");
        self.sd
            .stop(&unit)
            .await
            .with_context(|| ctx("stopping"))
            .map_err(Error::failed)?;
        failpoint::hit("destroy:stopped");
        self.sd.reset_failed(&unit).await.map_err(Error::failed)?;
        self.sd
            .unregister_machine(&name.machine())
            .await
            .map_err(Error::failed)?;
        self.wait_unloaded(&unit).await.map_err(Error::failed)?;
        self.sockets.unregister(name);
        self.stop_harness_watch(name);
        // With its socket gone the agent cannot ask again; what it asked is failed before
        // its spec goes, so a later agent of this name never inherits it.
        self.approvals.agent_destroyed(name);
        remove_if_present(&roots.saved_spec(name)).map_err(Error::failed)?;
        failpoint::hit("destroy:spec-removed");
        // The runtime dir only holds the socket; RuntimeDirectoryPreserve=yes keeps it
        // after the unit is gone, so it is ours to remove.
        crate::safe_fs::remove_tree(&roots.runtime_dir(name))
            .with_context(|| ctx("removing its runtime dir"))
            .map_err(Error::failed)?;
        mark_stopped(roots, name, false).map_err(Error::failed)?;
        if purge {
            // The agent wrote this tree: never follow its symlinks, and say exactly what
            // could not be removed (chattr +i, say) rather than stop at the first entry.
            crate::safe_fs::remove_tree(&roots.agent_dir(name))
                .with_context(|| ctx("purging"))
                .map_err(Error::failed)?;
        }
        journal::emit(
            Event::AgentDestroyed,
            Some(name),
            Some(&unit),
            &[("HIVE_PURGE", purge.to_string())],
            &format!(
                "agent {name}: destroyed{}",
                if purge { " and purged" } else { "" }
            ),
        );
        Ok(())
    }

    /// Socket, container, harness — in that order: the harness reports ready only once it
    /// is connected, so its socket must be there before the container boots.
    pub(super) async fn bring_up(
        &self,
        spec: &AgentSpec,
        plan: &UnitPlan,
        mode: Mode,
        approval: Option<i64>,
    ) -> Result<Outcome> {
        let name = &spec.name;
        self.sockets
            .register(name, &self.host.roots.runtime_dir(name))?;
        mark_stopped(&self.host.roots, name, false)?;
        let outcome = Self::ensure_running(&self.sd, plan, mode).await?;
        // A new container has no harness yet; an adopted one keeps a matching harness.
        let harness_mode = if outcome == Outcome::Adopted {
            mode
        } else {
            Mode::Start
        };
        self.ensure_harness(spec, harness_mode, approval).await?;
        Ok(outcome)
    }

    /// Brings `hive-harness.service` up inside the agent's container, over the
    /// container's own bus.
    async fn ensure_harness(
        &self,
        spec: &AgentSpec,
        mode: Mode,
        approval: Option<i64>,
    ) -> Result<Outcome> {
        let name = &spec.name;
        let mut plan = plan::harness_unit(spec, &self.host);
        if let Some(id) = approval {
            plan::stamp_approval(&mut plan, id);
        }
        let container = self
            .sd
            .status(&name.container_unit())
            .await?
            .map(|s| s.invocation_id)
            .unwrap_or_default();
        let sd = self.container_systemd(name).await?;
        let outcome = Self::ensure_running(&sd, &plan, mode)
            .await
            .with_context(|| format!("inside container {}", name.machine()))?;
        let mut watches = self.harness_watches.lock().expect("watches lock");
        let stale = watches.get(name).is_none_or(|w| !w.covers(&container));
        if outcome != Outcome::Adopted || stale {
            let watch = HarnessWatch {
                task: super::watch::harness(name.clone(), sd),
                container,
            };
            if let Some(old) = watches.insert(name.clone(), watch) {
                old.task.abort();
            }
        }
        Ok(outcome)
    }

    /// Re-creates the harness after systemd restarted a crashed container on its own: the
    /// harness unit was transient and died with the old container.
    pub async fn heal_harness(&self, name: &AgentName) -> Result<Outcome> {
        let spec = self.load_spec(name).map_err(|e| anyhow!("{e}"))?;
        let _guard = self.lock(name).await;
        // Only a running unit of ours (stamped HIVE_PLAN) gets a harness; a foreign unit that
        // merely holds the name is left alone.
        let Some(st) = self
            .sd
            .status(&name.container_unit())
            .await?
            .filter(|s| s.is_up() && s.sub_state == "running" && s.plan_hash().is_some())
        else {
            return Ok(Outcome::Adopted);
        };
        // The start job of a create or rebuild this daemon just did ends here too: its
        // harness was ensured in this very invocation and is watched, so there is nothing
        // to heal and no second connection to the container's bus to open.
        let watched = self
            .harness_watches
            .lock()
            .expect("watches lock")
            .get(name)
            .is_some_and(|w| w.covers(&st.invocation_id));
        if watched {
            return Ok(Outcome::Adopted);
        }
        let outcome = self.ensure_harness(&spec, Mode::Start, None).await?;
        if outcome != Outcome::Adopted {
            log::info!("agent {name}: harness re-created in its restarted container");
        }
        Ok(outcome)
    }

    /// A connection to the systemd inside the agent's container, made from inside its
    /// namespaces (never through a path the agent could redirect). A just-booted
    /// container's bus may take a moment; a silent one fails within
    /// [`CONTAINER_BUS_TIMEOUT`] and names the agent.
    async fn container_systemd(&self, name: &AgentName) -> Result<Systemd> {
        let machine = name.machine();
        let deadline = tokio::time::Instant::now() + CONTAINER_BUS_TIMEOUT;
        // Each try starts a helper process; a bus that stays broken (a planted symlink)
        // must not have the daemon start one every 50 ms for 10 s: back off to 1 s.
        let mut pause = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = left.min(crate::systemd::container_bus::CONNECT_TIMEOUT);
            let err = match self.sd.container(&machine, attempt).await {
                Ok(sd) => return Ok(sd),
                Err(e) => e,
            };
            // Another try only while one still fits after the pause; the last error says
            // why.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left < pause + Duration::from_millis(300) {
                return Err(err).with_context(|| {
                    format!(
                        "container {machine}'s bus did not answer within {CONTAINER_BUS_TIMEOUT:?}"
                    )
                });
            }
            log::debug!("agent {name}: container bus not ready yet: {err:#}");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Waits (bounded) until systemd has garbage-collected a stopped transient unit, so that
    /// once destroy returns `systemctl status` says the unit is gone.
    async fn wait_unloaded(&self, unit: &str) -> Result<()> {
        for _ in 0..SETTLE_ATTEMPTS {
            match self.sd.status(unit).await? {
                None => return Ok(()),
                Some(st) if st.load_state == "not-found" => return Ok(()),
                Some(st) if st.is_up() || st.is_failed() => {
                    return Err(anyhow!(
                        "unit {unit} is {} again after stopping it",
                        st.active_state
                    ))
                }
                Some(_) => tokio::time::sleep(SETTLE_PAUSE).await,
            }
        }
        Err(anyhow!("unit {unit} stopped but systemd did not unload it"))
    }

    /// An agent exists if it has a spec or a unit.
    async fn require_known(&self, name: &AgentName) -> Result<(), Error> {
        match self.load_spec(name) {
            Ok(_) => Ok(()),
            Err(Error::NoSuchAgent(msg)) => {
                let unit = self
                    .sd
                    .status(&name.container_unit())
                    .await
                    .map_err(Error::failed)?;
                if unit.is_some() {
                    Ok(())
                } else {
                    Err(Error::NoSuchAgent(msg))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The bind sources the daemon makes for an agent: its state and credentials
    /// directories (mode 0700, created if missing and tightened if they exist; their
    /// contents are never touched), and its journal directory where it gets one (0755,
    /// as journald's own). Also where `create` saves the spec.
    pub(super) fn prepare_dirs(&self, spec: &AgentSpec) -> Result<()> {
        let name = &spec.name;
        let roots = &self.host.roots;
        std::fs::create_dir_all(roots.agents_dir())
            .with_context(|| format!("creating {}", roots.agents_dir().display()))?;
        // The agent writes inside state/ and claude/ and could plant a symlink there, but
        // not at these paths themselves; opened without following links all the same.
        for dir in [
            roots.agent_dir(name),
            roots.state_dir(name),
            roots.claude_dir(name),
        ] {
            crate::safe_fs::private_dir(&dir).with_context(|| format!("agent {name}"))?;
        }
        if let Some(dir) = plan::agent_journal_dir(spec, &self.host) {
            crate::safe_fs::dir_with_mode(&dir, 0o755)
                .with_context(|| format!("agent {name}: its journal directory"))?;
        }
        Ok(())
    }

    /// Brings the planned unit up, whatever systemd holds now: adopts a matching running
    /// unit, clears failed or leftover ones (and a machine a crash left registered), and
    /// retries while systemd garbage-collects. Branches on D-Bus error names only.
    async fn ensure_running(sd: &Systemd, plan: &UnitPlan, mode: Mode) -> Result<Outcome> {
        let unit = &plan.unit;
        let mut replaced = false;
        for _ in 0..SETTLE_ATTEMPTS {
            let status = sd.status(unit).await?;
            match status {
                Some(st) if st.is_up() => {
                    let replace = !replaced
                        && match mode {
                            // A unit without our HIVE_PLAN stamp is not ours, whatever
                            // its name: never adopt it.
                            Mode::Start => st.plan_hash().is_none(),
                            Mode::Rebuild => true,
                            Mode::Create => st.plan_hash() != Some(plan.hash.as_str()),
                        };
                    if !replace {
                        return Ok(if replaced {
                            Outcome::Replaced
                        } else {
                            Outcome::Adopted
                        });
                    }
                    sd.stop(unit).await?;
                    if mode == Mode::Rebuild && plan.machine.is_some() {
                        failpoint::hit("rebuild:container-stopped");
                    }
                    replaced = true;
                    continue;
                }
                Some(st) if st.is_failed() => {
                    sd.reset_failed(unit).await?;
                    continue;
                }
                Some(st) if st.active_state == "deactivating" => {
                    sd.stop(unit).await?;
                    continue;
                }
                _ => {}
            }
            // Not loaded, or inactive and about to be collected: try to create it.
            if let Some(machine) = &plan.machine {
                if sd.machine_registered(machine).await? {
                    sd.unregister_machine(machine).await?;
                }
            }
            match sd.start_transient(plan).await {
                Ok(()) => {
                    return Ok(if replaced {
                        Outcome::Replaced
                    } else {
                        Outcome::Created
                    })
                }
                Err(e) if anyhow_error_name(&e).as_deref() == Some(UNIT_EXISTS) => {
                    tokio::time::sleep(SETTLE_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(anyhow!(
            "unit {unit} did not settle: systemd kept reporting it exists after {SETTLE_ATTEMPTS} attempts"
        ))
    }
}

/// Writes via a temporary file and rename, so a crash or a full disk never leaves half a
/// spec behind.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("toml.tmp");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| anyhow!(preflight::io_reason(&e)))
}

/// Sets or clears the mark that `hivectl stop` leaves for reconcile (see
/// `Roots::stopped_marker`).
fn mark_stopped(roots: &crate::paths::Roots, name: &AgentName, stopped: bool) -> Result<()> {
    let marker = roots.stopped_marker(name);
    if !stopped {
        return remove_if_present(&marker);
    }
    let dir = marker.parent().expect("the marker is in a directory");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&marker, b""))
        .map_err(|e| {
            anyhow!(
                "agent {name}: writing {}: {}",
                marker.display(),
                preflight::io_reason(&e)
            )
        })
}

/// Removes a file or a whole directory; one that is already gone is fine.
fn remove_if_present(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!(
            "removing {}: {}",
            path.display(),
            preflight::io_reason(&e)
        )),
    }
}
