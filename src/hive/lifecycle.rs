//! The agent lifecycle verbs: create, start, stop, restart, rebuild, destroy. Each loads
//! or validates the spec, plans the unit and asks systemd, under the agent's lock so two
//! verbs on one agent never interleave; each says what it did in one journal entry and
//! publishes the change for the adapters.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::agent_side::{Notice, TELL_NEW_SESSION};
use super::approvals::Approvals;
use super::changes::{Change, Changes};
use super::driver::UnitDriver;
use super::ensure::{wait_unloaded, Created, Outcome};
use super::files::{mark_stopped, prepare_dirs, remove_if_present, write_atomic};
use super::locks::AgentLocks;
use super::mode::Mode;
use super::specs::load_spec;
use super::{preflight, Error};
use crate::failpoint;
use crate::journal::{self, fields, Event};
use crate::plan;
use crate::spec::{AgentName, AgentSpec, SpecFile};

/// The lifecycle verbs, on the unit driver, under the agents' locks.
pub(super) struct Lifecycle {
    changes: Changes,
    approvals: Arc<Approvals>,
    locks: Arc<AgentLocks>,
    driver: Arc<UnitDriver>,
}

impl Lifecycle {
    pub(super) fn new(
        driver: Arc<UnitDriver>,
        locks: Arc<AgentLocks>,
        approvals: Arc<Approvals>,
        changes: Changes,
    ) -> Self {
        Self {
            changes,
            approvals,
            locks,
            driver,
        }
    }

    /// Creates an agent, never clobbering one: an agent that already has this very spec is
    /// left as it is (started if it is down) and `Unchanged` is returned; one with another
    /// spec is refused with the differences, field by field, unless `replace` — so nothing
    /// an approval applied is dropped without the admin asking for exactly that.
    pub async fn create(
        &self,
        name: &AgentName,
        spec_toml: &str,
        replace: bool,
    ) -> Result<Created, Error> {
        let created = self.create_agent(name, spec_toml, replace).await?;
        self.changes.publish(Change::AgentAdded(name.clone()));
        Ok(created)
    }

    async fn create_agent(
        &self,
        name: &AgentName,
        spec_toml: &str,
        replace: bool,
    ) -> Result<Created, Error> {
        let file = SpecFile::from_toml(spec_toml, &format!("spec for agent {name}"))?;
        let spec = AgentSpec::validate(name, &file)?;
        preflight::check(&spec, &self.driver.host).map_err(Error::InvalidArgument)?;

        let _guard = self.locks.lock(name).await;
        let existing = match load_spec(&self.driver.host.roots, name) {
            Ok(old) => Some(Ok(old)),
            Err(Error::NoSuchAgent(_)) => None,
            Err(e) => Some(Err(e)),
        };
        match existing {
            Some(Ok(old)) if old == spec => {
                // Nothing to change: keep whatever runs (same InvocationID), start it if
                // it is down.
                let outcome = self
                    .start_locked(&spec, " (create, spec unchanged)")
                    .await?;
                return Ok(if outcome == Outcome::Adopted {
                    Created::Unchanged
                } else {
                    Created::Done(outcome)
                });
            }
            Some(Ok(old)) if !replace => {
                return Err(Error::InvalidArgument(format!(
                    "agent {name} exists with another spec ({}); nothing changed. To apply this \
                     spec use `hivectl create {name} --replace …`, or edit {} and run `hivectl rebuild {name}`",
                    crate::spec::differences(&old, &spec).join("; "),
                    self.spec_origin(name).display(),
                )))
            }
            Some(Err(e)) if !replace => {
                return Err(Error::InvalidArgument(format!(
                    "agent {name} exists but its spec cannot be read ({e}); nothing changed. \
                     `hivectl create {name} --replace …` writes a new one"
                )))
            }
            _ => {}
        }
        prepare_dirs(&self.driver.host, &spec).map_err(Error::failed)?;
        let saved = self.driver.host.roots.saved_spec(name);
        write_atomic(&saved, spec.to_file().to_toml().as_bytes())
            .with_context(|| format!("agent {name}: saving spec {}", saved.display()))
            .map_err(Error::failed)?;
        failpoint::hit("create:spec-saved");

        let plan = self.driver.container_plan(&spec);
        let outcome = self
            .driver
            .bring_up(&spec, &plan, Mode::Create, None)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        failpoint::hit("create:container-up");
        let event = if outcome == Outcome::Adopted {
            Event::Adopted
        } else {
            Event::AgentCreated
        };
        journal::emit(
            event,
            Some(name),
            Some(&plan.unit),
            &[
                (fields::OUTCOME, outcome.as_str().into()),
                (fields::PLAN, plan.hash.clone()),
            ],
            &format!("agent {name}: {} {}", outcome.as_str(), plan.unit),
        );
        Ok(Created::Done(outcome))
    }

