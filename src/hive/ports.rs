//! An agent's published ports: `hive-ports-<name>.service` on the host (plan/ports.rs,
//! src/ports.rs), brought up with the agent, replaced when its list changes, stopped with it.

use anyhow::{Context, Result};

use super::driver::UnitDriver;
use super::mode::Mode;
use crate::plan::ports::{ports_unit, ports_unit_name};
use crate::spec::{AgentName, AgentSpec};

impl UnitDriver {
    /// The spec's ports published, or the unit gone when it publishes none.
    pub(super) async fn ensure_ports(&self, spec: &AgentSpec) -> Result<()> {
        let name = &spec.name;
        match ports_unit(spec, &self.host) {
            None => self.stop_ports(name).await,
            Some(unit) => Self::ensure_running(&self.sd, &unit, Mode::Create)
                .await
                .map(|_| ())
                .with_context(|| format!("agent {name}: publishing its ports ({})", unit.unit)),
        }
    }

    pub(super) async fn stop_ports(&self, name: &AgentName) -> Result<()> {
        let unit = ports_unit_name(name);
        // Most agents publish no ports: a unit systemd has not loaded needs nothing, and
        // looking costs less than a stop and a reset, each of which has systemd search
        // its unit directories for the name.
        if self.sd.active_state(&unit).await?.is_none() {
            return Ok(());
        }
        self.sd.stop(&unit).await?;
        self.sd.reset_failed(&unit).await
    }
}
