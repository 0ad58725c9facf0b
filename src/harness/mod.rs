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
mod link;
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
use link::{connect, notify, Link};
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

/// Runs until the agent's command exits (its code is returned) or SIGTERM (0). In the
/// turn loop, until SIGTERM.
pub async fn run(opts: Options) -> Result<i32> {
    let log = EventLog::open(&opts.events);
    // Pushes from the daemon (decisions, restarts ahead, admins' messages), handed aside
    // by the link's reader.
    let (mut link, mut feed) = connect(&opts.socket, &log).await;

    let mut feed_open = true;
    let mut turn_loop = turn_loop(&opts, &link.agent);
    if let Some(tl) = turn_loop.as_mut() {
        tl.start_next(&opts.command, &log, &mut link).await;
    }

    let mut child = if turn_loop.is_some() {
        None
    } else {
        start_command(&opts.command, &log, &mut link).await?
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(tick_period());
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
                ticked(&mut pings, &opts.command, &log, &mut link, &mut turn_loop).await;
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
                    woken(wake, &opts.command, &log, &mut link, &mut turn_loop).await;
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
                timed_out(tl, &opts.command, &log, &mut link).await;
            }
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                let code = status.map(|s| s.code().unwrap_or(128)).unwrap_or(1);
                command_exited(code, &log, &mut link).await;
                return Ok(code);
            }
            _ = term.recv() => {
                link.tell_cut(&log);
                log.record("stopping", &serde_json::json!({}));
                notify(&[sd_notify::NotifyState::Stopping]);
                return Ok(0);
            }
        }
    }
}

/// How often the loop ticks: a quarter of systemd's watchdog period, or [`DEFAULT_PING`].
fn tick_period() -> Duration {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        Duration::from_micros(usec / 4)
    } else {
        DEFAULT_PING
    }
}

/// One tick: feeds the watchdog, checks the link, starts a wake held back by a budget.
async fn ticked(
    pings: &mut u32,
    command: &[String],
    log: &EventLog,
    link: &mut Link,
    turn_loop: &mut Option<turns::TurnLoop>,
) {
    // This loop running is what systemd's watchdog checks. Every step below is
    // bounded by ANSWER_TIMEOUT, well inside the watchdog period.
    notify(&[sd_notify::NotifyState::Watchdog]);
    *pings = pings.wrapping_add(1);
    // Ping at half the watchdog period; while cut off, each tick is a chance to
    // reconnect (the backoff decides whether it is taken).
    if link.client.is_none() || pings.is_multiple_of(2) {
        link.check(log).await;
    }
    // Wakes held back by a claude budget go at the new day.
    if let Some(tl) = turn_loop.as_mut() {
        tl.start_next(command, log, link).await;
    }
}

/// A wake pushed by the daemon: queued, and started if no turn runs.
async fn woken(
    wake: turns::Wake,
    command: &[String],
    log: &EventLog,
    link: &mut Link,
    turn_loop: &mut Option<turns::TurnLoop>,
) {
    if let Some(tl) = turn_loop.as_mut() {
        tl.wakes.push(wake);
        if tl.running.is_none() {
            tl.start_next(command, log, link).await;
        }
    }
}

/// A turn ran past its timeout: killed, recorded, and the next one started.
async fn timed_out(tl: &mut turns::TurnLoop, command: &[String], log: &EventLog, link: &mut Link) {
    let running = tl.running.as_mut().expect("guarded");
    log::warn!(
        "turn {} ran past its timeout of {:?}; killing it",
        running.turn,
        tl.timeout
    );
    turns::kill(running).await;
    tl.done(137, true, log, link).await;
    tl.start_next(command, log, link).await;
}

/// The agent's command ended with `code`: recorded, told to the daemon, the link closed.
async fn command_exited(code: i32, log: &EventLog, link: &mut Link) {
    let data = serde_json::json!({ "code": code });
    log.record("command_exited", &data);
    link.outbox.push("command_exited", data);
    link.close(log).await;
}

/// The turn loop, if the agent runs in turns: its first wake is the start.
fn turn_loop(opts: &Options, agent: &str) -> Option<turns::TurnLoop> {
    let mut turn_loop = opts.turns.map(|timeout| turns::TurnLoop {
        timeout,
        wakes: turns::Wakes::default(),
        next: 1,
        running: None,
        claude: opts.claude.clone().map(|c| turns::ClaudeTurns {
            spend: claude::Spend::load(&c.spend_file, &claude::today()),
            opts: c,
            agent: agent.to_owned(),
        }),
    });
    if let Some(tl) = turn_loop.as_mut() {
        tl.wakes.push(turns::Wake {
            reason: "start".into(),
            message: String::new(),
            data: serde_json::Value::Null,
        });
    }
    turn_loop
}

/// Starts the agent's command, if it has one and does not run in turns.
async fn start_command(
    command: &[String],
    log: &EventLog,
    link: &mut Link,
) -> Result<Option<tokio::process::Child>> {
    let Some((prog, args)) = command.split_first() else {
        return Ok(None);
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the agent's command {prog}"))?;
    let data = serde_json::json!({ "command": command, "pid": child.id() });
    log.record("command_started", &data);
    link.send_event(log, "command_started", data).await;
    Ok(Some(child))
}
