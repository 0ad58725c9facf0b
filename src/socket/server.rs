//! One listener per agent. Registering is idempotent (seed gotcha "register_agent"):
//! registering again aborts the previous listener and its connections, removes the old
//! socket file and binds anew, so after any sequence of restarts and rebuilds there is
//! exactly one socket and one listener per agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::Receiver;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::answers;
use super::protocol::{self, Push, Reply, Request, MAX_LINE};
use super::push::Pushes;
use super::throttle::{self, Throttle};
use super::SOCKET_NAME;
use crate::hive::agent_side::{Notice, WhoAmI};
use crate::journal::{self, fields, Event};
use crate::spec::AgentName;
use crate::store::Approval;

/// Connections one agent may hold at once; more are refused, so a flood from one agent
/// cannot exhaust the daemon's file descriptors.
const MAX_CONNECTIONS: usize = 16;
/// Malformed messages tolerated on one connection before it is closed.
const MAX_ERRORS: u32 = 16;
/// How long writing one push to a subscribed connection may take: an agent that does not
/// read its socket fills it, and then its connection is closed rather than waited on.
const PUSH_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the socket server needs from the rest of the daemon.
pub trait Handler: Send + Sync + 'static {
    /// An approval request from `agent`; returns the new approval's id.
    fn request_approval(
        &self,
        agent: &AgentName,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<i64, String>;

    /// The agent's own approvals (`my_approvals`), newest last.
    fn my_approvals(&self, agent: &AgentName) -> Result<Vec<Approval>, String>;

    /// One of the agent's own approvals (`approval_status`).
    fn approval_status(&self, agent: &AgentName, id: i64) -> Result<Approval, String>;

    /// What the agent is (`whoami`).
    fn whoami(&self, agent: &AgentName) -> Result<WhoAmI, String>;

    /// The agent's recent decisions, oldest first, sent on every `subscribe`.
    fn recent_decisions(&self, agent: &AgentName) -> Vec<Notice>;
}

struct Listener {
    path: PathBuf,
    /// The accept loop and every connection task: aborting the set drops them all.
    tasks: JoinSet<()>,
}

pub struct Sockets {
    listeners: Mutex<HashMap<AgentName, Listener>>,
    handler: Arc<dyn Handler>,
    /// Subscribed connections, for the daemon to push to (decisions, restarts ahead).
    pub pushes: Arc<Pushes>,
}

impl Sockets {
    pub fn new(handler: Arc<dyn Handler>) -> Self {
        Self {
            listeners: Mutex::new(HashMap::new()),
            handler,
            pushes: Arc::new(Pushes::default()),
        }
    }

    /// Binds `<dir>/hive.sock` for `name`, replacing any previous listener and socket file.
    pub fn register(&self, name: &AgentName, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(SOCKET_NAME);
        let mut listeners = self.listeners.lock().expect("sockets lock");
        if let Some(mut old) = listeners.remove(name) {
            old.tasks.abort_all();
        }
        // The agent sees this directory (read-only, at /run/hyperhive); nothing in it is
        // resolved by path: a symlink there never redirects the unlink or the bind, and
        // the socket is not chmod-ed after binding (the 0700 directory keeps other host
        // users out).
        if let Some(run_root) = dir.parent() {
            std::fs::create_dir_all(run_root)
                .with_context(|| format!("agent {name}: creating {}", run_root.display()))?;
        }
        let dir_fd = crate::safe_fs::private_dir(dir).with_context(|| format!("agent {name}"))?;
        crate::safe_fs::remove_file_in(&dir_fd, SOCKET_NAME, &path)
            .with_context(|| format!("agent {name}: removing the stale socket"))?;
        // Bound by its real path, so `ss -xl` and admins see it: the final component is
        // never followed by bind(), and no component above it is the agent's to change;
        // the check after makes sure the directory is still the one prepared above.
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("agent {name}: binding {}", path.display()))?;
        crate::safe_fs::same_dir(&dir_fd, dir).with_context(|| format!("agent {name}"))?;

        let mut tasks = JoinSet::new();
        let agent = name.clone();
        let handler = self.handler.clone();
        tasks.spawn(accept_loop(listener, agent, handler, self.pushes.clone()));
        listeners.insert(
            name.clone(),
            Listener {
                path: path.clone(),
                tasks,
            },
        );
        Ok(path)
    }

    /// Stops serving `name` and removes its socket file.
    pub fn unregister(&self, name: &AgentName) {
        self.pushes.forget(name);
        if let Some(mut old) = self.listeners.lock().expect("sockets lock").remove(name) {
            old.tasks.abort_all();
            if let Some(dir) = old.path.parent() {
                if let Ok(fd) = crate::safe_fs::open_dir(dir) {
                    let _ = crate::safe_fs::remove_file_in(&fd, SOCKET_NAME, &old.path);
                }
            }
        }
    }

    pub fn registered(&self) -> Vec<AgentName> {
        let mut names: Vec<_> = self
            .listeners
            .lock()
            .expect("sockets lock")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }
}

