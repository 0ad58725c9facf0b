//! Which agents exist: the specs on disk (saved by create, or declared) and the agent
//! units systemd holds. Read by the daemon and, without it, by `hivectl list`.

use std::collections::BTreeSet;

use crate::paths::Roots;
use crate::spec::AgentName;
use crate::systemd::{ActiveState, Systemd, AGENT_UNITS};

/// Whether a unit in this state makes an agent of its name even without a spec: running or
/// failed ones do; an inactive one is a destroyed agent's unit that systemd has not
/// collected yet.
pub fn unit_makes_an_agent(state: &ActiveState) -> bool {
    *state != ActiveState::Inactive
}

/// Agents with a saved or declared spec, plus any agent unit that [`unit_makes_an_agent`].
pub async fn known_agents(roots: &Roots, sd: &Systemd) -> BTreeSet<AgentName> {
    let mut names = spec_names(roots);
    match sd.list(AGENT_UNITS).await {
        Ok(units) => names.extend(
            units
                .iter()
                .filter(|u| unit_makes_an_agent(&u.active_state))
                .filter_map(|u| AgentName::from_container_unit(&u.name)),
        ),
        Err(e) => log::warn!("listing agent units: {e:#}"),
    }
    names
}

/// Names of agents that have a spec on disk (saved by create, or declared).
pub fn spec_names(roots: &Roots) -> BTreeSet<AgentName> {
    let mut names = BTreeSet::new();
    if let Ok(dir) = std::fs::read_dir(roots.agents_dir()) {
        for e in dir.flatten() {
            if let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|s| AgentName::parse(s).ok())
            {
                if roots.saved_spec(&n).exists() {
                    names.insert(n);
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(roots.config.join("agents")) {
        for e in dir.flatten() {
            let file = e.file_name();
            if let Some(n) = file
                .to_str()
                .and_then(|s| s.strip_suffix(".toml"))
                .and_then(|s| AgentName::parse(s).ok())
            {
                names.insert(n);
            }
        }
    }
    names
}