    pub async fn start(&self, name: &AgentName) -> Result<Outcome, Error> {
        let outcome = self.start_agent(name).await?;
        self.changes.publish(Change::AgentAdded(name.clone()));
        Ok(outcome)
    }

    async fn start_agent(&self, name: &AgentName) -> Result<Outcome, Error> {
        let spec = load_spec(&self.driver.host.roots, name)?;
        preflight::check(&spec, &self.driver.host).map_err(Error::InvalidArgument)?;
        let _guard = self.locks.lock(name).await;
        self.start_locked(&spec, "").await
    }

    /// Brings the agent up from `spec` keeping whatever already runs it, with its lock
    /// held; journals `agent_started` (with `why` after the unit) unless it was running.
    async fn start_locked(&self, spec: &AgentSpec, why: &str) -> Result<Outcome, Error> {
        let name = &spec.name;
        prepare_dirs(&self.driver.host, spec).map_err(Error::failed)?;
        let plan = self.driver.container_plan(spec);
        let outcome = self
            .driver
            .bring_up(spec, &plan, Mode::Start, None)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        if outcome != Outcome::Adopted {
            journal::emit(
                Event::AgentStarted,
                Some(name),
                Some(&plan.unit),
                &[],
                &format!("agent {name}: started {}{why}", plan.unit),
            );
        }
        Ok(outcome)
    }

    pub async fn stop(&self, name: &AgentName) -> Result<(), Error> {
        self.require_known(name).await?;
        let _guard = self.locks.lock(name).await;
        let unit = name.container_unit();
        // Before stopping: a daemon killed in between must not bring the agent back.
        mark_stopped(&self.driver.host.roots, name, true).map_err(Error::failed)?;
        self.driver.harness.stop_harness_watch(name);
        self.driver
            .sd
            .stop(&unit)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        self.driver
            .stop_egress(name)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        self.driver
            .stop_ports(name)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        journal::emit(
            Event::AgentStopped,
            Some(name),
            Some(&unit),
            &[],
            &format!("agent {name}: stopped {unit}"),
        );
        self.changes.publish(Change::AgentChanged(name.clone()));
        Ok(())
    }

    /// Restarts the running unit as it is; an agent that is not up is started from its spec.
    pub async fn restart(&self, name: &AgentName) -> Result<(), Error> {
        let unit = name.container_unit();
        let up = self
            .driver
            .sd
            .status(&unit)
            .await
            .map_err(Error::failed)?
            .is_some_and(|s| s.is_up());
        if !up {
            return self.start_agent(name).await.map(|_| {
                self.changes.publish(Change::AgentChanged(name.clone()));
            });
        }
        let spec = load_spec(&self.driver.host.roots, name)?;
        let _guard = self.locks.lock(name).await;
        self.driver
            .sd
            .restart(&unit)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        // The harness unit lived in the old container; the new one needs its own.
        self.driver
            .harness
            .ensure_harness(&spec, Mode::Start, None)
            .await
            .with_context(|| format!("agent {name}"))
            .map_err(Error::failed)?;
        journal::emit(
            Event::AgentStarted,
            Some(name),
            Some(&unit),
            &[],
            &format!("agent {name}: restarted {unit}"),
        );
        self.changes.publish(Change::AgentChanged(name.clone()));
        Ok(())
    }

