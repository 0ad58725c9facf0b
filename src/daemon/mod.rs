//! hive-c0re: wires systemd, the API and the agents together.

mod agent_side;
mod approval_view;
pub mod approvals;
mod crash;
mod hive;
pub mod preflight;
mod reconcile;
pub mod request_checks;
mod watch;

pub use agent_side::check_message;
pub use hive::{Hive, Outcome};
pub use reconcile::{AgentPlan, Trigger, PARALLEL};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use zbus::object_server::SignalEmitter;

use crate::api::{self, server};
use crate::paths::Roots;
use crate::plan::Host;
use crate::socket::Sockets;
use crate::spec::AgentName;
use crate::systemd::Systemd;

/// Whether a unit in this state makes an agent of its name even without a spec: running or
/// failed ones do; an inactive one is a destroyed agent's unit that systemd has not
/// collected yet.
pub fn unit_makes_an_agent(active_state: &str) -> bool {
    active_state != "inactive"
}

/// Agents with a saved or declared spec, plus any agent unit that [`unit_makes_an_agent`].
pub async fn known_agents(roots: &Roots, sd: &Systemd) -> BTreeSet<AgentName> {
    let mut names = spec_names(roots);
    match sd.list("hive-agent-*.service").await {
        Ok(units) => names.extend(
            units
                .iter()
                .filter(|u| unit_makes_an_agent(&u.3))
                .filter_map(|u| AgentName::from_container_unit(&u.0)),
        ),
        Err(e) => log::warn!("listing agent units: {e:#}"),
    }
    names
}

/// Names of agents that have a spec on disk (saved by create, or declared).
pub fn spec_names(roots: &Roots) -> BTreeSet<AgentName> {
    let mut names = BTreeSet::new();
    if let Ok(dir) = std::fs::read_dir(roots.agents_dir()) {
        for e in dir.flatten() {
            if let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|s| AgentName::parse(s).ok())
            {
                if roots.saved_spec(&n).exists() {
                    names.insert(n);
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(roots.config.join("agents")) {
        for e in dir.flatten() {
            let file = e.file_name();
            if let Some(n) = file
                .to_str()
                .and_then(|s| s.strip_suffix(".toml"))
                .and_then(|s| AgentName::parse(s).ok())
            {
                names.insert(n);
            }
        }
    }
    names
}

/// Connects, rediscovers the agents systemd already runs, takes the bus name, then
/// tells systemd it is ready; serves until SIGTERM.
pub async fn run(host: Host, bus_address: Option<String>) -> Result<()> {
    // Installed first: SIGHUP's default action would kill the daemon.
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let builder = match &bus_address {
        Some(addr) => zbus::connection::Builder::address(addr.as_str())?,
        None => zbus::connection::Builder::system()?,
    };
    let conn = builder
        .build()
        .await
        .context("connecting to the system bus")?;
    let sd = Systemd::manager(&conn).await?;
    let roots = host.roots.clone();
    let approvals = Arc::new(approvals::Approvals::open(&roots, &conn));
    let hive = Arc::new(Hive::new(
        host,
        sd.clone(),
        Sockets::new(approvals.clone()),
        approvals,
    ));
    // Watch before rediscovering, so a container that restarts meanwhile is not missed.
    watch::spawn(&conn, hive.clone()).await?;

    let server = conn.object_server();
    server
        .at(api::MANAGER_PATH, server::Manager { hive: hive.clone() })
        .await
        .context("exporting the manager object")?;
    let emitter = SignalEmitter::new(&conn, api::MANAGER_PATH)?;

    // Rediscover before READY=1: agents keep running across daemon restarts, and the
    // daemon must know every one of them (and serve their sockets) before it says it is up.
    warn_low_limits();
    let known = known_agents(&roots, &sd).await;
    remove_orphan_runtime_dirs(&roots, &known);
    for name in &known {
        server::Manager::export_agent(server, &emitter, name).await?;
        // Rebind every agent's socket (idempotent): harnesses reconnect on their own.
        if let Err(e) = hive.sockets.register(name, &roots.runtime_dir(name)) {
            log::error!("{e:#}");
        }
    }
    let running = match sd.list("hive-agent-*.service").await {
        Ok(units) => units.iter().filter(|u| u.3 == "active").count(),
        Err(_) => 0,
    };

    conn.request_name(api::BUS_NAME)
        .await
        .with_context(|| format!("taking bus name {}", api::BUS_NAME))?;
    notify(&[sd_notify::NotifyState::Ready]);
    hive.refresh_status().await;
    spawn_status_on_approvals(&conn, hive.clone()).await;
    spawn_watchdog(conn.clone());
    log::info!(
        "hive-c0re ready on {}: {running} agents running",
        api::BUS_NAME
    );

    // After READY=1, so that one slow container never holds the daemon back: first an
    // approval the previous daemon approved but did not finish applying (the admin's
    // decision stands), then reconcile — every agent whose spec wants it up and has no unit
    // (after a reboot: all of them) is created, drifted ones rebuilt, and running ones
    // adopted with their harness checked and its crash watch started.
    let startup = hive.clone();
    let startup_conn = conn.clone();
    tokio::spawn(async move {
        startup.resume_approved().await;
        reload(&startup, &startup_conn, false, Trigger::Startup).await;
    });

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                let hive = hive.clone();
                let conn = conn.clone();
                tokio::spawn(async move {
                    notify(&[sd_notify::NotifyState::Reloading]);
                    reload(&hive, &conn, false, Trigger::Signal).await;
                    notify(&[sd_notify::NotifyState::Ready]);
                });
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    log::info!("hive-c0re stopping; agents keep running");
    Ok(())
}

/// Reconciles, then exports the objects of agents that now have a spec and removes those
/// of agents pruned, so the API lists what reconcile left.
pub async fn reload(
    hive: &Hive,
    conn: &zbus::Connection,
    prune: bool,
    trigger: Trigger,
) -> Vec<crate::reconcile::Step> {
    let steps = hive.reconcile(prune, trigger).await;
    let server = conn.object_server();
    let Ok(emitter) = SignalEmitter::new(conn, api::MANAGER_PATH) else {
        return steps;
    };
    for s in &steps {
        let pruned =
            s.action == crate::reconcile::Action::Stop && s.result.as_deref() == Some("ok");
        let exported = if pruned {
            server::Manager::unexport_agent(server, &emitter, &s.agent).await
        } else if s.plan.is_some() {
            server::Manager::export_agent(server, &emitter, &s.agent).await
        } else {
            Ok(())
        };
        if let Err(e) = exported {
            log::warn!("agent {}: updating its D-Bus object: {e}", s.agent);
        }
    }
    hive.refresh_status().await;
    steps
}

/// Refreshes STATUS= whenever an approval is asked for or decided, not only when a unit
/// changes: the daemon listens to its own ApprovalNew/ApprovalChanged signals, so every
/// path that changes an approval (socket, API, orphan marking) is covered by the one place
/// that already announces it.
async fn spawn_status_on_approvals(conn: &zbus::Connection, hive: Arc<Hive>) {
    use futures_util::StreamExt;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(api::MANAGER_INTERFACE)
        .and_then(|b| b.path(api::MANAGER_PATH))
        .map(|b| b.build());
    let stream = match rule {
        Ok(rule) => zbus::MessageStream::for_match_rule(rule, conn, Some(64)).await,
        Err(e) => Err(e),
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            log::warn!("STATUS= will count approvals only when a unit changes: {e}");
            return;
        }
    };
    // The stream is drained by a task that never waits on the bus: zbus's reader waits
    // for a full stream queue, and a refresh (a call to systemd) awaited here would then
    // wait for a reply that reader never reads. Changes coalesce into one pending
    // refresh, done by a second task: a flood of requests costs a few refreshes, not one
    // each.
    let changed = Arc::new(tokio::sync::Notify::new());
    let wake = changed.clone();
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let Ok(msg) = msg else { continue };
            let member = msg.header().member().map(|m| m.to_string());
            if matches!(member.as_deref(), Some("ApprovalNew" | "ApprovalChanged")) {
                wake.notify_one();
            }
        }
    });
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            hive.refresh_status().await;
        }
    });
}