async fn accept_loop(
    listener: UnixListener,
    agent: AgentName,
    handler: Arc<dyn Handler>,
    pushes: Arc<Pushes>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Shared by the agent's connections: more connections buy no more throughput.
    let throttle = Arc::new(Throttle::default());
    let mut conns = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("agent {agent}: accepting on its socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let agent = agent.clone();
                let handler = handler.clone();
                let throttle = throttle.clone();
                let pushes = pushes.clone();
                conns.spawn(async move {
                    let served = serve(stream, &agent, handler.as_ref(), &throttle, &pushes);
                    if let Err(e) = served.await {
                        log::debug!("agent {agent}: connection ended: {e}");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                let mut stream = stream;
                let msg = format!("too many connections (at most {MAX_CONNECTIONS})");
                let _ = stream
                    .write_all(&protocol::encode(&Reply::Error { error: msg }))
                    .await;
            }
        }
    }
}

/// Serves one connection until it closes or misbehaves. Nothing here can panic on input.
async fn serve(
    stream: UnixStream,
    agent: &AgentName,
    handler: &dyn Handler,
    throttle: &Throttle,
    pushes: &Pushes,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(1024);
    let mut greeted = false;
    let mut errors = 0u32;
    // Set once the connection subscribed: pushes for it arrive here.
    let mut feed: Option<Receiver<Push>> = None;
    loop {
        line.clear();
        let Some(n) = read_line(&mut reader, &mut line, &mut feed, &mut write, agent).await? else {
            return Ok(());
        };
        if n == 0 && line.is_empty() {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            return refuse_unframed(&mut write, &line).await;
        }
        line.pop();
        let reply = match protocol::parse_request(&line) {
            Err(error) => {
                errors += 1;
                Reply::Error { error }
            }
            Ok(Request::Hello { version }) => {
                greeted = true;
                welcome(agent, version)
            }
            Ok(_) if !greeted => {
                errors += 1;
                Reply::Error {
                    error: "say hello first".into(),
                }
            }
            Ok(Request::Subscribe {}) if feed.is_none() => {
                slow_down(agent, throttle, throttle::Kind::Request).await;
                feed = Some(subscribe(&mut write, agent, handler, pushes).await?);
                continue;
            }
            Ok(request) => answer(request, agent, handler, throttle).await,
        };
        write.write_all(&protocol::encode(&reply)).await?;
        if errors >= MAX_ERRORS {
            let error = format!("{MAX_ERRORS} malformed messages; closing");
            write
                .write_all(&protocol::encode(&Reply::Error { error }))
                .await?;
            return Ok(());
        }
    }
}

/// Reads one line into `line`, or writes the pushes that arrive meanwhile (once
/// subscribed). `read_until` keeps what it read in `line` when a push wins the race, so
/// the line's limit counts what is already there. `None`: the daemon dropped the feed (it
/// did not keep up), and the connection is closed.
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    feed: &mut Option<Receiver<Push>>,
    write: &mut OwnedWriteHalf,
    agent: &AgentName,
) -> Result<Option<usize>> {
    loop {
        let read = async {
            let room = (MAX_LINE - line.len().min(MAX_LINE)) as u64;
            (&mut *reader).take(room).read_until(b'\n', line).await
        };
        tokio::select! {
            n = read => return Ok(Some(n?)),
            push = async { feed.as_mut().expect("guarded").recv().await }, if feed.is_some() => {
                let Some(push) = push else {
                    return Ok(None);
                };
                write_push(write, agent, &push).await?;
            }
        }
    }
}

/// A line without its newline: too long, or cut by the end of the stream. Says which;
/// the connection is then closed.
async fn refuse_unframed(write: &mut OwnedWriteHalf, line: &[u8]) -> Result<()> {
    let error = if line.len() >= MAX_LINE {
        format!("message longer than {MAX_LINE} bytes; closing")
    } else {
        "incomplete message at end of stream".to_string()
    };
    write
        .write_all(&protocol::encode(&Reply::Error { error }))
        .await?;
    Ok(())
}

fn welcome(agent: &AgentName, version: u32) -> Reply {
    if version != protocol::VERSION {
        log::info!(
            "agent {agent}: harness speaks protocol {version}, daemon {}",
            protocol::VERSION
        );
    }
    Reply::Welcome {
        agent: agent.to_string(),
        version: protocol::VERSION,
    }
}

/// Subscribes the connection to the agent's pushes and replays its recent decisions.
/// Subscribed before reading the replay, so no decision falls in between (one may then
/// come twice; the harness keeps each once); what came during the replay goes out next,
/// in order.
async fn subscribe(
    write: &mut OwnedWriteHalf,
    agent: &AgentName,
    handler: &dyn Handler,
    pushes: &Pushes,
) -> Result<Receiver<Push>> {
    let mut rx = pushes.subscribe(agent);
    write
        .write_all(&protocol::encode(&Reply::Subscribed))
        .await?;
    for notice in handler.recent_decisions(agent) {
        write_push(write, agent, &answers::push(&notice)).await?;
    }
    while let Ok(push) = rx.try_recv() {
        write_push(write, agent, &push).await?;
    }
    Ok(rx)
}

