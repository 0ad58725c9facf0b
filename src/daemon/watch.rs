//! Watches what systemd reports about agent units, from systemd's own signals (no poll
//! loop): crashes of containers (host systemd) and harnesses (each container's systemd)
//! become journal events the moment systemd sees them; a container that systemd restarted
//! by itself gets its harness back; the daemon's STATUS= follows.
//!
//! Unit PropertiesChanged is only emitted while someone has called Manager.Subscribe();
//! `Systemd::manager` does that on every connection used here.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use zbus::{Connection, MatchRule, MessageStream};

use super::crash::{CrashTracker, Verdict};
use super::Hive;
use crate::journal::{self, fields, Event};
use crate::plan::HARNESS_UNIT;
use crate::spans::Summed;
use crate::spec::AgentName;
use crate::systemd::proxies::ManagerProxy;
use crate::systemd::{
    error_name, unit_name_from_path, JobResult, Systemd, UnitStatus, ALREADY_SUBSCRIBED,
    UNIT_PATH_PREFIX,
};

/// A stream of PropertiesChanged for units whose object path starts with `path_prefix`
/// (matched as a namespace, then filtered here). `queue` bounds the messages held for a
/// slow reader, and is allocated up front: the host's stream sees every agent unit, each
/// container's sees one harness.
async fn unit_changes(conn: &Connection, queue: usize) -> Result<MessageStream> {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.systemd1")?
        .interface("org.freedesktop.DBus.Properties")?
        .member("PropertiesChanged")?
        .path_namespace(UNIT_PATH_PREFIX.trim_end_matches('/'))?
        .build();
    MessageStream::for_match_rule(rule, conn, Some(queue))
        .await
        .context("watching unit PropertiesChanged")
}

/// The unit a PropertiesChanged message is about, if it changed the Unit interface (which
/// carries ActiveState/SubState; the Service interface's signal comes with the same
/// change, so reacting to one of them is enough).
fn changed_unit(msg: &zbus::Message) -> Option<String> {
    let header = msg.header();
    let path = header.path()?.as_str().to_owned();
    let (iface, _, _): (
        String,
        std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
        Vec<String>,
    ) = msg.body().deserialize().ok()?;
    (iface == "org.freedesktop.systemd1.Unit")
        .then(|| unit_name_from_path(&path))
        .flatten()
}

fn crash_fields(st: &UnitStatus) -> Vec<(&'static str, String)> {
    vec![
        (fields::RESULT, st.result.clone()),
        (fields::EXEC_MAIN_CODE, st.exec_main_code_name().to_owned()),
        (fields::EXEC_MAIN_STATUS, st.exec_main_status.to_string()),
        (fields::N_RESTARTS, st.n_restarts.to_string()),
        (fields::INVOCATION_ID, st.invocation_id.clone()),
    ]
}

fn report(verdict: Verdict, crash_event: Event, agent: &AgentName, st: &UnitStatus) {
    let (event, what) = match verdict {
        Verdict::Crash => (crash_event, "crashed"),
        Verdict::CrashLoop => (
            Event::CrashLoop,
            "hit its start limit; systemd gave up restarting it",
        ),
    };
    journal::emit(
        event,
        Some(agent),
        Some(&st.unit),
        &crash_fields(st),
        &format!(
            "agent {agent}: {} {what} (result {}, {} status {}, {} restarts)",
            st.unit,
            st.result,
            st.exec_main_code_name(),
            st.exec_main_status,
            st.n_restarts
        ),
    );
}

/// Signals queued for the host's watch: a burst of changes to every agent unit at once.
const HOST_QUEUE: usize = 1024;
/// ... and for each container's: one harness unit. One of these per agent, so its size
/// shows in the daemon's memory (a 1024-deep queue cost ~24 KiB per agent).
const CONTAINER_QUEUE: usize = 32;

/// Host side: container crashes, STATUS= counts, harness healing, reloads.
pub async fn spawn(conn: &Connection, hive: Arc<Hive>) -> Result<()> {
    let sd = Systemd::reader(conn).await?;
    let mut changes = unit_changes(conn, HOST_QUEUE).await?;
    // STATUS= is refreshed by its own task, so counting agents never delays an event.
    let status_due = Arc::new(tokio::sync::Notify::new());
    let status_hive = hive.clone();
    let due = status_due.clone();
    tokio::spawn(async move {
        loop {
            due.notified().await;
            status_hive.refresh_status().await;
        }
    });
    tokio::spawn(async move {
        let mut tracker = CrashTracker::default();
        while let Some(Ok(msg)) = changes.next().await {
            let Some(unit) = changed_unit(&msg) else {
                continue;
            };
            let Some(agent) = AgentName::from_container_unit(&unit) else {
                continue;
            };
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
    let heal_hive = hive.clone();
    tokio::spawn(async move {
        while let Some(signal) = jobs.next().await {
            let Ok(args) = signal.args() else { continue };
            if JobResult::from(args.result) != JobResult::Done {
                continue;
            }
            let Some(name) = AgentName::from_container_unit(args.unit) else {
                continue;
            };
            let hive = heal_hive.clone();
            // heal_harness takes the agent's lock, so a create or rebuild in progress
            // finishes first and this then finds the harness in place.
            tokio::spawn(async move { heal_with_retries(&hive, &name, &Summed::default()).await });
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
                hive.refresh_status().await;
            }
        }
    });
    Ok(())
}

/// A container systemd restarted on its own boots while the host may be busy: its bus can
/// stay silent past one try's bound, or the harness's start job outlast its wait. Giving up
/// after one try would leave the agent without a harness until the next reload, so a
/// failed heal is tried again, a bounded number of times (about a minute in all). Each
/// try re-reads the unit, so a container that went away meanwhile ends the retries.
pub(super) async fn heal_with_retries(hive: &Hive, name: &AgentName, spans: &Summed) {
    const TRIES: u32 = 4;
    let mut pause = Duration::from_secs(2);
    for attempt in 1..=TRIES {
        match hive.heal_harness(name, spans).await {
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

/// Container side: harness crashes, seen by the container's own systemd. Ends when the
/// container's bus goes away (the container stopped or restarted; a new watch is started
/// with the new harness).
pub fn harness(agent: AgentName, sd: Systemd) -> tokio::task::JoinHandle<()> {
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
            if changed_unit(&msg).as_deref() != Some(HARNESS_UNIT) {
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
