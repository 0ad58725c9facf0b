//! `hive-c0re port-forward`, run as `hive-ports-<name>.service` (plan/ports.rs): the host
//! reaches an agent's published ports on unix sockets in its runtime dir, and each
//! connection is carried to `127.0.0.1:<port>` inside the agent's own network namespace.
//!
//! The namespace is looked up per connection (machined's leader of the agent's machine),
//! so a restarted container is reached without restarting this unit. The connect runs on
//! a thread of its own that enters the namespace (`setns` applies to the calling thread
//! only) and ends after it: the socket stays in the namespace it was made in. Nothing here
//! resolves a path the agent can change; everything the agent controls — whether it
//! accepts, how much it sends — is bounded by a timeout or the connection cap.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::plan::ports::socket_path;
use crate::spec::AgentName;
use crate::systemd::Systemd;

/// Connections carried at once, for all ports of one agent; past it new ones are closed.
const MAX_CONNECTIONS: usize = 64;
/// Bound on asking machined, and on the agent accepting a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds every port's socket, says READY=1, and carries connections until killed.
pub async fn run(agent: AgentName, machine: String, dir: PathBuf, ports: Vec<u16>) -> Result<()> {
    if ports.is_empty() {
        bail!("agent {agent}: no port to publish");
    }
    let conn = zbus::Connection::system()
        .await
        .context("connecting to the system bus (machined)")?;
    let sd = Arc::new(Systemd::reader(&conn).await?);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut listeners = Vec::new();
    for &port in &ports {
        listeners.push((port, bind(&socket_path(&dir, port))?));
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    log::info!(
        "agent {agent}: publishing {} in {}",
        ports
            .iter()
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    );
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = Vec::new();
    for (port, listener) in listeners {
        let (sd, slots, machine, agent) =
            (sd.clone(), slots.clone(), machine.clone(), agent.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    log::warn!("agent {agent}: port {port}: {MAX_CONNECTIONS} connections already; one closed");
                    continue;
                };
                let (sd, machine, agent) = (sd.clone(), machine.clone(), agent.clone());
                tokio::spawn(async move {
                    if let Err(e) = carry(&sd, &machine, port, client).await {
                        log::warn!("agent {agent}: port {port}: {e:#}");
                    }
                    drop(permit);
                });
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// A socket only root reaches, in place of whatever stale one a previous run left.
fn bind(path: &Path) -> Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} root's", path.display()))?;
    Ok(listener)
}

async fn carry(sd: &Systemd, machine: &str, port: u16, client: UnixStream) -> Result<()> {
    let inside = connect_inside(sd, machine, port).await?;
    let mut inside = tokio::net::TcpStream::from_std(inside)?;
    let mut client = client;
    tokio::io::copy_bidirectional(&mut client, &mut inside).await?;
    Ok(())
}

/// A TCP connection to `127.0.0.1:port` in the running container's network namespace.
async fn connect_inside(sd: &Systemd, machine: &str, port: u16) -> Result<std::net::TcpStream> {
    let leader = || async {
        tokio::time::timeout(CONNECT_TIMEOUT, sd.machine_leader(machine))
            .await
            .map_err(|_| anyhow!("machined did not answer within {CONNECT_TIMEOUT:?}"))?
            .and_then(|l| l.ok_or_else(|| anyhow!("its container {machine} is not running")))
    };
    let pid = leader().await?;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32)
            .ok_or_else(|| anyhow!("machined named leader PID {pid}"))?,
        rustix::process::PidfdFlags::empty(),
    )
    .with_context(|| format!("opening the leader (PID {pid}) of {machine}"))?;
    // Still the machine's leader now that it is held open: the PID was not reused for
    // another process in between.
    if leader().await? != pid {
        bail!("the leader of {machine} changed while connecting; try again");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-connect".into())
        .spawn(move || {
            let _ = tx.send(connect_in(pidfd, port));
        })
        .context("starting a thread to connect")?;
    tokio::time::timeout(CONNECT_TIMEOUT * 2, rx)
        .await
        .map_err(|_| anyhow!("connecting to 127.0.0.1:{port} in {machine}: no answer"))?
        .map_err(|_| anyhow!("connecting to 127.0.0.1:{port} in {machine}: the thread died"))?
        .with_context(|| format!("connecting to 127.0.0.1:{port} in {machine}"))
}

/// On a thread of its own, which ends after: enter the leader's network namespace and
/// connect.
fn connect_in(pidfd: OwnedFd, port: u16) -> Result<std::net::TcpStream> {
    rustix::thread::move_into_thread_name_spaces(
        pidfd.as_fd(),
        rustix::thread::ThreadNameSpaceType::NETWORK,
    )
    .context("entering the agent's network namespace")?;
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = std::net::TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}
