//! Harness supervision: `hive-harness.service` inside each agent's container, ensured
//! over the container's own bus, watched for crashes (the supervisor owns each harness's
//! watch), and re-created when systemd restarted the container by itself (the transient
//! harness died with it; the host's watch sends the container's name).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::agent_side::AgentDoors;
use super::crash::{report, unit_change, unit_changes, CrashTracker};
use super::ensure::{ensure_running, Outcome, PARALLEL};
use super::locks::AgentLocks;
use super::mode::Mode;
use super::specs::load_spec;
use crate::journal::Event;
use crate::plan::{self, Host, HARNESS_UNIT};
use crate::spans::Summed;
use crate::spec::{AgentName, AgentSpec};
use crate::systemd::{Systemd, UnitStatus};

/// How long to try reaching a just-booted container's bus before giving up.
const CONTAINER_BUS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after the daemon's start the startup adoption waits for a running agent's
/// harness to reconnect to its socket (a sign of life) before checking it over the
/// container's bus instead. Harnesses retry within 25 ms of a daemon restart at first
/// (`harness::outbox::Backoff`), so a live one is back well inside this; one that is not
/// (stopped, crashed, hung) is checked and healed as before. One deadline for all agents,
/// not one per agent: a hive whose harnesses are all missing waits it once.
const SIGN_OF_LIFE: Duration = Duration::from_secs(1);

/// Keeps every agent's harness running: ensures it, watches it, heals it. Owns the
/// harnesses' watches and the checks the startup adoption deferred.
pub(super) struct HarnessSupervisor {
    host: Arc<Host>,
    sd: Systemd,
    doors: Arc<dyn AgentDoors>,
    locks: Arc<AgentLocks>,
    /// One watch per agent on its harness, replaced with each new harness.
    watches: Mutex<HashMap<AgentName, HarnessWatch>>,
    /// When this daemon started (the startup adoption waits for harnesses' signs of life
    /// until a bound after it).
    started: tokio::time::Instant,
    /// Agents the startup adoption took on their harness's sign of life, whose check over
    /// the container's bus comes after every agent is adopted.
    deferred: Mutex<Vec<AgentName>>,
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

impl HarnessSupervisor {
    pub(super) fn new(
        host: Arc<Host>,
        sd: Systemd,
        doors: Arc<dyn AgentDoors>,
        locks: Arc<AgentLocks>,
    ) -> Self {
        Self {
            host,
            sd,
            doors,
            locks,
            watches: Mutex::new(HashMap::new()),
            started: tokio::time::Instant::now(),
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// Where the host's watch sends each container whose start job finished: its harness
    /// is healed ([`Self::heal_harness`], retried), one task per container.
    pub(super) fn heal_started(self: &Arc<Self>) -> UnboundedSender<AgentName> {
        let (tx, mut rx) = unbounded_channel::<AgentName>();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(name) = rx.recv().await {
                let me = me.clone();
                tokio::spawn(async move { me.heal_with_retries(&name, &Summed::default()).await });
            }
        });
        tx
    }

    pub(super) fn stop_harness_watch(&self, name: &AgentName) {
        if let Some(old) = self.watches.lock().expect("watches lock").remove(name) {
            old.task.abort();
        }
    }

    /// Brings `hive-harness.service` up inside the agent's container, over the
    /// container's own bus.
    pub(super) async fn ensure_harness(
        &self,
        spec: &AgentSpec,
        mode: Mode,
        approval: Option<i64>,
    ) -> Result<Outcome> {
        let container = self
            .sd
            .invocation_id(&spec.name.container_unit())
            .await?
            .unwrap_or_default();
        self.ensure_harness_in(spec, mode, approval, container, &Summed::default())
            .await
    }

    /// [`Self::ensure_harness`] in the container invocation `container`, as read by the
    /// caller; `spans` gets the time to reach the container's bus and to check the harness.
    async fn ensure_harness_in(
        &self,
        spec: &AgentSpec,
        mode: Mode,
        approval: Option<i64>,
        container: String,
        spans: &Summed,
    ) -> Result<Outcome> {
        let name = &spec.name;
        let mut plan = plan::harness_unit(spec, &self.host);
        if let Some(id) = approval {
            plan::stamp_approval(&mut plan, id);
        }
        let sd = spans
            .time("container bus", self.container_systemd(name))
            .await?;
        // Before the harness, so the agent's first request finds 127.0.0.1:3128 open.
        ensure_forwarder(&sd, spec, mode)
            .await
            .with_context(|| format!("inside container {}", name.machine()))?;
        let outcome = spans
            .time("harness check", ensure_running(&sd, &plan, mode))
            .await
            .with_context(|| format!("inside container {}", name.machine()))?;
        let mut watches = self.watches.lock().expect("watches lock");
        let stale = watches.get(name).is_none_or(|w| !w.covers(&container));
        if outcome != Outcome::Adopted || stale {
            let watch = HarnessWatch {
                task: watch(name.clone(), sd),
                container,
            };
            if let Some(old) = watches.insert(name.clone(), watch) {
                old.task.abort();
            }
        }
        Ok(outcome)
    }

