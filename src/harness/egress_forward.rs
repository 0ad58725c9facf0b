//! `hive-harness egress-forward`: inside a private-network container, a local TCP port
//! (127.0.0.1:3128, what HTTPS_PROXY names) forwarded byte for byte to the agent's egress
//! proxy, whose unix socket the container sees at /run/hive-egress/proxy.sock. The proxy
//! on the host does all the checking; this only carries bytes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, UnixStream};

pub async fn run(listen: String, to: PathBuf) -> Result<()> {
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    loop {
        let (mut tcp, _) = match listener.accept().await {
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
                Ok(mut proxy) => {
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut tcp,
                        &mut proxy,
                        64 << 10,
                        64 << 10,
                    )
                    .await;
                }
                Err(e) => log::warn!("egress proxy at {} unreachable: {e}", to.display()),
            }
        });
    }
}
