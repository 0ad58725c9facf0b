//! hive-c0re put together: the core ([`crate::hive::Hive`]) and its two adapters — the
//! D-Bus API ([`crate::api`]) and the agents' sockets ([`crate::socket`]) — on one bus
//! connection. The only module that knows all three; it owns the wiring, and the core
//! never learns who serves it.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::signal::unix::{signal, Signal, SignalKind};
use zbus::object_server::SignalEmitter;

use crate::api::{self, calls::Calls, server::ManagerObject};
use crate::hive::agent_side::{self, Notice, WhoAmI};
use crate::hive::approvals::Approvals;
use crate::hive::changes::Changes;
use crate::hive::sd_notify::{notify, spawn_watchdog};
use crate::hive::{AgentDoors, Hive, Trigger};
use crate::plan::Host;
use crate::socket::answers;
use crate::socket::server::Handler;
use crate::socket::Sockets;
use crate::spans::Spans;
use crate::spec::AgentName;
use crate::store::Approval;
use crate::systemd::{ActiveState, Systemd, AGENT_UNITS};

/// The socket adapter serves the core's approvals: an agent's request goes straight in,
/// and its questions about itself are answered from the core.
impl Handler for Approvals {
    fn request_approval(
        &self,
        agent: &AgentName,
        kind: &str,
        payload: &Value,
    ) -> Result<i64, String> {
        self.request(agent, kind, payload)
    }

    fn my_approvals(&self, agent: &AgentName) -> Result<Vec<Approval>, String> {
        agent_side::my_approvals(self, agent)
    }

    fn approval_status(&self, agent: &AgentName, id: i64) -> Result<Approval, String> {
        agent_side::approval_status(self, agent, id)
    }

    fn whoami(&self, agent: &AgentName) -> Result<WhoAmI, String> {
        agent_side::whoami(self, agent)
    }

    fn recent_decisions(&self, agent: &AgentName) -> Vec<Notice> {
        agent_side::recent_decisions(self, agent)
    }
}

/// The core opens and closes agents' doors; the socket adapter binds and drops them.
impl AgentDoors for Sockets {
    fn open(&self, name: &AgentName, dir: &std::path::Path) -> Result<()> {
        self.register(name, dir).map(|_| ())
    }

    fn close(&self, name: &AgentName) {
        self.unregister(name);
    }

    fn tell(&self, name: &AgentName, notice: &Notice) -> usize {
        self.pushes.send(name, &answers::push(notice))
    }

    fn listening(&self, name: &AgentName) -> bool {
        self.pushes.listening(name)
    }
}

/// Connects, rediscovers the agents systemd already runs, takes the bus name, then
/// tells systemd it is ready; serves until SIGTERM. Each step is timed (`Spans`).
pub async fn run(host: Host, bus_address: Option<String>) -> Result<()> {
    // Installed first: SIGHUP's default action would kill the daemon.
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut spans = Spans::start();
    let conn = connect(bus_address.as_deref()).await?;
    spans.mark("connect");
    let sd = Systemd::manager(&conn).await?;
    spans.mark("subscribe");
    let hive = core(host, &sd);
    spans.mark("store");
    // Subscribed before anything can change, so the adapter misses nothing.
    let api_changes = hive.subscribe();
    // Watch before rediscovering, so a container that restarts meanwhile is not missed.
    hive.watch(&conn).await?;
    spans.mark("watch");
    let calls = Calls::default();
    let emitter = export_manager(&conn, &hive, &calls).await?;

    // Before READY=1: the daemon knows every agent, serves its socket and shows its object
    // before it says it is up.
    let known = hive.rediscover().await;
    spans.mark("rediscover");
    for name in &known {
        ManagerObject::export_agent(conn.object_server(), &emitter, name).await?;
    }
    spans.mark("export");
    api::follow(conn.clone(), hive.clone(), api_changes);

    conn.request_name(api::BUS_NAME)
        .await
        .with_context(|| format!("taking bus name {}", api::BUS_NAME))?;
    spans.mark("name");
    ready(&conn, &sd, &hive, &spans).await;
    after_ready(hive.clone());
    serve_signals(&mut term, &mut hup, &hive).await;
    notify(&[sd_notify::NotifyState::Stopping]);
    drain(&conn, &calls).await;
    // The containers' connections outlive this process in systemd's fd store, so that
    // their close does not wake every container while the next daemon starts.
    let handed = crate::systemd::fd_store::hand_over();
    if handed > 0 {
        log::info!("handed {handed} container connections to systemd's fd store");
    }
    log::info!("hive-c0re stopping; agents keep running");
    Ok(())
}

/// The system bus, or the bus at `address` (tests, the demo).
async fn connect(address: Option<&str>) -> Result<zbus::Connection> {
    let builder = match address {
        Some(addr) => zbus::connection::Builder::address(addr)?,
        None => zbus::connection::Builder::system()?,
    };
    builder
        .build()
        .await
        .context("connecting to the system bus")
}

