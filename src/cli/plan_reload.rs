//! `hivectl plan` and `hivectl reload`: what reconcile would do, and doing it. Both are
//! computed by the daemon (its paths and binaries are what units get); hivectl reads its
//! answer back into the types the daemon wrote it from (`reconcile::view`) and renders
//! those.

use anyhow::{Context, Result};

use super::{render, BadInput, Target, EXIT_BAD_INPUT, EXIT_FAILED};
use crate::reconcile::view::{AgentPlan, Verdict};
use crate::reconcile::{Action, Step, Totals};
use crate::spec::AgentName;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Agents to plan (default with --all: every agent with a spec or a unit)
    #[arg(value_name = "NAME", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Plan every agent
    #[arg(long)]
    pub all: bool,
    /// Plan as `reload --prune` would: agents without spec are stopped
    #[arg(long)]
    pub prune: bool,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// Also stop agents whose spec is gone (their state stays)
    #[arg(long)]
    pub prune: bool,
    /// Print the steps as JSON
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
}

/// A failure that carries its own exit code, after hivectl printed what it could.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

pub async fn plan(t: &Target, a: PlanArgs) -> Result<()> {
    if a.names.is_empty() && !a.all {
        return Err(BadInput(
            "plan what? name the agents (hivectl plan alice bob) or plan every agent with --all"
                .into(),
        )
        .into());
    }
    let names = a
        .names
        .iter()
        .map(|n| AgentName::parse(n).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BadInput(e.to_string()))?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let manager = t.manager().await?;
    let json = super::daemon_call::again(|| manager.plan(&refs, a.prune)).await?;
    let plans: Vec<AgentPlan> = serde_json::from_str(&json).context("reading the daemon's plan")?;
    if a.json {
        println!("{json}");
    } else {
        print!("{}", render_plans(&plans));
    }
    let refused = refusals(plans.iter().map(|p| (&p.step, &p.checks[..])));
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Exit {
            code: EXIT_BAD_INPUT,
            message: refusal_line(&refused),
        }
        .into())
    }
}

/// The last line of a plan or reload that refused agents: the error contract is one
/// line with the reasons (scripts read it), each said once.
fn refusal_line(refused: &[(String, String)]) -> String {
    refused
        .iter()
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn reload(t: &Target, a: ReloadArgs) -> Result<()> {
    let manager = t.manager().await?;
    let json = manager.reload(a.prune).await?;
    let steps: Vec<Step> = serde_json::from_str(&json).context("reading the daemon's steps")?;
    if a.json {
        println!("{json}");
    } else if !a.quiet {
        print!("{}", render_steps(&steps));
    }
    let failed: Vec<String> = steps
        .iter()
        .filter_map(|s| {
            let r = s.result.clone().filter(|r| !r.is_ok())?;
            Some(format!("agent {}: {}", s.agent, String::from(r)))
        })
        .collect();
    if !failed.is_empty() {
        return Err(Exit {
            code: EXIT_FAILED,
            message: failed.join("; "),
        }
        .into());
    }
    let refused = refusals(steps.iter().map(|s| (s, &[][..])));
    if !refused.is_empty() {
        return Err(Exit {
            code: EXIT_BAD_INPUT,
            message: refusal_line(&refused),
        }
        .into());
    }
    Ok(())
}

/// (agent, one-line reason) of agents reconcile refuses, or whose checks failed.
fn refusals<'a>(
    items: impl IntoIterator<Item = (&'a Step, &'a [crate::reconcile::view::Check])>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (step, checks) in items {
        let agent = step.agent.to_string();
        if let Action::Refuse { reason } = &step.action {
            out.push((agent, reason.clone()));
        } else if let Some(c) = checks.iter().find(|c| c.verdict == Verdict::Fail) {
            let reason = format!("agent {agent}: {} {}", c.what, c.detail);
            out.push((agent, reason));
        }
    }
    out
}

fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

/// The reason a leave or refuse step carries.
fn reason(step: &Step) -> Option<&str> {
    match &step.action {
        Action::Leave { reason } | Action::Refuse { reason } => Some(reason),
        _ => None,
    }
}

