//! The harness's link to the daemon over the agent's socket: connected, or cut off and
//! reconnecting with backoff while events wait in the outbox; STATUS= says which.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::events::now_usec;
use super::{feed, Backoff, Client, EventLog, Outbox, OUTBOX_CAPACITY};
use crate::socket::protocol::{self, Reply, Request};

/// Connects, retrying with a growing pause: at boot, or while the daemon restarts, the
/// socket may not be there yet. systemd's start timeout bounds the wait (READY=1 comes
/// only once connected).
async fn connect_retrying(
    socket: &std::path::Path,
    pushes: &tokio::sync::mpsc::Sender<protocol::Push>,
) -> Client {
    let mut backoff = Backoff::new();
    loop {
        match connect_subscribed(socket, pushes).await {
            Ok(c) => return c,
            Err(e) => {
                let pause = backoff.next_pause();
                log::debug!("{e:#}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Connects and subscribes to the daemon's pushes on the same connection.
async fn connect_subscribed(
    socket: &std::path::Path,
    pushes: &tokio::sync::mpsc::Sender<protocol::Push>,
) -> Result<Client> {
    let mut client = Client::connect(socket).await?;
    feed::subscribe(&mut client, pushes.clone()).await?;
    Ok(client)
}

pub(super) fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("sd_notify: {e}");
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long a cut stays quiet. A daemon restart is over well within it (the new daemon
/// answers ~0.2 s after the old one stopped, with 200 agents running), and every harness
/// of the hive is cut at the same instant: telling it at once — a journal line, an event
/// written to sqlite with its fsync, STATUS= to the container's systemd — woke every
/// container together just as the old daemon exited and the new one started, on the same
/// CPUs. A cut that outlasts this is told then, with its first error and time; one that
/// does not is recorded (`disconnected`, at its own time) beside `reconnected`.
pub(super) const QUIET_CUT: Duration = Duration::from_secs(1);

/// The link to the daemon: connected, or cut off since some time and reconnecting.
pub(super) struct Link {
    socket: PathBuf,
    /// Where the connection's reader hands the daemon's pushes.
    pushes: tokio::sync::mpsc::Sender<protocol::Push>,
    pub(super) agent: String,
    pub(super) client: Option<Client>,
    pub(super) outbox: Outbox,
    backoff: Backoff,
    /// When the link went down (monotonic, and wall clock for STATUS= and the log).
    down_since: Option<(tokio::time::Instant, u64)>,
    /// The cut not yet told (journal, event log, STATUS=): its first error and when it
    /// happened. `None` once told, or while connected. See [`QUIET_CUT`].
    untold: Option<(String, i64)>,
    attempts: u32,
    pub(super) next_attempt: tokio::time::Instant,
    /// When STATUS= last said the link is down: said again at most once a second, so a
    /// hive's harnesses retrying together after a daemon restart do not each wake their
    /// container's systemd (and its bus) at every attempt while the new daemon starts.
    down_status_at: Option<tokio::time::Instant>,
}

impl Link {
    fn status_connected(&self) -> String {
        format!("connected to hive-c0re as agent {}", self.agent)
    }

    fn status_down(&self, error: &str) -> String {
        let (since, _) = self.down_since.expect("down");
        format!(
            "hive-c0re unreachable for {}s ({} reconnect attempts, {} events queued): {}; \
             the agent's command keeps running",
            since.elapsed().as_secs(),
            self.attempts,
            self.outbox.len(),
            crate::spec::one_line(error),
        )
    }

    /// The socket stopped answering: from now on, reconnect with backoff. Told once the
    /// cut has lasted [`QUIET_CUT`].
    pub(super) fn went_down(&mut self, log: &EventLog, error: &str) {
        self.client = None;
        if self.down_since.is_none() {
            self.down_status_at = None;
            self.down_since = Some((tokio::time::Instant::now(), now_secs()));
            self.untold = Some((crate::spec::one_line(error), now_usec()));
            self.attempts = 0;
            self.backoff = Backoff::new();
            self.next_attempt = tokio::time::Instant::now();
        }
        self.tell_down(log, error);
    }

    /// Tells a cut not told yet: the journal, and the event log at the time it happened.
    pub(super) fn tell_cut(&mut self, log: &EventLog) {
        if let Some((error, at)) = self.untold.take() {
            log::warn!("agent socket unreachable ({error}); the agent's command keeps running, reconnecting");
            log.record_at(at, "disconnected", &serde_json::json!({ "error": error }));
        }
    }

    /// Once the cut is no longer quiet: tells it, and says so in STATUS=, at most once a
    /// second (see `down_status_at`).
    fn tell_down(&mut self, log: &EventLog, error: &str) {
        let now = tokio::time::Instant::now();
        if self
            .down_since
            .is_some_and(|(since, _)| now.duration_since(since) < QUIET_CUT)
        {
            return;
        }
        self.tell_cut(log);
        if self
            .down_status_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.down_status_at = Some(now);
        notify(&[sd_notify::NotifyState::Status(&self.status_down(error))]);
    }

    /// Sends an event now if connected, else keeps it for later.
    pub(super) async fn send_event(&mut self, log: &EventLog, name: &str, data: serde_json::Value) {
        self.outbox.push(name, data);
        self.flush(log).await;
    }

    /// Delivers queued events in order; stops at the first failure (the link is then down).
    async fn flush(&mut self, log: &EventLog) {
        if let Some(dropped) = self.outbox.take_dropped() {
            log.record("events_dropped", &dropped);
            self.outbox.push_front("events_dropped", dropped);
        }
        while let (Some(client), Some((name, data))) = (self.client.as_mut(), self.outbox.front()) {
            let req = Request::Event {
                name: name.to_owned(),
                data: data.clone(),
            };
            match client.ask(&req).await {
                // Ok, or an error the daemon answered with (e.g. refused as malformed or
                // rate-limited): either way the daemon saw it; an error is kept in the log.
                Ok(reply) => {
                    if let Reply::Error { error } = &reply {
                        log.record(
                            "event_refused",
                            &serde_json::json!({ "event": name, "error": error }),
                        );
                    }
                    self.outbox.pop_front();
                }
                Err(e) => {
                    self.went_down(log, &format!("{e:#}"));
                    return;
                }
            }
        }
    }

    /// One liveness round: ping if connected; if cut off and it is time, try to reconnect.
    pub(super) async fn check(&mut self, log: &EventLog) {
        if let Some(client) = self.client.as_mut() {
            match client.ask(&Request::Ping {}).await {
                Ok(Reply::Pong) => {}
                other => {
                    let err = match other {
                        Ok(r) => format!("unexpected answer to ping: {r:?}"),
                        Err(e) => format!("{e:#}"),
                    };
                    self.went_down(log, &err);
                }
            }
        }
        if self.client.is_none() && tokio::time::Instant::now() >= self.next_attempt {
            self.reconnect(log).await;
        }
    }

    pub(super) async fn reconnect(&mut self, log: &EventLog) {
        self.attempts += 1;
        match connect_subscribed(&self.socket, &self.pushes).await {
            Ok(c) => {
                let (since, at) = self.down_since.take().expect("down");
                let reconnected = serde_json::json!({
                    "down_since": at,
                    "down_secs": since.elapsed().as_secs(),
                    "attempts": self.attempts,
                    "queued": self.outbox.len(),
                });
                self.agent = c.agent.clone();
                self.client = Some(c);
                match self.untold.take() {
                    // A quiet cut (a daemon restart): both records in one write, no journal
                    // line, and STATUS= never said otherwise.
                    Some((error, down_at)) => {
                        log::debug!(
                            "reconnected to hive-c0re after {:?} ({} attempts)",
                            since.elapsed(),
                            self.attempts
                        );
                        log.record_all(&[
                            (
                                down_at,
                                "disconnected",
                                serde_json::json!({ "error": error }),
                            ),
                            (now_usec(), "reconnected", reconnected),
                        ]);
                    }
                    None => {
                        log::info!(
                            "reconnected to hive-c0re after {}s ({} attempts)",
                            since.elapsed().as_secs(),
                            self.attempts
                        );
                        log.record("reconnected", &reconnected);
                        notify(&[sd_notify::NotifyState::Status(&self.status_connected())]);
                    }
                }
                self.flush(log).await;
            }
            Err(e) => {
                let pause = self.backoff.next_pause();
                self.next_attempt = tokio::time::Instant::now() + pause;
                log::debug!("{e:#}; next attempt in {pause:?}");
                self.tell_down(log, &format!("{e:#}"));
            }
        }
    }

    /// Before exiting: one last bounded try to deliver what is queued; what still cannot
    /// be delivered is named in the event log and the journal, never dropped silently.
    pub(super) async fn close(&mut self, log: &EventLog) {
        if self.client.is_none() {
            self.reconnect(log).await;
        }
        self.flush(log).await;
        self.tell_cut(log);
        if !self.outbox.is_empty() {
            let names = self.outbox.names();
            log::warn!(
                "hive-c0re unreachable at exit: {} events not delivered ({}); they are in the event log",
                names.len(),
                names.join(", ")
            );
            log.record(
                "events_undelivered",
                &serde_json::json!({ "events": self.outbox.drain_all() }),
            );
        }
    }
}

/// Connects to the agent's socket (retrying until the daemon answers), and tells systemd
/// the harness is ready; pushes from the daemon arrive on the returned receiver.
pub(super) async fn connect(
    socket: &std::path::Path,
    log: &EventLog,
) -> (Link, tokio::sync::mpsc::Receiver<protocol::Push>) {
    let (pushes, feed) = tokio::sync::mpsc::channel(feed::CHANNEL);
    let client = connect_retrying(socket, &pushes).await;
    let link = Link {
        socket: socket.to_owned(),
        pushes,
        agent: client.agent.clone(),
        client: Some(client),
        outbox: Outbox::new(OUTBOX_CAPACITY),
        backoff: Backoff::new(),
        down_since: None,
        untold: None,
        attempts: 0,
        next_attempt: tokio::time::Instant::now(),
        down_status_at: None,
    };
    log::info!("connected to hive-c0re as agent {}", link.agent);
    log.record("connected", &serde_json::json!({ "agent": link.agent }));
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&link.status_connected()),
    ]);
    (link, feed)
}