    /// Re-creates the harness after systemd restarted a crashed container on its own: the
    /// harness unit was transient and died with the old container. Also the deferred
    /// check of a harness adopted at start-up on its sign of life. `spans` gets the time to
    /// reach the container's bus and to check the harness.
    pub async fn heal_harness(&self, name: &AgentName, spans: &Summed) -> Result<Outcome> {
        let spec = load_spec(&self.host.roots, name)?;
        let _guard = self.locks.lock(name).await;
        let unit = name.container_unit();
        // The start job of a create or rebuild this daemon just did ends here too: its
        // harness was ensured in this very invocation and is watched, so there is nothing
        // to heal, no second connection to the container's bus to open, and no need to
        // read more of the unit than its InvocationID. Without a live watch (a daemon
        // start's deferred checks, a container restarted by systemd) that read would only
        // come before the full one.
        if self.watching_any(name) {
            if let Some(invocation) = self.sd.invocation_id(&unit).await? {
                if self.watching(name, &invocation) {
                    return Ok(Outcome::Adopted);
                }
            }
        }
        // Only a running unit of ours (stamped HIVE_PLAN) gets a harness; a foreign unit that
        // merely holds the name is left alone.
        let Some(st) = self
            .sd
            .status(&unit)
            .await?
            .filter(|s| s.is_up() && s.sub_state.is_running() && s.plan_hash().is_some())
        else {
            return Ok(Outcome::Adopted);
        };
        if self.watching(name, &st.invocation_id) {
            return Ok(Outcome::Adopted);
        }
        self.recreate_harness(&spec, &st, spans).await
    }

    /// Whether a watch on `name`'s harness still runs, whichever invocation it is in.
    fn watching_any(&self, name: &AgentName) -> bool {
        self.watches
            .lock()
            .expect("watches lock")
            .get(name)
            .is_some_and(|w| !w.task.is_finished())
    }

    /// Whether `name`'s harness in the container invocation `invocation` is watched.
    fn watching(&self, name: &AgentName, invocation: &str) -> bool {
        self.watches
            .lock()
            .expect("watches lock")
            .get(name)
            .is_some_and(|w| w.covers(invocation))
    }

    /// The harness check of an agent adopted at the daemon's start, whose unit `st` was
    /// just read (running, as planned): the same as [`Self::heal_harness`] without reading
    /// the unit again. A watch already there was started by a verb of this daemon since,
    /// which ensured the harness itself.
    ///
    /// A harness that has reconnected to its socket since this daemon started is alive:
    /// the agent is adopted on that sign of life, and its check over the container's bus
    /// (which also starts its crash watch) is left to [`Self::check_deferred_harnesses`],
    /// after every agent is adopted. The sign of life only defers that check, never skips
    /// it: an agent that fakes one (connects to its socket itself, its harness stopped)
    /// gets its harness back from the deferred check.
    pub(super) async fn heal_adopted(
        &self,
        name: &AgentName,
        st: &UnitStatus,
        spans: &Summed,
    ) -> Result<Outcome> {
        if !(st.is_up() && st.sub_state.is_running() && st.plan_hash().is_some()) {
            return Ok(Outcome::Adopted);
        }
        if spans.time("sign of life", self.sign_of_life(name)).await {
            self.deferred
                .lock()
                .expect("deferred checks lock")
                .push(name.clone());
            return Ok(Outcome::Adopted);
        }
        let spec = load_spec(&self.host.roots, name)?;
        let _guard = spans.time("lock", self.locks.lock(name)).await;
        if self.watching_any(name) {
            return Ok(Outcome::Adopted);
        }
        self.recreate_harness(&spec, st, spans).await
    }

    /// The one way both heals bring a harness back: ensured over the container's bus in
    /// the unit's current invocation `st` (a no-op when it is already there and watched).
    async fn recreate_harness(
        &self,
        spec: &AgentSpec,
        st: &UnitStatus,
        spans: &Summed,
    ) -> Result<Outcome> {
        let name = &spec.name;
        crate::failpoint::fails_once("heal:try")
            .with_context(|| format!("agent {name}: re-creating its harness"))?;
        let outcome = self
            .ensure_harness_in(spec, Mode::Start, None, st.invocation_id.clone(), spans)
            .await?;
        if outcome != Outcome::Adopted {
            log::info!("agent {name}: harness re-created in its restarted container");
        }
        Ok(outcome)
    }

