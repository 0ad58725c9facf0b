//! Bringing one planned unit up, whatever systemd holds under its name now: adopt a
//! matching running unit, clear a failed or leftover one (and a machine a crash left
//! registered), retry while systemd garbage-collects. The same rules serve the container
//! on the host, its side units, and the harness inside the container. A leaf: every
//! component that ensures a unit names it without naming the others.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::Serialize;

use super::mode::Mode;
use crate::failpoint;
use crate::plan::UnitPlan;
use crate::systemd::{anyhow_error_name, ActiveState, Systemd, UNIT_EXISTS};

/// How many times to look again while systemd garbage-collects a unit we just stopped or
/// reset. Each look is a D-Bus round trip plus a short pause; the whole wait is bounded.
const SETTLE_ATTEMPTS: u32 = 100;
const SETTLE_PAUSE: Duration = Duration::from_millis(20);

/// Agents brought up at once. Each holds a start job or two and a few calls in flight:
/// far below systemd's limits (128 replies in flight per connection, ~512 pending jobs),
/// and enough to keep two cores busy booting containers.
pub const PARALLEL: usize = 8;

/// What `ensure_running` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::EnumString)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Outcome {
    /// A new unit was created.
    Created,
    /// A matching unit was already up and was kept (same InvocationID).
    Adopted,
    /// A unit was up with other properties (or a rebuild was asked) and was replaced.
    Replaced,
    /// A system agent's running container was switched to its new system in place
    /// (same InvocationID).
    Switched,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What `create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The agent already had this very spec and was up: nothing was touched.
    Unchanged,
    /// Units were created, adopted (no spec before) or replaced.
    Done(Outcome),
}

impl Created {
    /// The word on the wire (the API's CreateAgent, ReplaceAgent).
    pub fn as_str(self) -> &'static str {
        match self {
            Created::Unchanged => "unchanged",
            Created::Done(o) => o.as_str(),
        }
    }

    /// The client's reading of [`Self::as_str`]; `None` for a word this build does not
    /// know (a newer daemon's).
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "unchanged" => Some(Created::Unchanged),
            other => other.parse().ok().map(Created::Done),
        }
    }
}

/// Waits (bounded) until systemd has garbage-collected a stopped transient unit, so that
/// once destroy returns `systemctl status` says the unit is gone.
pub(super) async fn wait_unloaded(sd: &Systemd, unit: &str) -> Result<()> {
    for _ in 0..SETTLE_ATTEMPTS {
        match sd.status(unit).await? {
            None => return Ok(()),
            Some(st) if st.load_state.is_not_found() => return Ok(()),
            Some(st) if st.is_up() || st.is_failed() => {
                return Err(anyhow!(
                    "unit {unit} is {} again after stopping it",
                    st.active_state
                ))
            }
            Some(_) => tokio::time::sleep(SETTLE_PAUSE).await,
        }
    }
    Err(anyhow!("unit {unit} stopped but systemd did not unload it"))
}

/// Brings the planned unit up, whatever systemd holds now: adopts a matching running
/// unit, clears failed or leftover ones (and a machine a crash left registered), and
/// retries while systemd garbage-collects. Branches on D-Bus error names only.
pub(super) async fn ensure_running(sd: &Systemd, plan: &UnitPlan, mode: Mode) -> Result<Outcome> {
    let unit = &plan.unit;
    let mut replaced = false;
    for _ in 0..SETTLE_ATTEMPTS {
        let status = sd.status(unit).await?;
        match status {
            Some(st) if st.is_up() => {
                let replace = !replaced
                    && match mode {
                        // A unit without our HIVE_PLAN stamp is not ours, whatever
                        // its name: never adopt it.
                        Mode::Start => st.plan_hash().is_none(),
                        Mode::Rebuild => true,
                        Mode::Create => st.plan_hash() != Some(plan.hash.as_str()),
                    };
                if !replace {
                    return Ok(if replaced {
                        Outcome::Replaced
                    } else {
                        Outcome::Adopted
                    });
                }
                sd.stop(unit).await?;
                if mode == Mode::Rebuild && plan.machine.is_some() {
                    failpoint::hit("rebuild:container-stopped");
                }
                replaced = true;
                continue;
            }
            Some(st) if st.is_failed() => {
                sd.reset_failed(unit).await?;
                continue;
            }
            Some(st) if st.active_state == ActiveState::Deactivating => {
                sd.stop(unit).await?;
                continue;
            }
            _ => {}
        }
        // Not loaded, or inactive and about to be collected: try to create it.
        if let Some(machine) = &plan.machine {
            if sd.machine_registered(machine).await? {
                sd.unregister_machine(machine).await?;
            }
        }
        match sd.start_transient(plan).await {
            Ok(()) => {
                return Ok(if replaced {
                    Outcome::Replaced
                } else {
                    Outcome::Created
                })
            }
            // The unit itself being collected, or an auxiliary unit held under its name
            // (a socket's service still running or failed): cleared only then, so that a
            // plain create costs no look at the auxiliary units.
            Err(e) if anyhow_error_name(&e).as_deref() == Some(UNIT_EXISTS) => {
                clear_aux(sd, plan).await?;
                tokio::time::sleep(SETTLE_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(anyhow!(
        "unit {unit} did not settle: systemd kept reporting it exists after {SETTLE_ATTEMPTS} attempts"
    ))
}

/// Stops and resets what systemd holds under the names of the plan's auxiliary units (a
/// socket's service still running, or failed), so that they can be created anew with it.
async fn clear_aux(sd: &Systemd, plan: &UnitPlan) -> Result<()> {
    for aux in &plan.aux {
        match sd.status(&aux.unit).await? {
            Some(st) if st.is_up() || st.active_state == ActiveState::Deactivating => {
                sd.stop(&aux.unit).await?;
                sd.reset_failed(&aux.unit).await?;
            }
            Some(st) if st.is_failed() => sd.reset_failed(&aux.unit).await?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_outcome_reads_back_as_it_was_sent() {
        for c in [
            Created::Unchanged,
            Created::Done(Outcome::Created),
            Created::Done(Outcome::Adopted),
            Created::Done(Outcome::Replaced),
            Created::Done(Outcome::Switched),
        ] {
            assert_eq!(Created::parse(c.as_str()), Some(c));
        }
        assert_eq!(Created::parse("frobnicated"), None);
    }
}
