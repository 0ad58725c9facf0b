//! Carries out reconcile: gathers each agent's facts (its spec and plan, the unit systemd
//! holds), asks `reconcile::decide`, and acts — at most [`PARALLEL`] agents at a time,
//! each under its agent's lock. `hivectl plan` gets the same facts and decisions, plus the
//! checks and the diff, and nothing is acted on.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::changes::Change as HiveChange;
use super::ensure::Outcome;
use super::mode::Mode;
use super::preflight::{self, Check};
use super::{Error, Hive};
use crate::journal::{self, fields, Event};
use crate::plan;
use crate::reconcile::diff;
use crate::reconcile::view::{AgentPlan, LiveView, UnitView};
use crate::reconcile::{decide, Action, Facts, Live, SpecFacts, Step, StepResult, Totals};
use crate::spans::Summed;
use crate::spec::{AgentName, AgentSpec};
use crate::systemd::{UnitStatus, AGENT_UNITS};
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

impl Hive {
    /// Every agent reconcile looks at: specs on disk and agent units systemd holds.
    async fn reconcile_names(&self) -> BTreeSet<AgentName> {
        let mut names = crate::inventory::spec_names(&self.host.roots);
        match self.sd.list(AGENT_UNITS).await {
            Ok(units) => names.extend(
                units
                    .iter()
                    .filter_map(|u| AgentName::from_container_unit(&u.name)),
            ),
            Err(e) => log::warn!("listing agent units: {e:#}"),
        }
        names
    }

    /// The facts about one agent, and its spec when valid.
    async fn facts(&self, name: &AgentName) -> Result<(Facts, Option<AgentSpec>), Error> {
        self.facts_and_unit(name).await.map(|(f, s, _)| (f, s))
    }

    /// [`Self::facts`], and the unit's status they were read from (reused by the startup
    /// adoption, which would otherwise read it again).
    async fn facts_and_unit(
        &self,
        name: &AgentName,
    ) -> Result<(Facts, Option<AgentSpec>, Option<UnitStatus>), Error> {
        let unit = self
            .sd
            .status(&name.container_unit())
            .await
            .map_err(Error::failed)?
            .filter(|s| !s.load_state.is_not_found());
        let live = unit.as_ref().map(|s| Live {
            plan: s.plan_hash().map(str::to_owned),
            active_state: s.active_state.clone(),
            sub_state: s.sub_state.clone(),
        });
        let (spec_facts, spec) = match self.load_spec(name) {
            Err(Error::NoSuchAgent(_)) => (SpecFacts::Missing, None),
            Err(e) => (SpecFacts::Refused(e.to_string()), None),
            Ok(spec) => match preflight::check(&spec, &self.host) {
                Err(reason) => (SpecFacts::Refused(reason), Some(spec)),
                Ok(()) => (
                    SpecFacts::Valid {
                        plan: self.container_plan(&spec).hash,
                        autostart: spec.autostart,
                    },
                    Some(spec),
                ),
            },
        };
        let facts = Facts {
            agent: name.clone(),
            spec: spec_facts,
            live,
            stopped_by_admin: self.host.roots.stopped_marker(name).exists(),
        };
        Ok((facts, spec, unit))
    }

