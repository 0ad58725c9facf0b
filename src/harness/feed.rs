//! The harness's link doubles as its subscription: once it sent `subscribe`, the daemon
//! also writes pushes on it (decisions on the agent's approvals, a restart ahead, an
//! admin's message). From then on a reader task owns the connection's read side: replies
//! go to whoever asked ([`Client::ask`]), pushes to the harness loop over a bounded
//! channel. One connection per harness: the daemon counts and limits connections per
//! agent, and admins and tests read "one listener, one connection" off `ss`.

use anyhow::{bail, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::mpsc;

use super::{Client, EventLog};
use crate::socket::protocol::{Incoming, Push, Reply, Request};

/// Pushes waiting for the harness loop, which takes them at once. One that does not fit
/// closes the connection (the link reconnects and the daemon sends the decisions again)
/// rather than hold up the replies behind it.
pub const CHANNEL: usize = 64;

/// Subscribes `client` to the daemon's pushes, delivered on `pushes`. `false` when the
/// daemon predates pushes (it refuses `subscribe`): the link then carries requests only.
pub async fn subscribe(client: &mut Client, pushes: mpsc::Sender<Push>) -> Result<bool> {
    match client.ask(&Request::Subscribe {}).await? {
        Reply::Subscribed => {}
        Reply::Error { error } => {
            log::info!(
                "hive-c0re does not push ({error}); decisions reach the agent only when it asks"
            );
            return Ok(false);
        }
        other => bail!("unexpected answer to subscribe: {other:?}"),
    }
    let Some(read) = client.read.take() else {
        bail!("subscribed twice");
    };
    let (replies_tx, replies) = mpsc::channel(4);
    client.replies = Some(replies);
    client.reader = Some(tokio::spawn(reader(read, replies_tx, pushes)));
    Ok(true)
}

/// Reads the subscribed connection until it ends; ending drops the replies channel, which
/// the next [`Client::ask`] reports as the daemon having closed the socket.
async fn reader(
    mut read: BufReader<OwnedReadHalf>,
    replies: mpsc::Sender<Reply>,
    pushes: mpsc::Sender<Push>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match read.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match serde_json::from_str::<Incoming>(line.trim_end()) {
            Ok(Incoming::Push(push)) => {
                if pushes.try_send(push).is_err() {
                    log::warn!(
                        "{CHANNEL} pushes from hive-c0re not taken yet; reconnecting (the decisions are sent again)"
                    );
                    return;
                }
            }
            Ok(Incoming::Reply(reply)) => {
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                log::warn!("a line from hive-c0re that is neither a reply nor a push: {e}");
                return;
            }
        }
    }
}

/// What a push from the daemon means to the agent: it is recorded in the event log (a
/// decision once, however often it is sent), and it may wake a turn.
pub(super) fn received(log: &EventLog, push: Push) -> Option<super::turns::Wake> {
    match push {
        Push::ApprovalDecided {
            id,
            kind,
            status,
            note,
        } => {
            let data =
                serde_json::json!({ "id": id, "kind": kind, "status": status, "note": note });
            let new = log.record_once(
                "approval_decided",
                &format!("approval {id} {status}"),
                &data,
            );
            new.then(|| {
                log::info!("approval {id} is {status}");
                super::turns::Wake {
                    reason: "approval_decided".into(),
                    message: format!("approval {id} {status}"),
                    data,
                }
            })
        }
        Push::RestartPending { id, grace_secs } => {
            let data = serde_json::json!({ "id": id, "grace_secs": grace_secs });
            log::info!("approval {id}: the container restarts in {grace_secs}s");
            log.record("restart_pending", &data);
            // Not a wake: the grace is for finishing the turn under way, not for a new one.
            None
        }
        Push::Wake { reason, message } => {
            let data = serde_json::json!({ "reason": reason, "message": message });
            log.record("wake", &data);
            Some(super::turns::Wake {
                reason,
                message,
                data: serde_json::Value::Null,
            })
        }
    }
}