/// Feeds systemd's watchdog (WatchdogSec= in hive-c0re.service) at half its period, but
/// only after systemd answered a ping on the bus: a daemon that is stuck, or cut off from
/// the bus, stops feeding it and is restarted.
fn spawn_watchdog(conn: zbus::Connection) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = std::time::Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let ping = conn.call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            );
            match tokio::time::timeout(period, ping).await {
                Ok(Ok(_)) => notify(&[sd_notify::NotifyState::Watchdog]),
                Ok(Err(e)) => log::warn!("watchdog: systemd did not answer a ping: {e}"),
                Err(_) => log::warn!("watchdog: systemd did not answer a ping within {period:?}"),
            }
        }
    });
}

/// Each booted agent holds several inotify instances as the host's root; with the kernel's
/// default of 128 a host runs out at about 20 agents and nspawn fails with status 255.
/// units/sysctl.d/50-hyperhive.conf raises it; say so if it is still low.
fn warn_low_limits() {
    let path = "/proc/sys/fs/inotify/max_user_instances";
    if let Some(n) = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        if n < 1024 {
            log::warn!(
                "{path} is {n}: about 20 booted agents will exhaust it (nspawn then exits 255); \
                 install units/sysctl.d/50-hyperhive.conf or set fs.inotify.max_user_instances=8192"
            );
        }
    }
}

/// Removes runtime dirs of agents that no longer exist (a destroy interrupted after the
/// spec was removed leaves them behind, and a socket nobody serves must not linger), and
/// every `<name>.bus` dir: earlier versions bound the container's bus out there, and
/// nothing uses one now. Never follows a symlink in them.
fn remove_orphan_runtime_dirs(roots: &Roots, known: &BTreeSet<AgentName>) {
    let Ok(dir) = std::fs::read_dir(&roots.run) else {
        return;
    };
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(raw) = file.to_str() else { continue };
        let legacy_bus = raw.strip_suffix(".bus");
        let Ok(name) = AgentName::parse(legacy_bus.unwrap_or(raw)) else {
            continue;
        };
        if legacy_bus.is_none() && known.contains(&name) {
            continue;
        }
        match crate::safe_fs::remove_tree(&entry.path()) {
            Ok(()) => log::info!(
                "removed {} of agent {name}, which no longer uses it",
                entry.path().display()
            ),
            Err(e) => log::warn!("agent {name}: {e:#}"),
        }
    }
}

/// Failures to notify are logged, never fatal: the daemon may run outside systemd.
pub(crate) fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("sd_notify: {e}");
    }
}

/// Resolves a binary named on the command line or found beside this one.
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(name);
    p.exists().then_some(p)
}
