//! hive-harness, inside each agent's container: connects to the agent socket, tells
//! systemd it is ready only once connected, keeps the watchdog fed only while the socket
//! answers, runs the agent's command and keeps the agent's durable event log in /state.

mod events;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::socket::protocol::{self, Reply, Request};
pub use events::EventLog;

/// How long one answer from the daemon may take before the socket counts as unhealthy.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Ping period when systemd set no watchdog.
const DEFAULT_PING: Duration = Duration::from_secs(5);
/// How soon a lost agent socket is tried again.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

pub struct Options {
    pub socket: PathBuf,
    pub events: PathBuf,
    pub command: Vec<String>,
}

/// One connection to the agent socket, request by request.
pub struct Client {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    pub agent: String,
}

impl Client {
    /// Connects and says hello; the daemon answers with the agent's name.
    pub async fn connect(socket: &std::path::Path) -> Result<Client> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (read, write) = stream.into_split();
        let mut client = Client {
            read: BufReader::new(read),
            write,
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
            let mut line = String::new();
            if self.read.read_line(&mut line).await? == 0 {
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
/// socket may not be there yet. systemd's start timeout bounds the wait.
async fn connect_retrying(socket: &std::path::Path) -> Client {
    let mut pause = Duration::from_millis(50);
    loop {
        match Client::connect(socket).await {
            Ok(c) => return c,
            Err(e) => {
                log::debug!("{e:#}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("sd_notify: {e}");
    }
}

/// Runs until the agent's command exits (its code is returned) or SIGTERM (0).
pub async fn run(opts: Options) -> Result<i32> {
    let log = EventLog::open(&opts.events);
    let mut usec = 0u64;
    let ping_every = if sd_notify::watchdog_enabled(false, &mut usec) {
        Duration::from_micros(usec / 2)
    } else {
        DEFAULT_PING
    };

    let mut client = connect_retrying(&opts.socket).await;
    let agent = client.agent.clone();
    log::info!("connected to hive-c0re as agent {agent}");
    log.record("connected", &serde_json::json!({ "agent": agent }));
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("connected to hive-c0re as agent {agent}")),
    ]);

    let mut child = match opts.command.split_first() {
        Some((prog, args)) => {
            let child = tokio::process::Command::new(prog)
                .args(args)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the agent's command {prog}"))?;
            let data = serde_json::json!({ "command": opts.command, "pid": child.id() });
            log.record("command_started", &data);
            let _ = client
                .ask(&Request::Event {
                    name: "command_started".into(),
                    data,
                })
                .await;
            Some(child)
        }
        None => None,
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(ping_every);
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match client.ask(&Request::Ping {}).await {
                    Ok(Reply::Pong) => {
                        if !healthy {
                            log.record("reconnected", &serde_json::json!({}));
                            notify(&[sd_notify::NotifyState::Status(&format!("connected to hive-c0re as agent {agent}"))]);
                            healthy = true;
                        }
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    other => {
                        // No WATCHDOG=1 while cut off: if the socket does not come back
                        // in time, systemd kills and restarts this harness.
                        if healthy {
                            log.record("disconnected", &serde_json::json!({ "error": format!("{other:?}") }));
                            notify(&[sd_notify::NotifyState::Status("agent socket unreachable, reconnecting")]);
                            healthy = false;
                        }
                        // Waiting a whole ping period before the next try (or before the
                        // first ping on a new connection) would put the next WATCHDOG=1 at
                        // the watchdog's deadline: a daemon restart would kill this harness.
                        match Client::connect(&opts.socket).await {
                            Ok(c) => {
                                client = c;
                                tick.reset_immediately();
                            }
                            Err(_) => tick.reset_after(RECONNECT_EVERY),
                        }
                    }
                }
            }
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                let code = status.map(|s| s.code().unwrap_or(128)).unwrap_or(1);
                let data = serde_json::json!({ "code": code });
                log.record("command_exited", &data);
                let _ = client.ask(&Request::Event { name: "command_exited".into(), data }).await;
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
