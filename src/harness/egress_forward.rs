//! `hive-harness egress-forward`: inside a private-network container, the local TCP port
//! HTTPS_PROXY names (127.0.0.1:3128, on which the container's systemd listens and starts
//! this at the first connection) forwarded byte for byte to the agent's egress proxy,
//! whose unix socket the container sees at /run/hive-egress/proxy.sock. The proxy on the
//! host does all the checking; this only carries bytes.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use tokio::net::{TcpListener, UnixStream};

use crate::egress::splice::{tunnel, Socket};
use std::sync::atomic::AtomicU64;

pub async fn run(to: PathBuf) -> Result<()> {
    // The process is still single-threaded here: the crate reads and clears the environment.
    let listener = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context("the socket from systemd")?
        .ok_or_else(|| {
            anyhow!("no socket from systemd (LISTEN_FDS): it runs as hive-egress.service, started by hive-egress.socket")
        })?;
    listener
        .set_nonblocking(true)
        .context("the socket from systemd")?;
    let listener = TcpListener::from_std(listener).context("the socket from systemd")?;
    // Each tunnel holds two sockets and two pipes: take the whole hard limit of open files
    // rather than the 1024 a unit gets by default (the proxy on the host bounds connections).
    let mut nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if nofile.current < nofile.maximum {
        nofile.current = nofile.maximum;
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, nofile);
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let to = to.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match UnixStream::connect(&to).await {
                Ok(proxy) => {
                    // Spliced, never copied through this process (egress::splice).
                    let (a, b) = (Socket::Tcp(tcp), Socket::Unix(proxy));
                    let (x, y) = (AtomicU64::new(0), AtomicU64::new(0));
                    let _ = tunnel(&a, &b, &x, &y).await;
                }
                Err(e) => log::warn!("egress proxy at {} unreachable: {e}", to.display()),
            }
        });
    }
}
