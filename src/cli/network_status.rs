//! The network part of `hivectl status`: what the agent's network is, read from its spec
//! on disk (so it works while the daemon is down).

use serde::Serialize;

use crate::paths::Roots;
use crate::spec::{AgentName, Network};

#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    pub network: Network,
    /// One line: a private namespace, or what a host-network agent shares with the host.
    pub summary: String,
}

/// `None` when the spec cannot be read (no spec, or not root).
pub fn read(roots: &Roots, name: &AgentName) -> Option<NetworkStatus> {
    let spec = crate::daemon::load_spec(roots, name).ok()?;
    Some(NetworkStatus {
        network: spec.network,
        summary: crate::plan::network::describe(&spec),
    })
}

/// The `   Network:` lines of the text status.
pub fn render(st: &NetworkStatus) -> String {
    format!("   Network: {}\n", st.summary)
}
