//! What hive-c0re tells systemd about itself: READY/RELOADING/STOPPING, STATUS= (agents
//! running, failed, restarting; approvals pending or why the store cannot be used), and
//! the watchdog, fed only while systemd answers on the bus.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use tokio::sync::broadcast::Receiver;

use super::approvals::Approvals;
use super::changes::Change;
use crate::systemd::{ActiveState, Systemd, AGENT_UNITS};

/// The daemon's STATUS= line: what it counts from (systemd's agent units, the approvals).
#[derive(Clone)]
pub struct StatusLine {
    sd: Systemd,
    approvals: Arc<Approvals>,
}

impl StatusLine {
    pub fn new(sd: Systemd, approvals: Arc<Approvals>) -> Self {
        Self { sd, approvals }
    }

    /// Tells systemd how the hive is doing (`systemctl status hive-c0re` shows it).
    pub async fn refresh(&self) {
        let units = match self.sd.list(AGENT_UNITS).await {
            Ok(u) => u,
            Err(e) => {
                log::warn!("counting agents for STATUS=: {e:#}");
                return;
            }
        };
        let running = units
            .iter()
            .filter(|u| u.active_state == ActiveState::Active && u.sub_state.is_running())
            .count();
        let failed = units
            .iter()
            .filter(|u| u.active_state == ActiveState::Failed)
            .count();
        let restarting = units
            .iter()
            .filter(|u| u.sub_state.is_auto_restart())
            .count();
        let status = match self.approvals.problem() {
            None => format!(
                "{running} agents running, {failed} failed, {restarting} restarting, {} approvals pending",
                self.approvals.pending()
            ),
            Some(problem) => format!(
                "{running} agents running, {failed} failed, {restarting} restarting; {problem}"
            ),
        };
        notify(&[sd_notify::NotifyState::Status(&status)]);
    }
}

/// Refreshes STATUS= whenever an approval is asked for or decided, not only when a unit
/// changes: every path that changes an approval (socket, API, orphan marking) publishes
/// it. Changes coalesce into one pending refresh: a flood of requests costs a few
/// refreshes, not one each.
pub fn spawn_status_on_approvals(mut changes: Receiver<Change>, status: StatusLine) {
    let due = Arc::new(tokio::sync::Notify::new());
    let wake = due.clone();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(Change::ApprovalNew { .. } | Change::ApprovalChanged { .. })
                | Err(RecvError::Lagged(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    tokio::spawn(async move {
        loop {
            due.notified().await;
            status.refresh().await;
        }
    });
}

/// Feeds systemd's watchdog (WatchdogSec= in hive-c0re.service), but only after systemd
/// answered a ping on the bus: a daemon that is stuck, or cut off from the bus, stops
/// feeding it and is restarted.
///
/// A ping fails for a moment when systemd itself re-executes (`daemon-reexec`: NoReply,
/// its connection is replaced). Pinging at a quarter of the period, and again soon after a
/// failure, lets such a blip pass; feeding only at half the period let one failed ping
/// run into the limit (seen on systemd 257 under load).
pub fn spawn_watchdog(conn: zbus::Connection) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = std::time::Duration::from_micros(usec / 4);
    let retry = period.min(std::time::Duration::from_millis(500));
    tokio::spawn(async move {
        loop {
            let ping = conn.call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            );
            let pause = match tokio::time::timeout(period, ping).await {
                Ok(Ok(_)) => {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                    period
                }
                Ok(Err(e)) => {
                    log::warn!("watchdog: systemd did not answer a ping: {e}");
                    retry
                }
                Err(_) => {
                    log::warn!("watchdog: systemd did not answer a ping within {period:?}");
                    retry
                }
            };
            tokio::time::sleep(pause).await;
        }
    });
}

/// Each booted agent holds several inotify instances as the host's root; with the kernel's
/// default of 128 a host runs out at about 20 agents and nspawn fails with status 255.
/// units/sysctl.d/50-hyperhive.conf raises it; say so if it is still low.
pub fn warn_low_limits() {
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

/// Failures to notify are logged, never fatal: the daemon may run outside systemd.
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("sd_notify: {e}");
    }
}