    /// Replaces the agent's units with ones planned from its current spec.
    pub async fn rebuild(&self, name: &AgentName) -> Result<Outcome, Error> {
        let spec = load_spec(&self.driver.host.roots, name)?;
        preflight::check(&spec, &self.driver.host).map_err(Error::InvalidArgument)?;
        let _guard = self.locks.lock(name).await;
        let outcome = self
            .rebuild_locked(&spec, None)
            .await
            .map_err(Error::failed)?;
        self.changes.publish(Change::AgentAdded(name.clone()));
        Ok(outcome)
    }

    /// Rebuilds from `spec` with the agent's lock held; `approval` stamps the new units
    /// and the events with the approval that asked for it.
    pub(super) async fn rebuild_locked(
        &self,
        spec: &AgentSpec,
        approval: Option<i64>,
    ) -> Result<Outcome> {
        let name = &spec.name;
        prepare_dirs(&self.driver.host, spec)?;
        let mut plan = self.driver.container_plan(spec);
        let mut fields = vec![];
        if let Some(id) = approval {
            plan::stamp_approval(&mut plan, id);
            fields.push((fields::APPROVAL_ID, id.to_string()));
        }
        journal::emit(
            Event::RebuildStarted,
            Some(name),
            Some(&plan.unit),
            &fields,
            &format!("agent {name}: rebuilding {}", plan.unit),
        );
        let outcome = self
            .driver
            .bring_up(spec, &plan, Mode::Rebuild, approval)
            .await
            .with_context(|| format!("agent {name}: rebuilding"))?;
        failpoint::hit("rebuild:container-up");
        fields.push((fields::OUTCOME, outcome.as_str().into()));
        fields.push((fields::PLAN, plan.hash.clone()));
        journal::emit(
            Event::RebuildFinished,
            Some(name),
            Some(&plan.unit),
            &fields,
            &format!("agent {name}: rebuilt {}", plan.unit),
        );
        Ok(outcome)
    }

    /// Stops and forgets the agent. Its state and credentials stay unless `purge`.
    pub async fn destroy(&self, name: &AgentName, purge: bool) -> Result<(), Error> {
        // An agent destroyed earlier keeps its state and credentials; purging them later
        // must still be possible, though the agent itself is gone.
        let leftovers = purge && self.driver.host.roots.agent_dir(name).is_dir();
        if let Err(e) = self.require_known(name).await {
            if !leftovers {
                return Err(e);
            }
        }
        let _guard = self.locks.lock(name).await;
        let unit = name.container_unit();
        let roots = &self.driver.host.roots;
        let ctx = |what: &str| format!("agent {name}: {what}");
        self.driver
            .sd
            .stop(&unit)
            .await
            .with_context(|| ctx("stopping"))
            .map_err(Error::failed)?;
        failpoint::hit("destroy:stopped");
        self.driver
            .sd
            .reset_failed(&unit)
            .await
            .map_err(Error::failed)?;
        self.driver
            .sd
            .unregister_machine(&name.machine())
            .await
            .map_err(Error::failed)?;
        wait_unloaded(&self.driver.sd, &unit)
            .await
            .map_err(Error::failed)?;
        self.driver
            .stop_egress(name)
            .await
            .with_context(|| ctx("stopping its egress proxy"))
            .map_err(Error::failed)?;
        self.driver
            .stop_ports(name)
            .await
            .with_context(|| ctx("stopping its published ports"))
            .map_err(Error::failed)?;
        // The image stays (only --purge deletes it, below); unmounted, so the tree can go.
        self.driver
            .unmount_disk(name)
            .await
            .with_context(|| ctx("unmounting its disk image"))
            .map_err(Error::failed)?;
        self.driver.doors.close(name);
        self.driver.harness.stop_harness_watch(name);
        // With its socket gone the agent cannot ask again; what it asked is failed before
        // its spec goes, so a later agent of this name never inherits it.
        self.approvals.agent_destroyed(name);
        remove_if_present(&roots.saved_spec(name)).map_err(Error::failed)?;
        failpoint::hit("destroy:spec-removed");
        // The runtime dir only holds the socket; RuntimeDirectoryPreserve=yes keeps it
        // after the unit is gone, so it is ours to remove.
        crate::safe_fs::remove_tree(&roots.runtime_dir(name))
            .with_context(|| ctx("removing its runtime dir"))
            .map_err(Error::failed)?;
        self.driver
            .remove_egress_dir(name)
            .with_context(|| ctx("removing its egress dir"))
            .map_err(Error::failed)?;
        mark_stopped(roots, name, false).map_err(Error::failed)?;
        if purge {
            // The agent wrote this tree: never follow its symlinks, and say exactly what
            // could not be removed (chattr +i, say) rather than stop at the first entry.
            crate::safe_fs::remove_tree(&roots.agent_dir(name))
                .with_context(|| ctx("purging"))
                .map_err(Error::failed)?;
            super::nixos_system::remove_gc_root(name).map_err(Error::failed)?;
            self.driver
                .unlink_journal(name)
                .with_context(|| ctx("removing the link to its journal"))
                .map_err(Error::failed)?;
        }
        journal::emit(
            Event::AgentDestroyed,
            Some(name),
            Some(&unit),
            &[(fields::PURGE, purge.to_string())],
            &format!(
                "agent {name}: destroyed{}",
                if purge { " and purged" } else { "" }
            ),
        );
        self.changes.publish(Change::AgentRemoved(name.clone()));
        Ok(())
    }

