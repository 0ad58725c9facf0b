//! Carries out reconcile: the planner (`planner.rs`) gathers each agent's facts and asks
//! `reconcile::decide`; the reconciler acts — at most [`PARALLEL`] agents at a time, each
//! under its agent's lock, through the unit driver.

use std::sync::Arc;
use std::time::Instant;

use super::changes::{Change as HiveChange, Changes};
use super::driver::UnitDriver;
use super::ensure::Outcome;
use super::files::prepare_dirs;
use super::locks::AgentLocks;
use super::mode::Mode;
use super::planner::{with_running_system, Planner};
use super::preflight;
use super::sd_notify::StatusLine;
use super::specs::load_spec;
use crate::journal::{self, fields, Event};
use crate::reconcile::{decide, Action, SpecFacts, Step, StepResult, Totals};
use crate::spans::Summed;
use crate::spec::AgentName;
use crate::systemd::UnitStatus;
use futures_util::{stream, StreamExt};

pub use super::ensure::PARALLEL;

/// What asked for a reconcile; it is in every event the reconcile writes (`HIVE_TRIGGER=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Trigger {
    /// hive-c0re started (after a reboot: every agent).
    Startup,
    /// `hivectl reload` (the D-Bus Reload method).
    Reload,
    /// SIGHUP, e.g. from `systemctl reload hive-c0re` or `kill -HUP`.
    #[strum(serialize = "sighup")]
    Signal,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Carries out reconcile's decisions; one reconcile at a time.
pub(super) struct Reconciler {
    changes: Changes,
    status: StatusLine,
    locks: Arc<AgentLocks>,
    driver: Arc<UnitDriver>,
    planner: Arc<Planner>,
    /// Held by the one reconcile that runs; a reload during another waits for it.
    reconciling: tokio::sync::Mutex<()>,
}