    /// Brings every agent to its spec. One reconcile at a time; concurrent asks wait.
    pub async fn reconcile(&self, prune: bool, trigger: Trigger) -> Vec<Step> {
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
        let names = self.reconcile_names().await;
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
    pub async fn reload(&self, prune: bool, trigger: Trigger) -> Vec<Step> {
        let steps = self.reconcile(prune, trigger).await;
        for s in &steps {
            let pruned = s.action == Action::Stop && s.result == Some(StepResult::Ok);
            if pruned {
                self.publish(HiveChange::AgentRemoved(s.agent.clone()));
            } else if s.plan.is_some() {
                self.publish(HiveChange::AgentAdded(s.agent.clone()));
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
        let (facts, spec, found) = match spans.time("facts", self.facts_and_unit(&name)).await {
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
        if let Err(e) = self.harness.heal_adopted(name, st, spans).await {
            log::warn!("agent {name}: checking its harness: {e:#}");
        }
        if let Err(e) = self.heal_egress(name).await {
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
        let spec = self.load_spec(name)?;
        preflight::check(&spec, &self.host).map_err(anyhow::Error::msg)?;
        let _guard = self.lock(name).await;
        self.prepare_dirs(&spec)?;
        let plan = self.container_plan(&spec);
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
        let outcome = self.bring_up(&spec, &plan, Mode::Create, None).await?;
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
        let _guard = self.lock(name).await;
        let unit = name.container_unit();
        self.harness.stop_harness_watch(name);
        self.sd.stop(&unit).await?;
        self.doors.close(name);
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

    /// What reconcile would do with `names` (every agent when empty), with the checks, the
    /// units it would create and the diff against the live ones. Reads only.
    pub async fn plan(&self, names: &[AgentName], prune: bool) -> Result<Vec<AgentPlan>, Error> {
        let names: Vec<AgentName> = if names.is_empty() {
            self.reconcile_names().await.into_iter().collect()
        } else {
            names.to_vec()
        };
        let mut out = Vec::with_capacity(names.len());
        let mut defaults: Option<HashMap<&str, String>> = None;
        for name in names {
            let (facts, spec) = self.facts(&name).await?;
            if facts.spec == SpecFacts::Missing && facts.live.is_none() {
                return Err(Error::NoSuchAgent(format!(
                    "no agent {name}: no spec at {} or {}, and no unit {}",
                    self.host.roots.saved_spec(&name).display(),
                    self.host.roots.declared_spec(&name).display(),
                    name.container_unit()
                )));
            }
            let action = with_running_system(decide(&facts, prune), spec.as_ref());
            let checks = spec
                .as_ref()
                .map(|s| preflight::checks(s, &self.host))
                .unwrap_or_default();
            let planned = spec.as_ref().map(|s| {
                (
                    plan::container_unit(s, &self.host),
                    plan::harness_unit(s, &self.host),
                )
            });
            let mut units = Vec::new();
            let mut changes = Vec::new();
            if let (Some((container, harness)), true) = (
                &planned,
                matches!(action, Action::Create | Action::Rebuild { .. }),
            ) {
                units.push(UnitView::of(container, "host".into()));
                units.push(UnitView::of(harness, name.machine()));
            }
            if let (Some((container, _)), Action::Rebuild { .. }) = (&planned, &action) {
                if defaults.is_none() {
                    defaults = Some(self.unset_defaults().await);
                }
                if let Some(live) = self
                    .sd
                    .properties(&container.unit)
                    .await
                    .map_err(Error::failed)?
                {
                    changes = diff::diff(
                        &container.properties,
                        &live,
                        defaults.as_ref().expect("set above"),
                    );
                }
            }
            let live = facts.live.as_ref().map(|l| LiveView {
                unit: name.container_unit(),
                state: format!("{}/{}", l.active_state, l.sub_state),
                plan: l.plan.clone(),
            });
            out.push(AgentPlan {
                step: Step {
                    agent: name.clone(),
                    plan: planned.as_ref().map(|(c, _)| c.hash.clone()),
                    action,
                    result: None,
                },
                live,
                checks,
                units,
                diff: changes,
            });
        }
        Ok(out)
    }

    /// What approving a change that makes `spec` would do, as `hivectl plan` shows a
    /// rebuild: the checks of the new spec, its units, and the diff of its container
    /// unit's properties against the live one. `extra` checks (the requested binds' own)
    /// come first. Reads only.
    pub async fn plan_spec(&self, spec: &AgentSpec, extra: Vec<Check>) -> Result<AgentPlan, Error> {
        let name = &spec.name;
        let container = plan::container_unit(spec, &self.host);
        let harness = plan::harness_unit(spec, &self.host);
        let status = self
            .sd
            .status(&container.unit)
            .await
            .map_err(Error::failed)?
            .filter(|s| !s.load_state.is_not_found());
        let live = status.as_ref().map(|l| LiveView {
            unit: name.container_unit(),
            state: format!("{}/{}", l.active_state, l.sub_state),
            plan: l.plan_hash().map(str::to_owned),
        });
        let live_plan = live.as_ref().and_then(|l| l.plan.clone());
        let action = match (&live, live_plan) {
            (None, _) => Action::Create,
            (Some(_), Some(p)) if p == container.hash => Action::Keep,
            (Some(_), p) => Action::Rebuild {
                live_plan: p.unwrap_or_else(|| "-".into()),
            },
        };
        let mut changes = Vec::new();
        if live.is_some() {
            let defaults = self.unset_defaults().await;
            if let Some(props) = self
                .sd
                .properties(&container.unit)
                .await
                .map_err(Error::failed)?
            {
                changes = diff::diff(&container.properties, &props, &defaults);
            }
        }
        let mut checks = extra;
        checks.extend(preflight::checks(spec, &self.host));
        Ok(AgentPlan {
            step: Step {
                agent: name.clone(),
                plan: Some(container.hash.clone()),
                action,
                result: None,
            },
            live,
            checks,
            units: vec![
                UnitView::of(&container, "host".into()),
                UnitView::of(&harness, name.machine()),
            ],
            diff: changes,
        })
    }

    /// What systemd reports for a limit a unit never set, to tell "not set" apart.
    async fn unset_defaults(&self) -> HashMap<&'static str, String> {
        let mut d = HashMap::from([
            ("MemoryMax", u64::MAX.to_string()),
            ("CPUWeight", u64::MAX.to_string()),
        ]);
        match self.sd.default_tasks_max().await {
            Ok(t) => {
                d.insert("TasksMax", t.to_string());
            }
            Err(e) => log::debug!("{e:#}"),
        }
        d
    }
}

/// Reconcile's decision for a system agent, with the system its GC root names.
fn with_running_system(action: Action, spec: Option<&AgentSpec>) -> Action {
    let wanted = spec.and_then(|s| s.system.as_deref());
    let running = spec
        .filter(|s| s.system.is_some())
        .and_then(|s| super::nixos_system::running_system(&s.name));
    crate::reconcile::with_system(action, running.as_deref(), wanted)
}
