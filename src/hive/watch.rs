//! Watches what the host's systemd reports about agent units, from its own signals (no
//! poll loop): a container's crash becomes a journal event the moment systemd sees it; a
//! container that systemd restarted by itself is sent to the harness supervisor (which
//! brings its harness back); the daemon's STATUS= follows. Each harness's own watch, in
//! its container, is the harness supervisor's (`harness_supervisor.rs`).
//!
//! Unit PropertiesChanged is only emitted while someone has called Manager.Subscribe();
//! `Systemd::manager` does that on every connection used here.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use zbus::Connection;

use super::crash::{report, unit_change, unit_changes, CrashTracker};
use super::sd_notify::StatusLine;
use crate::journal::Event;
use crate::spec::AgentName;
use crate::systemd::proxies::ManagerProxy;
use crate::systemd::{error_name, JobResult, Systemd, ALREADY_SUBSCRIBED};

/// Signals queued for the host's watch: a burst of changes to every agent unit at once.
const HOST_QUEUE: usize = 1024;
/// Host side: container crashes, STATUS= counts, reloads; each container whose start job
/// finished (systemd restarted it by itself, or a verb of this daemon started it) is sent
/// on `started`, for its harness to be seen to.
pub async fn spawn(
    conn: &Connection,
    status: StatusLine,
    started: UnboundedSender<AgentName>,
) -> Result<()> {
    let sd = Systemd::reader(conn).await?;
    let mut changes = unit_changes(conn, HOST_QUEUE).await?;
    // STATUS= is refreshed by its own task, so counting agents never delays an event.
    let status_due = Arc::new(tokio::sync::Notify::new());
    let status_line = status.clone();
    let due = status_due.clone();
    tokio::spawn(async move {
        loop {
            due.notified().await;
            status_line.refresh().await;
        }
    });
    tokio::spawn(async move {
        let mut tracker = CrashTracker::default();
        while let Some(Ok(msg)) = changes.next().await {
            let is_agent = |u: &str| AgentName::from_container_unit(u).is_some();
            let Some(change) = unit_change(&msg, is_agent) else {
                continue;
            };
            let Some(agent) = AgentName::from_container_unit(&change.unit) else {
                continue;
            };
            // A container starting or running cannot be a crash: reading its ~300
            // properties at each of its changes cost the host's systemd, its bus and this
            // daemon a few ms per create, on every create's way.
            if tracker.up_without_read(&change) {
                status_due.notify_one();
                continue;
            }
            let unit = change.unit;
            match sd.status(&unit).await {
                Ok(Some(st)) => {
                    if let Some(v) = tracker.observe(&st) {
                        report(v, Event::ContainerCrash, &agent, &st);
                    }
                }
                Ok(None) => tracker.forget(&unit),
                Err(e) => log::warn!("agent {agent}: reading {unit} after a change: {e:#}"),
            }
            status_due.notify_one();
        }
        log::error!(
            "lost systemd's PropertiesChanged stream; exiting so systemd restarts hive-c0re"
        );
        std::process::exit(1);
    });

    let manager = ManagerProxy::new(conn).await?;
    let mut jobs = manager
        .receive_job_removed()
        .await
        .context("watching JobRemoved for agent units")?;
    tokio::spawn(async move {
        while let Some(signal) = jobs.next().await {
            let Ok(args) = signal.args() else { continue };
            if JobResult::from(args.result) != JobResult::Done {
                continue;
            }
            let Some(name) = AgentName::from_container_unit(args.unit) else {
                continue;
            };
            // The supervisor takes the agent's lock, so a create or rebuild in progress
            // finishes first and it then finds the harness in place. It outlives this
            // watch: a send fails only as the daemon exits.
            let _ = started.send(name);
        }
    });

    resubscribe_on_reconnect(manager.clone()).await?;

    let mut reloads = manager
        .receive_reloading()
        .await
        .context("watching Reloading")?;
    tokio::spawn(async move {
        while let Some(signal) = reloads.next().await {
            // After a reload the unit objects are re-created: re-read everything.
            if signal.args().is_ok_and(|a| !a.active) {
                log::info!("systemd reloaded; re-reading agent units");
                status.refresh().await;
            }
        }
    });
    Ok(())
}

/// systemd forgets every subscriber when its own bus connection drops and comes back (it
/// does so when the match rules of its connection overflow, e.g. with more than ~512
/// pending jobs queued by one client). From then on it sends no unit PropertiesChanged and
/// no JobRemoved for the jobs it queues itself (automatic restarts), while hive-c0re's own
/// connection is fine: the daemon would stay up and deaf.
///
/// So each time systemd takes its bus name again, the daemon subscribes once more, and the
/// answer tells what happened. AlreadySubscribed: systemd kept us (daemon-reexec and
/// daemon-reload carry subscribers over), nothing was missed. Success: systemd had
/// forgotten us and changes went unseen meanwhile, so the daemon exits non-zero and
/// systemd restarts it; the restarted daemon adopts every running agent (without restarting
/// it) and sees to their harnesses.
async fn resubscribe_on_reconnect(manager: ManagerProxy<'static>) -> Result<()> {
    let mut owners = manager
        .inner()
        .receive_owner_changed()
        .await
        .context("watching who owns org.freedesktop.systemd1")?;
    tokio::spawn(async move {
        while let Some(owner) = owners.next().await {
            let Some(owner) = owner else {
                log::warn!("systemd left the bus; waiting for it to come back");
                continue;
            };
            match manager.subscribe().await {
                Err(e) if error_name(&e) == Some(ALREADY_SUBSCRIBED) => {
                    log::info!(
                        "systemd is back on the bus as {owner} and kept hive-c0re's subscription"
                    );
                }
                Ok(()) => {
                    log::error!(
                        "systemd came back on the bus as {owner} without hive-c0re's subscription: \
                         unit changes went unseen meanwhile; exiting so systemd restarts hive-c0re"
                    );
                    std::process::exit(1);
                }
                Err(e) => {
                    log::error!(
                        "systemd came back on the bus as {owner}, subscribing again failed: {e}; \
                         exiting so systemd restarts hive-c0re"
                    );
                    std::process::exit(1);
                }
            }
        }
    });
    Ok(())
}
