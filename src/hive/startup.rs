//! What the daemon does before it says READY=1: learn every agent systemd runs or a spec
//! names, reopen their doors, and clear what a destroyed agent left in the runtime root.

use std::collections::BTreeSet;

use super::driver::UnitDriver;
use super::files::remove_orphan_runtime_dirs;
use super::sd_notify::warn_low_limits;
use crate::inventory::known_agents;
use crate::spec::AgentName;

impl UnitDriver {
    /// Agents keep running across daemon restarts: the daemon must know every one of them
    /// (and serve their sockets) before it says it is up. Returns them, for the adapters
    /// to show.
    pub async fn rediscover(&self) -> BTreeSet<AgentName> {
        warn_low_limits();
        let roots = &self.host.roots;
        let known = known_agents(roots, &self.sd).await;
        remove_orphan_runtime_dirs(roots, &known);
        for name in &known {
            // Idempotent: harnesses reconnect on their own.
            if let Err(e) = self.doors.open(name, &roots.runtime_dir(name)) {
                log::error!("{e:#}");
            }
        }
        known
    }
}
