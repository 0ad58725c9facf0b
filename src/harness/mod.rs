//! hive-harness, inside each agent's container: connects to the agent socket, tells
//! systemd it is ready only once connected, runs the agent's command and keeps the agent's
//! durable event log in /state.
//!
//! The agent's work never depends on the daemon being up: systemd's watchdog is fed by
//! this harness's own loop (proof that the harness is alive, not that hive-c0re answers),
//! so a daemon that is stopped, upgraded or crash-looping past its start limit leaves the
//! harness and the agent's command running. While cut off, the harness reconnects with
//! backoff, says so in STATUS= and in its event log, and keeps the events it could not
//! deliver in a bounded queue ([`Outbox`]), sent in order once the daemon is back.

pub mod claude;
pub mod egress_forward;
mod events;
mod feed;
pub mod mcp;
mod outbox;
pub mod turns;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::socket::protocol::{self, Reply, Request};
pub use events::EventLog;
pub use outbox::{Backoff, Outbox};

/// How long one answer from the daemon may take before the socket counts as unhealthy.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Ping period when systemd set no watchdog.
const DEFAULT_PING: Duration = Duration::from_secs(5);
/// Events kept for the daemon while it is unreachable; older ones beyond this are counted
/// and reported as dropped once it is back.
pub const OUTBOX_CAPACITY: usize = 1024;

pub struct Options {
    pub socket: PathBuf,
    pub events: PathBuf,
    pub command: Vec<String>,
    /// The turn loop's timeout per turn; `None`: the command runs once, as long as it likes.
    pub turns: Option<Duration>,
    /// In the turn loop, run `claude` each turn instead of `command`.
    pub claude: Option<claude::Options>,
}