    /// `hivectl tell NAME MESSAGE`: wakes the agent's turn loop with `message`. Refused,
    /// changing nothing, when no harness of the agent listens.
    /// With `new_session`, a Claude Code agent starts a new conversation for it.
    pub async fn tell(
        &self,
        name: &AgentName,
        message: &str,
        by: &str,
        new_session: bool,
    ) -> Result<(), Error> {
        crate::spec::message::check_message(message)
            .map_err(|e| Error::InvalidArgument(format!("agent {name}: {e}")))?;
        self.require_known(name).await?;
        let notice = Notice::Wake {
            reason: if new_session {
                TELL_NEW_SESSION
            } else {
                "tell"
            }
            .into(),
            message: message.to_owned(),
        };
        if self.driver.doors.tell(name, &notice) == 0 {
            return Err(Error::Failed(format!(
                "agent {name}: its harness is not connected, nothing was told; is it running? (hivectl status {name})"
            )));
        }
        journal::emit(
            Event::AgentTold,
            Some(name),
            None,
            &[
                (fields::TOLD_BY, by.to_owned()),
                (fields::MESSAGE_TEXT, message.to_owned()),
                (
                    fields::NEW_SESSION,
                    if new_session { "yes" } else { "no" }.into(),
                ),
            ],
            &format!("agent {name}: told by {by} ({} bytes)", message.len()),
        );
        Ok(())
    }

    /// The spec file an agent's spec is read from: the saved one, else the declared one.
    pub(super) fn spec_origin(&self, name: &AgentName) -> std::path::PathBuf {
        let roots = &self.driver.host.roots;
        roots
            .spec_paths(name)
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| roots.saved_spec(name))
    }

    /// An agent exists if it has a spec or a unit.
    pub(super) async fn require_known(&self, name: &AgentName) -> Result<(), Error> {
        match load_spec(&self.driver.host.roots, name) {
            Ok(_) => Ok(()),
            Err(Error::NoSuchAgent(msg)) => {
                let unit = self
                    .driver
                    .sd
                    .status(&name.container_unit())
                    .await
                    .map_err(Error::failed)?;
                if unit.is_some() {
                    Ok(())
                } else {
                    Err(Error::NoSuchAgent(msg))
                }
            }
            Err(e) => Err(e),
        }
    }
}