/// The core and the socket adapter, wired: the store's approvals, the agents' doors, the
/// `Hive` and its components, on one change stream.
fn core(host: Host, sd: &Systemd) -> Arc<Hive> {
    let changes = Changes::default();
    let approvals = Arc::new(Approvals::open(&host.roots, changes.clone()));
    let sockets = Arc::new(Sockets::new(approvals.clone()));
    Arc::new(Hive::new(host, sd.clone(), sockets, approvals, changes))
}

/// Exports the API's manager object; its signals go out through the emitter returned.
async fn export_manager(
    conn: &zbus::Connection,
    hive: &Arc<Hive>,
    calls: &Calls,
) -> Result<SignalEmitter<'static>> {
    let manager = ManagerObject {
        hive: hive.clone(),
        calls: calls.clone(),
    };
    conn.object_server()
        .at(api::MANAGER_PATH, manager)
        .await
        .context("exporting the manager object")?;
    Ok(SignalEmitter::new(conn, api::MANAGER_PATH)?)
}

/// READY=1, and what runs from then on: STATUS=, the watchdog, the OOM watch, the expiry
/// of `tool_use` approvals; one log line with the start-up's steps and their times.
async fn ready(conn: &zbus::Connection, sd: &Systemd, hive: &Arc<Hive>, spans: &Spans) {
    notify(&[sd_notify::NotifyState::Ready]);
    hive.refresh_status().await;
    hive.spawn_status_on_approvals();
    spawn_watchdog(conn.clone());
    crate::hive::oom::spawn();
    hive.spawn_expiry();
    // Counted after READY=1: only this line needs it.
    let running = match sd.list(AGENT_UNITS).await {
        Ok(units) => units
            .iter()
            .filter(|u| u.active_state == ActiveState::Active)
            .count(),
        Err(_) => 0,
    };
    log::info!(
        "hive-c0re ready on {}: {running} agents running; start-up {spans}",
        api::BUS_NAME
    );
}

/// After READY=1, so that one slow container never holds the daemon back: first an
/// approval the previous daemon approved but did not finish applying (the admin's
/// decision stands), then reconcile — every agent whose spec wants it up and has no unit
/// (after a reboot: all of them) is created, drifted ones rebuilt, and running ones
/// adopted with their harness checked and its crash watch started.
fn after_ready(hive: Arc<Hive>) {
    tokio::spawn(async move {
        hive.resume_approved().await;
        hive.reload(false, Trigger::Startup).await;
        hive.check_deferred_harnesses().await;
        // Every agent has its own container connection again: the previous daemon's,
        // kept open in systemd's fd store through the restart, can go now.
        let closed = crate::systemd::fd_store::close_inherited();
        if closed > 0 {
            log::info!("closed {closed} container connections the previous daemon handed over");
        }
    });
}

/// Serves until SIGTERM (or Ctrl-C); each SIGHUP reloads (RELOADING=1, reconcile,
/// READY=1) in its own task.
async fn serve_signals(term: &mut Signal, hup: &mut Signal, hive: &Arc<Hive>) {
    loop {
        tokio::select! {
            _ = term.recv() => {
                // Its journal time splits a restart's stop (benches/scale.rs).
                log::info!("hive-c0re stopping: SIGTERM");
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                let hive = hive.clone();
                tokio::spawn(async move {
                    notify(&[sd_notify::NotifyState::Reloading]);
                    hive.reload(false, Trigger::Signal).await;
                    notify(&[sd_notify::NotifyState::Ready]);
                });
            }
        }
    }
}

/// How long a stopping daemon waits for the calls it is serving (a create waits for a
/// container to boot); below systemd's default TimeoutStopSec= of 90 s.
const DRAIN_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// Gives up the bus name, so that calls from now on wait at the bus for the next daemon
/// (D-Bus activation) instead of reaching this one as it exits, then answers the calls it
/// is serving, for at most [`DRAIN_BOUND`].
async fn drain(conn: &zbus::Connection, calls: &Calls) {
    if let Err(e) = conn.release_name(api::BUS_NAME).await {
        log::warn!("releasing bus name {}: {e}", api::BUS_NAME);
    }
    // A call the bus routed to us before the release may still be on its way from the
    // socket to its method (zbus hands it over through a task or two).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let busy = calls.in_flight();
    if busy == 0 {
        return;
    }
    log::info!("hive-c0re stopping: answering {busy} calls in flight first");
    notify(&[sd_notify::NotifyState::Status(&format!(
        "stopping: answering {busy} calls in flight"
    ))]);
    let left = calls.drained(DRAIN_BOUND).await;
    // A method that has returned still has its reply to write: give it that moment, as
    // the process exits without tearing its tasks down (bin/hive-c0re.rs).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    if left > 0 {
        log::warn!(
            "hive-c0re stopping with {left} calls unanswered after {}s",
            DRAIN_BOUND.as_secs()
        );
    }
}