/// The reply to a request of a greeted connection (a first `subscribe` aside).
async fn answer(
    request: Request,
    agent: &AgentName,
    handler: &dyn Handler,
    throttle: &Throttle,
) -> Reply {
    match request {
        Request::Hello { version } => welcome(agent, version),
        Request::Ping {} => Reply::Pong,
        Request::Event { name, data } => {
            slow_down(agent, throttle, throttle::Kind::Event).await;
            journal_event(agent, &name, data.to_string())
        }
        Request::RequestApproval { kind, payload } => {
            slow_down(agent, throttle, throttle::Kind::Request).await;
            match handler.request_approval(agent, &kind, &payload) {
                Ok(id) => Reply::ApprovalPending { id },
                Err(error) => Reply::Error { error },
            }
        }
        // Queries read the store and the spec: rate-limited like requests, so asking
        // in a loop costs the agent, not the daemon.
        Request::MyApprovals {} => {
            slow_down(agent, throttle, throttle::Kind::Request).await;
            data_reply(
                handler
                    .my_approvals(agent)
                    .map(|all| answers::approvals(&all)),
            )
        }
        Request::ApprovalStatus { id } => {
            slow_down(agent, throttle, throttle::Kind::Request).await;
            data_reply(
                handler
                    .approval_status(agent, id)
                    .map(|a| answers::approval(&a)),
            )
        }
        Request::Whoami {} => {
            slow_down(agent, throttle, throttle::Kind::Request).await;
            data_reply(handler.whoami(agent).map(|w| answers::whoami(&w)))
        }
        // Subscribed already: the feed is there.
        Request::Subscribe {} => Reply::Subscribed,
    }
}

/// An agent's event, journaled: a turn as its own entry, a budget spent as a warning,
/// anything else as an `agent_event`.
fn journal_event(agent: &AgentName, name: &str, data: String) -> Reply {
    if data.len() > protocol::MAX_EVENT_DATA {
        return Reply::Error {
            error: format!(
                "event {name}: data of {} bytes, at most {}",
                data.len(),
                protocol::MAX_EVENT_DATA
            ),
        };
    }
    if let Some(turn) = super::turn_entry::of(name, &data) {
        journal::emit(
            Event::AgentTurn,
            Some(agent),
            None,
            &turn.fields(name, data),
            &turn.message(agent),
        );
    } else if name == "over_budget" {
        let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
        let usd = |k: &str| v[k].as_f64().filter(|x| x.is_finite()).unwrap_or(0.0);
        journal::emit(
            Event::AgentOverBudget,
            Some(agent),
            None,
            &[(fields::DATA, data.clone())],
            &format!(
                "agent {agent}: spent ${:.4} of its ${:.4} daily budget; its wakes wait for the next day (UTC) or a raised budget",
                usd("spent_usd"),
                usd("budget_usd")
            ),
        );
    } else {
        journal::emit(
            Event::AgentEvent,
            Some(agent),
            None,
            &[(fields::AGENT_EVENT, name.to_owned()), (fields::DATA, data)],
            &format!("agent {agent}: {name}"),
        );
    }
    Reply::Ok
}

/// Writes one push, giving up (and so closing the connection) if the agent does not take
/// it within [`PUSH_WRITE_TIMEOUT`].
async fn write_push(write: &mut OwnedWriteHalf, agent: &AgentName, push: &Push) -> Result<()> {
    tokio::time::timeout(PUSH_WRITE_TIMEOUT, write.write_all(&protocol::encode(push)))
        .await
        .map_err(|_| {
            anyhow::anyhow!("agent {agent}: a push not read within {PUSH_WRITE_TIMEOUT:?}")
        })??;
    Ok(())
}

fn data_reply(r: Result<serde_json::Value, String>) -> Reply {
    match r {
        Ok(data) => Reply::Data { data },
        Err(error) => Reply::Error { error },
    }
}

/// Waits until the agent's rate allows one more message of `kind`; journals, once, that
/// the agent is throttled. Nothing more is read from this connection meanwhile.
async fn slow_down(agent: &AgentName, throttle: &Throttle, kind: throttle::Kind) {
    let (wait, announce) = throttle.take(kind, std::time::Instant::now());
    if announce {
        let rate = throttle.rate(kind);
        let what = match kind {
            throttle::Kind::Event => "events",
            throttle::Kind::Request => "approval requests",
        };
        journal::emit(
            Event::AgentThrottled,
            Some(agent),
            None,
            &[(
                fields::LIMIT,
                format!("{} {what}/s, bursts of {}", rate.per_sec, rate.burst),
            )],
            &format!(
                "agent {agent}: throttled: more than {} {what} a second (bursts of {}); \
                 its socket is read more slowly",
                rate.per_sec, rate.burst
            ),
        );
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}