/// One headline per agent, then what is not ok in its checks, the units a create or
/// rebuild would make, and the diff of a rebuild.
pub fn render_plans(plans: &[AgentPlan]) -> String {
    let mut out = String::new();
    for p in plans {
        let agent = &p.step.agent;
        let unit = agent.container_unit();
        let state = or_dash(p.live.as_ref().map(|l| l.state.as_str()));
        let plan = or_dash(p.step.plan.as_deref());
        let head = match &p.step.action {
            Action::Keep => format!("keep: {unit} {state} runs plan {plan}"),
            Action::Create => format!("create {unit} (plan {plan})"),
            Action::Rebuild { live_plan } => {
                format!("rebuild {unit}: live plan {live_plan} differs from plan {plan}")
            }
            Action::Switch { from, to } => {
                format!("switch {unit} in place (no restart): system {from} -> {to}")
            }
            Action::Stop => format!("stop {unit} ({state}): it has no spec"),
            a @ (Action::Leave { reason } | Action::Refuse { reason }) => {
                format!("{}: {reason}", a.name())
            }
        };
        out.push_str(&format!("{agent}: {head}\n"));
        let reason = reason(&p.step).unwrap_or_default();
        for c in &p.checks {
            // A failed check a refusal already states is not said twice.
            let said = !reason.is_empty() && reason.contains(&c.detail);
            if c.verdict != Verdict::Ok && !said {
                out.push_str(&format!(
                    "  {} {}: {}\n",
                    c.verdict.as_str(),
                    c.what,
                    c.detail
                ));
            }
        }
        for u in &p.units {
            let place = if u.on == "host" {
                "on the host".to_owned()
            } else {
                format!("in {}", u.on)
            };
            out.push_str(&format!("  unit {} {place}:\n", u.unit));
            for (k, v) in &u.properties {
                out.push_str(&format!("    {k}={v}\n"));
            }
        }
        for d in &p.diff {
            out.push_str(&format!("  ~ {}\n", d.property));
            out.push_str(&format!(
                "    - {}\n",
                d.live.as_deref().unwrap_or("(not set)")
            ));
            out.push_str(&format!(
                "    + {}\n",
                d.planned.as_deref().unwrap_or("(not set)")
            ));
        }
    }
    if plans.is_empty() {
        out.push_str("no agents\n");
    }
    out
}

/// A table of what reload did, and a last line of the daemon's own totals.
pub fn render_steps(steps: &[Step]) -> String {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|st| {
            let what = match (&st.result, reason(st)) {
                (Some(r), _) => String::from(r.clone()),
                (None, Some(reason)) => reason.to_owned(),
                _ => "-".into(),
            };
            vec![st.agent.to_string(), st.action.name().into(), what]
        })
        .collect();
    let mut out = render::table(Some(&["AGENT", "ACTION", "RESULT"]), &rows);
    out.push_str(&format!(
        "\n{} agents: {}\n",
        steps.len(),
        Totals::of(steps).summary()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Read as hivectl reads the daemon's answer.
    fn plans(v: Vec<Value>) -> Vec<AgentPlan> {
        serde_json::from_value(Value::Array(v)).expect("a plan as the daemon writes it")
    }

    #[test]
    fn a_plan_shows_units_checks_and_diff() {
        let plans = vec![
            json!({"agent": "a", "action": "create", "plan": "p1", "checks": [
                {"what": "root", "verdict": "ok", "detail": "/"},
                {"what": "harness command", "verdict": "warn", "detail": "x: not found"}],
                "units": [{"unit": "hive-agent-a.service", "on": "host",
                           "properties": [["Slice", "hive.slice"]]}], "diff": []}),
            json!({"agent": "b", "action": "rebuild", "plan": "p2", "live_plan": "p1",
                   "live": {"unit": "hive-agent-b.service", "state": "active/running", "plan": "p1"},
                   "checks": [], "units": [],
                   "diff": [{"property": "MemoryMax", "live": "1024", "planned": null}]}),
        ];
        assert_eq!(
            render_plans(&super::tests::plans(plans)),
            "a: create hive-agent-a.service (plan p1)\n\
             \x20 warn harness command: x: not found\n\
             \x20 unit hive-agent-a.service on the host:\n\
             \x20   Slice=hive.slice\n\
             b: rebuild hive-agent-b.service: live plan p1 differs from plan p2\n\
             \x20 ~ MemoryMax\n\
             \x20   - 1024\n\
             \x20   + (not set)\n"
        );
    }

    #[test]
    fn refusals_come_from_refused_agents_and_failed_checks() {
        let items = vec![
            json!({"agent": "a", "action": "refuse", "reason": "agent a: bad spec"}),
            json!({"agent": "b", "action": "create", "checks": [
                {"what": "bind source", "verdict": "fail", "detail": "/x: No such file or directory"}]}),
            json!({"agent": "c", "action": "keep", "checks": []}),
        ];
        let items = plans(items);
        let r = refusals(items.iter().map(|p| (&p.step, &p.checks[..])));
        let reasons: Vec<&str> = r.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "agent a: bad spec",
                "agent b: bind source /x: No such file or directory"
            ]
        );
        assert_eq!(refusal_line(&r), reasons.join("; "));
    }

    #[test]
    fn a_failed_check_the_refusal_states_is_not_repeated() {
        let plans = vec![json!({"agent": "eve", "action": "refuse",
            "reason": "agent eve: root /nope: No such file or directory",
            "checks": [{"what": "root", "verdict": "fail", "detail": "/nope: No such file or directory"}]})];
        assert_eq!(
            render_plans(&super::tests::plans(plans)),
            "eve: refuse: agent eve: root /nope: No such file or directory\n"
        );
    }
}
