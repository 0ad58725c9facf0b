//! What reconcile sees and would do, read only: each agent's facts (its spec and plan, the
//! unit systemd holds) and `reconcile::decide`'s answer; `hivectl plan` and an approval's
//! view get the same, plus the checks, the units and the diff. Nothing is acted on here:
//! the reconciler (`reconciler.rs`) acts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::preflight::{self, Check};
use super::specs::load_spec;
use super::Error;
use crate::plan::{self, Host};
use crate::reconcile::diff;
use crate::reconcile::view::{AgentPlan, LiveView, UnitView};
use crate::reconcile::{decide, Action, Facts, Live, SpecFacts, Step};
use crate::spec::{AgentName, AgentSpec};
use crate::systemd::{Systemd, UnitStatus, AGENT_UNITS};

pub(super) struct Planner {
    host: Arc<Host>,
    sd: Systemd,
}

impl Planner {
    pub(super) fn new(host: Arc<Host>, sd: Systemd) -> Self {
        Self { host, sd }
    }

    /// Every agent reconcile looks at: specs on disk and agent units systemd holds.
    pub(super) async fn reconcile_names(&self) -> BTreeSet<AgentName> {
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
    pub(super) async fn facts(
        &self,
        name: &AgentName,
    ) -> Result<(Facts, Option<AgentSpec>), Error> {
        self.facts_and_unit(name).await.map(|(f, s, _)| (f, s))
    }

    /// [`Self::facts`], and the unit's status they were read from (reused by the startup
    /// adoption, which would otherwise read it again).
    pub(super) async fn facts_and_unit(
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
        let (spec_facts, spec) = match load_spec(&self.host.roots, name) {
            Err(Error::NoSuchAgent(_)) => (SpecFacts::Missing, None),
            Err(e) => (SpecFacts::Refused(e.to_string()), None),
            Ok(spec) => match preflight::check(&spec, &self.host) {
                Err(reason) => (SpecFacts::Refused(reason), Some(spec)),
                Ok(()) => (
                    SpecFacts::Valid {
                        plan: plan::container_unit(&spec, &self.host).hash,
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

    /// What reconcile would do with `names` (every agent when empty), with the checks, the
    /// units it would create and the diff against the live ones. Reads only.
    pub(super) async fn plan(
        &self,
        names: &[AgentName],
        prune: bool,
    ) -> Result<Vec<AgentPlan>, Error> {
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
    pub(super) async fn plan_spec(
        &self,
        spec: &AgentSpec,
        extra: Vec<Check>,
    ) -> Result<AgentPlan, Error> {
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
pub(super) fn with_running_system(action: Action, spec: Option<&AgentSpec>) -> Action {
    let wanted = spec.and_then(|s| s.system.as_deref());
    let running = spec
        .filter(|s| s.system.is_some())
        .and_then(|s| super::nixos_system::running_system(&s.name));
    crate::reconcile::with_system(action, running.as_deref(), wanted)
}