/// One connection to the agent socket, request by request.
pub struct Client {
    /// The read side, until the connection subscribes (then the reader task has it).
    read: Option<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    /// Once subscribed: replies, from the reader task that hands pushes aside.
    replies: Option<tokio::sync::mpsc::Receiver<Reply>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    pub agent: String,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

impl Client {
    /// Connects and says hello; the daemon answers with the agent's name.
    pub async fn connect(socket: &std::path::Path) -> Result<Client> {
        // Bounded: a connect to a socket whose listener does not accept must not hold up
        // the loop that feeds systemd's watchdog.
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| anyhow!("no answer from the daemon within {ANSWER_TIMEOUT:?}"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (read, write) = stream.into_split();
        let mut client = Client {
            read: Some(BufReader::new(read)),
            write,
            replies: None,
            reader: None,
            agent: String::new(),
        };
        match client
            .ask(&Request::Hello {
                version: protocol::VERSION,
            })
            .await?
        {
            Reply::Welcome { agent, .. } => client.agent = agent,
            other => bail!("unexpected answer to hello: {other:?}"),
        }
        Ok(client)
    }

    pub async fn ask(&mut self, req: &Request) -> Result<Reply> {
        let exchange = async {
            self.write.write_all(&protocol::encode(req)).await?;
            if let Some(replies) = self.replies.as_mut() {
                return replies
                    .recv()
                    .await
                    .ok_or_else(|| anyhow!("the daemon closed the socket"));
            }
            let read = self
                .read
                .as_mut()
                .expect("an unsubscribed client reads its replies");
            let mut line = String::new();
            if read.read_line(&mut line).await? == 0 {
                bail!("the daemon closed the socket");
            }
            serde_json::from_str::<Reply>(line.trim_end())
                .map_err(|e| anyhow!("bad answer from the daemon: {e}"))
        };
        tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer from the daemon within {ANSWER_TIMEOUT:?}"))?
    }
}

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

fn notify(state: &[sd_notify::NotifyState<'_>]) {
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

/// The link to the daemon: connected, or cut off since some time and reconnecting.
struct Link {
    socket: PathBuf,
    /// Where the connection's reader hands the daemon's pushes.
    pushes: tokio::sync::mpsc::Sender<protocol::Push>,
    agent: String,
    client: Option<Client>,
    outbox: Outbox,
    backoff: Backoff,
    /// When the link went down (monotonic, and wall clock for STATUS= and the log).
    down_since: Option<(tokio::time::Instant, u64)>,
    attempts: u32,
    next_attempt: tokio::time::Instant,
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

    /// The socket stopped answering: from now on, reconnect with backoff.
    fn went_down(&mut self, log: &EventLog, error: &str) {
        self.client = None;
        if self.down_since.is_none() {
            self.down_status_at = None;
            self.down_since = Some((tokio::time::Instant::now(), now_secs()));
            self.attempts = 0;
            self.backoff = Backoff::new();
            self.next_attempt = tokio::time::Instant::now();
            log::warn!("agent socket unreachable ({error}); the agent's command keeps running, reconnecting");
            log.record(
                "disconnected",
                &serde_json::json!({ "error": crate::spec::one_line(error) }),
            );
        }
        self.tell_down(error);
    }

    /// STATUS= for a link that is down, at most once a second (see `down_status_at`).
    fn tell_down(&mut self, error: &str) {
        let now = tokio::time::Instant::now();
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
    async fn send_event(&mut self, log: &EventLog, name: &str, data: serde_json::Value) {
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
    async fn check(&mut self, log: &EventLog) {
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

    async fn reconnect(&mut self, log: &EventLog) {
        self.attempts += 1;
        match connect_subscribed(&self.socket, &self.pushes).await {
            Ok(c) => {
                let (since, at) = self.down_since.take().expect("down");
                log::info!(
                    "reconnected to hive-c0re after {}s ({} attempts)",
                    since.elapsed().as_secs(),
                    self.attempts
                );
                log.record(
                    "reconnected",
                    &serde_json::json!({
                        "down_since": at,
                        "down_secs": since.elapsed().as_secs(),
                        "attempts": self.attempts,
                        "queued": self.outbox.len(),
                    }),
                );
                self.agent = c.agent.clone();
                self.client = Some(c);
                notify(&[sd_notify::NotifyState::Status(&self.status_connected())]);
                self.flush(log).await;
            }
            Err(e) => {
                let pause = self.backoff.next_pause();
                self.next_attempt = tokio::time::Instant::now() + pause;
                log::debug!("{e:#}; next attempt in {pause:?}");
                self.tell_down(&format!("{e:#}"));
            }
        }
    }

    /// Before exiting: one last bounded try to deliver what is queued; what still cannot
    /// be delivered is named in the event log and the journal, never dropped silently.
    async fn close(&mut self, log: &EventLog) {
        if self.client.is_none() {
            self.reconnect(log).await;
        }
        self.flush(log).await;
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

/// Runs until the agent's command exits (its code is returned) or SIGTERM (0). In the
/// turn loop, until SIGTERM.
pub async fn run(opts: Options) -> Result<i32> {
    let log = EventLog::open(&opts.events);
    let mut usec = 0u64;
    let tick_every = if sd_notify::watchdog_enabled(false, &mut usec) {
        Duration::from_micros(usec / 4)
    } else {
        DEFAULT_PING
    };

    // Pushes from the daemon (decisions, restarts ahead, admins' messages), handed aside
    // by the link's reader.
    let (pushes, mut feed) = tokio::sync::mpsc::channel(feed::CHANNEL);
    let client = connect_retrying(&opts.socket, &pushes).await;
    let mut link = Link {
        socket: opts.socket.clone(),
        pushes,
        agent: client.agent.clone(),
        client: Some(client),
        outbox: Outbox::new(OUTBOX_CAPACITY),
        backoff: Backoff::new(),
        down_since: None,
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

    let mut feed_open = true;
    let mut turn_loop = opts.turns.map(|timeout| turns::TurnLoop {
        timeout,
        wakes: turns::Wakes::default(),
        next: 1,
        running: None,
        claude: opts.claude.clone().map(|c| turns::ClaudeTurns {
            spend: claude::Spend::load(&c.spend_file, &claude::today()),
            opts: c,
            agent: link.agent.clone(),
        }),
    });
    if let Some(tl) = turn_loop.as_mut() {
        tl.wakes.push(turns::Wake {
            reason: "start".into(),
            message: String::new(),
            data: serde_json::Value::Null,
        });
        tl.start_next(&opts.command, &log, &mut link).await;
    }

    let mut child = match opts.command.split_first() {
        _ if turn_loop.is_some() => None,
        Some((prog, args)) => {
            let child = tokio::process::Command::new(prog)
                .args(args)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the agent's command {prog}"))?;
            let data = serde_json::json!({ "command": opts.command, "pid": child.id() });
            log.record("command_started", &data);
            link.send_event(&log, "command_started", data).await;
            Some(child)
        }
        None => None,
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pings = 0u32;
    loop {
        // When the running turn must end, if one runs.
        let turn_deadline = turn_loop
            .as_ref()
            .and_then(|t| t.running.as_ref())
            .map(|r| r.deadline);
        tokio::select! {
            // The watchdog tick first, whatever else is ready.
            biased;
            _ = tick.tick() => {
                // This loop running is what systemd's watchdog checks. Every step below is
                // bounded by ANSWER_TIMEOUT, well inside the watchdog period.
                notify(&[sd_notify::NotifyState::Watchdog]);
                pings = pings.wrapping_add(1);
                // Ping at half the watchdog period; while cut off, each tick is a chance to
                // reconnect (the backoff decides whether it is taken).
                if link.client.is_none() || pings.is_multiple_of(2) {
                    link.check(&log).await;
                }
                // Wakes held back by a claude budget go at the new day.
                if let Some(tl) = turn_loop.as_mut() {
                    tl.start_next(&opts.command, &log, &mut link).await;
                }
            }
            // The daemon closed a subscribed connection (it restarts, or dropped a feed it
            // could not deliver to): reconnect now rather than at the next ping.
            _ = async { link.client.as_mut().and_then(|c| c.reader.as_mut()).expect("guarded").await },
                if link.client.as_ref().is_some_and(|c| c.reader.is_some()) => {
                link.went_down(&log, "the daemon closed the connection");
            }
            _ = tokio::time::sleep_until(link.next_attempt), if link.client.is_none() => {
                link.reconnect(&log).await;
            }
            push = feed.recv(), if feed_open => {
                let Some(push) = push else {
                    feed_open = false;
                    continue;
                };
                if let Some(wake) = feed::received(&log, push) {
                    if let Some(tl) = turn_loop.as_mut() {
                        tl.wakes.push(wake);
                        if tl.running.is_none() {
                            tl.start_next(&opts.command, &log, &mut link).await;
                        }
                    }
                }
            }
            status = async { turn_loop.as_mut().and_then(|t| t.running.as_mut()).expect("guarded").child.wait().await },
                if turn_deadline.is_some() => {
                let tl = turn_loop.as_mut().expect("guarded");
                let code = status.map(|s| s.code().unwrap_or(128)).unwrap_or(1);
                tl.done(code, false, &log, &mut link).await;
                tl.start_next(&opts.command, &log, &mut link).await;
            }
            _ = tokio::time::sleep_until(turn_deadline.unwrap_or_else(tokio::time::Instant::now)), if turn_deadline.is_some() => {
                let tl = turn_loop.as_mut().expect("guarded");
                let running = tl.running.as_mut().expect("guarded");
                log::warn!("turn {} ran past its timeout of {:?}; killing it", running.turn, tl.timeout);
                turns::kill(running).await;
                tl.done(137, true, &log, &mut link).await;
                tl.start_next(&opts.command, &log, &mut link).await;
            }
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                let code = status.map(|s| s.code().unwrap_or(128)).unwrap_or(1);
                let data = serde_json::json!({ "code": code });
                log.record("command_exited", &data);
                link.outbox.push("command_exited", data);
                link.close(&log).await;
                return Ok(code);
            }
            _ = term.recv() => {
                log.record("stopping", &serde_json::json!({}));
                notify(&[sd_notify::NotifyState::Stopping]);
                return Ok(0);
            }
        }
    }
}