impl Reconciler {
    pub(super) fn new(
        driver: Arc<UnitDriver>,
        planner: Arc<Planner>,
        locks: Arc<AgentLocks>,
        changes: Changes,
        status: StatusLine,
    ) -> Self {
        Self {
            changes,
            status,
            locks,
            driver,
            planner,
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    /// Brings every agent to its spec. One reconcile at a time; concurrent asks wait.
    pub(super) async fn reconcile(&self, prune: bool, trigger: Trigger) -> Vec<Step> {
        let _one = self.reconciling.lock().await;
        let started = Instant::now();
        journal::emit(
            Event::ReconcileStarted,
            None,
            None,
            &[
                (fields::TRIGGER, trigger.as_str().into()),
                (fields::PRUNE, prune.to_string()),
            ],
            &format!("reconcile started ({})", trigger.as_str()),
        );
        let names = self.planner.reconcile_names().await;
        let spans = Summed::default();
        let mut steps: Vec<Step> = stream::iter(names)
            .map(|name| self.reconcile_one(name, prune, trigger, &spans))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        steps.sort_by(|a, b| a.agent.cmp(&b.agent));
        let totals = Totals::of(&steps);
        let ms = started.elapsed().as_millis();
        let summary = totals.summary();
        log::info!(
            "reconcile ({}) time per phase, summed over agents: {spans}",
            trigger.as_str()
        );
        journal::emit(
            Event::ReconcileFinished,
            None,
            None,
            &[
                (fields::TRIGGER, trigger.as_str().into()),
                (fields::CREATED, totals.created.to_string()),
                (fields::REBUILT, totals.rebuilt.to_string()),
                (fields::KEPT, totals.kept.to_string()),
                (fields::STOPPED, totals.stopped.to_string()),
                (fields::FAILED, totals.failed.to_string()),
                (fields::SUMMARY, summary.clone()),
                (fields::DURATION_MS, ms.to_string()),
            ],
            &format!(
                "reconcile finished ({}) in {ms} ms: {summary}",
                trigger.as_str()
            ),
        );
        steps
    }

    /// Reconciles, then publishes what it changed: agents that now have a spec are
    /// added, agents pruned are removed, so the adapters show what reconcile left.
    pub(super) async fn reload(&self, prune: bool, trigger: Trigger) -> Vec<Step> {
        let steps = self.reconcile(prune, trigger).await;
        for s in &steps {
            let pruned = s.action == Action::Stop && s.result == Some(StepResult::Ok);
            if pruned {
                self.changes
                    .publish(HiveChange::AgentRemoved(s.agent.clone()));
            } else if s.plan.is_some() {
                self.changes
                    .publish(HiveChange::AgentAdded(s.agent.clone()));
            }
        }
        self.status.refresh().await;
        steps
    }

    async fn reconcile_one(
        &self,
        name: AgentName,
        prune: bool,
        trigger: Trigger,
        spans: &Summed,
    ) -> Step {
        let mut step = Step {
            agent: name.clone(),
            action: Action::Leave {
                reason: String::new(),
            },
            plan: None,
            result: None,
        };
        let (facts, spec, found) = match spans
            .time("facts", self.planner.facts_and_unit(&name))
            .await
        {
            Ok(f) => f,
            Err(e) => {
                step.action = Action::Refuse {
                    reason: e.to_string(),
                };
                return step;
            }
        };
        if let SpecFacts::Valid { plan, .. } = &facts.spec {
            step.plan = Some(plan.clone());
        }
        step.action = with_running_system(decide(&facts, prune), spec.as_ref());
        let unit = name.container_unit();
        // A unit that runs when the daemon starts is adopted whatever reconcile decides
        // to leave it as: the daemon serves its socket and watches its harness again.
        let up = facts.live.as_ref().is_some_and(|l| l.active_state.is_up());
        let adopt = trigger == Trigger::Startup && up;
        let done = match &step.action {
            Action::Keep | Action::Leave { .. } => {
                if let Some(st) = found.as_ref().filter(|_| adopt) {
                    self.adopted_at_startup(&name, st, spans).await;
                }
                return step;
            }
            Action::Refuse { reason } => {
                log::warn!("agent {name}: not reconciled: {reason}");
                if let Some(st) = found.as_ref().filter(|_| adopt) {
                    self.adopted_at_startup(&name, st, spans).await;
                }
                return step;
            }
            Action::Create | Action::Rebuild { .. } | Action::Switch { .. } => {
                self.converge(&name, &step.action, trigger).await
            }
            Action::Stop => self.prune(&name, trigger).await,
        };
        step.result = Some(match done {
            Ok(()) => StepResult::Ok,
            Err(e) => {
                let e = crate::spec::one_line(&format!("{e:#}"));
                journal::emit(
                    Event::ReconcileFailed,
                    Some(&name),
                    Some(&unit),
                    &[
                        (fields::TRIGGER, trigger.as_str().into()),
                        (fields::ACTION, step.action.name().into()),
                        (fields::ERROR, e.clone()),
                    ],
                    &format!(
                        "agent {name}: reconcile could not {} it: {e}",
                        step.action.name()
                    ),
                );
                StepResult::Failed(e)
            }
        });
        step
    }

    /// A unit found running as planned when the daemon starts (`st`, as its facts were
    /// just read): say so, and check its harness (which also restarts the harness crash
    /// watch).
    async fn adopted_at_startup(&self, name: &AgentName, st: &UnitStatus, spans: &Summed) {
        {
            journal::emit(
                Event::Adopted,
                Some(name),
                Some(&st.unit),
                &[
                    (fields::INVOCATION_ID, st.invocation_id.clone()),
                    (fields::TRIGGER, Trigger::Startup.as_str().into()),
                ],
                &format!(
                    "agent {name}: found {} {}/{}, adopted",
                    st.unit, st.active_state, st.sub_state
                ),
            );
        }
        if let Err(e) = self.driver.harness.heal_adopted(name, st, spans).await {
            log::warn!("agent {name}: checking its harness: {e:#}");
        }
        if let Err(e) = self.driver.heal_egress(name).await {
            log::warn!("agent {name}: checking its egress proxy: {e:#}");
        }
    }

    /// Creates or rebuilds from the spec as it is now, under the agent's lock. Mode::Create
    /// adopts a unit that matches by then (e.g. a `hivectl create` got there first), so an
    /// agent is never started twice.
    async fn converge(
        &self,
        name: &AgentName,
        action: &Action,
        trigger: Trigger,
    ) -> anyhow::Result<()> {
        let spec = load_spec(&self.driver.host.roots, name)?;
        preflight::check(&spec, &self.driver.host).map_err(anyhow::Error::msg)?;
        let _guard = self.locks.lock(name).await;
        prepare_dirs(&self.driver.host, &spec)?;
        let plan = self.driver.container_plan(&spec);
        let unit = plan.unit.clone();
        let trig = (fields::TRIGGER, trigger.as_str().to_string());
        if let Action::Rebuild { live_plan } = action {
            journal::emit(
                Event::RebuildStarted,
                Some(name),
                Some(&unit),
                &[trig.clone(), (fields::LIVE_PLAN, live_plan.clone())],
                &format!(
                    "agent {name}: rebuilding {unit}: its plan drifted from {live_plan} to {}",
                    plan.hash
                ),
            );
        }
        let outcome = self
            .driver
            .bring_up(&spec, &plan, Mode::Create, None)
            .await?;
        let fields = [
            trig,
            (fields::OUTCOME, outcome.as_str().into()),
            (fields::PLAN, plan.hash.clone()),
        ];
        let (event, verb) = match action {
            Action::Rebuild { .. } => (Event::RebuildFinished, "rebuilt"),
            Action::Switch { .. } => (Event::RebuildFinished, "switched in place"),
            _ if outcome == Outcome::Adopted => (Event::Adopted, "adopted"),
            _ => (Event::AgentCreated, "created"),
        };
        journal::emit(
            event,
            Some(name),
            Some(&unit),
            &fields,
            &format!("agent {name}: {verb} {unit} ({})", trigger.as_str()),
        );
        Ok(())
    }

    /// Stops an agent whose spec is gone; its state and credentials stay.
    async fn prune(&self, name: &AgentName, trigger: Trigger) -> anyhow::Result<()> {
        let _guard = self.locks.lock(name).await;
        let unit = name.container_unit();
        self.driver.harness.stop_harness_watch(name);
        self.driver.sd.stop(&unit).await?;
        self.driver.doors.close(name);
        journal::emit(
            Event::AgentStopped,
            Some(name),
            Some(&unit),
            &[
                (fields::TRIGGER, trigger.as_str().into()),
                (fields::REASON, "pruned: no spec".into()),
            ],
            &format!("agent {name}: stopped {unit}: it has no spec (pruned)"),
        );
        Ok(())
    }
}