    /// Whether `name`'s harness has subscribed to its socket since this daemon started,
    /// waiting for it until [`SIGN_OF_LIFE`] after the start (bounded: the wait is on the
    /// agent).
    async fn sign_of_life(&self, name: &AgentName) -> bool {
        let deadline = self.started + SIGN_OF_LIFE;
        loop {
            if self.doors.listening(name) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The harness checks the startup adoption deferred (agents adopted on their harness's
    /// sign of life): each over the container's bus, which also starts the harness's crash
    /// watch, at most [`PARALLEL`] at a time, retried like a heal after
    /// a crash. A harness found missing by then is re-created.
    pub async fn check_deferred_harnesses(&self) {
        let names = std::mem::take(&mut *self.deferred.lock().expect("deferred checks lock"));
        let started = std::time::Instant::now();
        let spans = Summed::default();
        let n = names.len();
        futures_util::stream::iter(names)
            .map(|name| {
                let spans = &spans;
                async move { self.heal_with_retries(&name, spans).await }
            })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<()>>()
            .await;
        log::info!(
            "harness checks deferred by the startup adoption: {n} agents in {} ms; time per phase, summed over agents: {spans}",
            started.elapsed().as_millis()
        );
    }

    /// A connection to the systemd inside the agent's container, made from inside its
    /// namespaces (never through a path the agent could redirect). A just-booted
    /// container's bus may take a moment; a silent one fails within
    /// [`CONTAINER_BUS_TIMEOUT`] and names the agent.
    pub(super) async fn container_systemd(&self, name: &AgentName) -> Result<Systemd> {
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

    /// A container systemd restarted on its own boots while the host may be busy: its bus can
    /// stay silent past one try's bound, or the harness's start job outlast its wait. Giving up
    /// after one try would leave the agent without a harness until the next reload, so a
    /// failed heal is tried again, a bounded number of times (about a minute in all). Each
    /// try re-reads the unit, so a container that went away meanwhile ends the retries.
    async fn heal_with_retries(&self, name: &AgentName, spans: &Summed) {
        const TRIES: u32 = 4;
        let mut pause = Duration::from_secs(2);
        for attempt in 1..=TRIES {
            match self.heal_harness(name, spans).await {
                Ok(_) => return,
                Err(e) if attempt < TRIES => {
                    log::warn!(
                        "agent {name}: re-creating its harness (try {attempt} of {TRIES}, again in {pause:?}): {e:#}"
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => log::warn!(
                    "agent {name}: re-creating its harness failed {TRIES} times, giving up until the next reload: {e:#}"
                ),
            }
        }
    }
}

/// `hive-egress.socket` inside the container (127.0.0.1:3128, whose `hive-egress.service`
/// carries it to the proxy's socket).
async fn ensure_forwarder(sd: &Systemd, spec: &AgentSpec, mode: Mode) -> Result<Option<Outcome>> {
    if !plan::egress::has_egress(spec) {
        return Ok(None);
    }
    let unit = plan::egress::forward_units(spec);
    ensure_running(sd, &unit, mode)
        .await
        .map(Some)
        .with_context(|| format!("egress forwarder {}", unit.unit))
}

/// Signals queued for each container's watch: one harness unit. One of these per agent, so its size
/// shows in the daemon's memory (a 1024-deep queue cost ~24 KiB per agent).
const CONTAINER_QUEUE: usize = 32;

/// Container side: harness crashes, seen by the container's own systemd. Ends when the
/// container's bus goes away (the container stopped or restarted; a new watch is started
/// with the new harness).
fn watch(agent: AgentName, sd: Systemd) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = match unit_changes(sd.connection(), CONTAINER_QUEUE).await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("agent {agent}: cannot watch its harness: {e:#}");
                return;
            }
        };
        // The match rule is in place: from here on a harness crash is seen (tests wait
        // for this line rather than for a guessed delay).
        log::info!("agent {agent}: watching {HARNESS_UNIT} for crashes");
        let mut tracker = CrashTracker::default();
        while let Some(Ok(msg)) = changes.next().await {
            let Some(change) = unit_change(&msg, |u| u == HARNESS_UNIT) else {
                continue;
            };
            // As the host's watch: a harness starting or running is read no further.
            if tracker.up_without_read(&change) {
                continue;
            }
            if let Ok(Some(st)) = sd.status(HARNESS_UNIT).await {
                if let Some(v) = tracker.observe(&st) {
                    report(v, Event::HarnessCrash, &agent, &st);
                }
            }
        }
    })
}
