//! The harness's subscription: one connection of its own on which the daemon pushes what
//! concerns the agent (decisions on its approvals, a restart ahead). It runs beside the
//! request/reply link, reconnecting with backoff whenever the daemon goes away, and hands
//! each push to the harness loop over a bounded channel.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::{Backoff, Client};
use crate::socket::protocol::{self, Incoming, Push, Reply, Request};

/// Pushes waiting for the harness loop. The loop takes them at once; a daemon cannot
/// outrun it by much, and what does not fit waits in the socket.
const CHANNEL: usize = 64;

/// Starts the subscription; pushes arrive on the returned channel.
pub fn start(socket: PathBuf) -> mpsc::Receiver<Push> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            match follow(&socket, &tx, &mut backoff).await {
                Ok(()) => return, // the harness loop is gone
                Err(e) => {
                    let pause = backoff.next_pause();
                    log::debug!("subscription: {e:#}; again in {pause:?}");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    });
    rx
}

/// One subscription, until the daemon closes it (an error) or the harness loop is gone.
async fn follow(
    socket: &std::path::Path,
    tx: &mpsc::Sender<Push>,
    backoff: &mut Backoff,
) -> Result<()> {
    let mut client = Client::connect(socket).await?;
    match client.ask(&Request::Subscribe {}).await? {
        Reply::Subscribed => {}
        // A daemon that predates pushes: nothing will come; ask again now and then, it
        // may be upgraded.
        Reply::Error { error } => bail!("the daemon does not push ({error})"),
        other => bail!("unexpected answer to subscribe: {other:?}"),
    }
    *backoff = Backoff::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = client.read.read_line(&mut line).await?;
        if n == 0 {
            bail!("the daemon closed the subscription");
        }
        if line.len() > protocol::MAX_LINE {
            bail!("a push longer than {} bytes", protocol::MAX_LINE);
        }
        match serde_json::from_str::<Incoming>(line.trim_end()) {
            Ok(Incoming::Push(push)) => {
                if tx.send(push).await.is_err() {
                    return Ok(());
                }
            }
            Ok(Incoming::Reply(_)) => {}
            Err(e) => return Err(anyhow!("bad push from the daemon: {e}")),
        }
    }
}
