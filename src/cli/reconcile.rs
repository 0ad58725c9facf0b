//! `hivectl plan` and `hivectl reload`: what reconcile would do, and doing it. Both are
//! computed by the daemon (its paths and binaries are what units get); hivectl renders
//! the JSON it returns.

use anyhow::{Context, Result};
use serde_json::Value;

use super::{render, BadInput, Target, EXIT_BAD_INPUT, EXIT_FAILED};
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
    let json = manager.plan(&refs, a.prune).await?;
    let plans: Vec<Value> = serde_json::from_str(&json).context("reading the daemon's plan")?;
    if a.json {
        println!("{json}");
    } else {
        print!("{}", render_plans(&plans));
    }
    let refused = refusals(&plans);
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
    let steps: Vec<Value> = serde_json::from_str(&json).context("reading the daemon's steps")?;
    if a.json {
        println!("{json}");
    } else if !a.quiet {
        print!("{}", render_steps(&steps));
    }
    let failed: Vec<String> = steps
        .iter()
        .filter_map(|s| {
            let r = s["result"].as_str()?;
            (r != "ok").then(|| format!("agent {}: {r}", s["agent"].as_str().unwrap_or("?")))
        })
        .collect();
    if !failed.is_empty() {
        return Err(Exit {
            code: EXIT_FAILED,
            message: failed.join("; "),
        }
        .into());
    }
    let refused = refusals(&steps);
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
fn refusals(items: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in items {
        let agent = p["agent"].as_str().unwrap_or("?").to_owned();
        if p["action"] == "refuse" {
            let reason = p["reason"].as_str().unwrap_or("refused").to_owned();
            out.push((agent, reason));
        } else if let Some(c) = p["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["verdict"] == "fail"))
        {
            let reason = format!(
                "agent {agent}: {} {}",
                c["what"].as_str().unwrap_or(""),
                c["detail"].as_str().unwrap_or("")
            );
            out.push((agent, reason));
        }
    }
    out
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// One headline per agent, then what is not ok in its checks, the units a create or
/// rebuild would make, and the diff of a rebuild.
pub fn render_plans(plans: &[Value]) -> String {
    let mut out = String::new();
    for p in plans {
        let agent = s(&p["agent"]);
        let unit = format!("hive-agent-{agent}.service");
        let live = &p["live"];
        let head = match s(&p["action"]) {
            "keep" => format!(
                "keep: {unit} {} runs plan {}",
                s(&live["state"]),
                s(&p["plan"])
            ),
            "create" => format!("create {unit} (plan {})", s(&p["plan"])),
            "rebuild" => format!(
                "rebuild {unit}: live plan {} differs from plan {}",
                s(&p["live_plan"]),
                s(&p["plan"])
            ),
            "stop" => format!("stop {unit} ({}): it has no spec", s(&live["state"])),
            "leave" | "refuse" => format!("{}: {}", s(&p["action"]), s(&p["reason"])),
            other => other.to_owned(),
        };
        out.push_str(&format!("{agent}: {head}\n"));
        let reason = p["reason"].as_str().unwrap_or_default();
        for c in p["checks"].as_array().into_iter().flatten() {
            // A failed check a refusal already states is not said twice.
            let said = !reason.is_empty() && reason.contains(s(&c["detail"]));
            if c["verdict"] != "ok" && !said {
                out.push_str(&format!(
                    "  {} {}: {}\n",
                    s(&c["verdict"]),
                    s(&c["what"]),
                    s(&c["detail"])
                ));
            }
        }
        for u in p["units"].as_array().into_iter().flatten() {
            let on = s(&u["on"]);
            let place = if on == "host" {
                "on the host".to_owned()
            } else {
                format!("in {on}")
            };
            out.push_str(&format!("  unit {} {place}:\n", s(&u["unit"])));
            for kv in u["properties"].as_array().into_iter().flatten() {
                out.push_str(&format!("    {}={}\n", s(&kv[0]), s(&kv[1])));
            }
        }
        for d in p["diff"].as_array().into_iter().flatten() {
            out.push_str(&format!("  ~ {}\n", s(&d["property"])));
            out.push_str(&format!(
                "    - {}\n",
                d["live"].as_str().unwrap_or("(not set)")
            ));
            out.push_str(&format!(
                "    + {}\n",
                d["planned"].as_str().unwrap_or("(not set)")
            ));
        }
    }
    if plans.is_empty() {
        out.push_str("no agents\n");
    }
    out
}

/// A table of what reload did, and a last line of totals.
pub fn render_steps(steps: &[Value]) -> String {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|st| {
            let what = match (st["result"].as_str(), st["reason"].as_str()) {
                (Some(r), _) => r.to_owned(),
                (None, Some(reason)) => reason.to_owned(),
                _ => "-".into(),
            };
            vec![s(&st["agent"]).into(), s(&st["action"]).into(), what]
        })
        .collect();
    let mut out = render::table(Some(&["AGENT", "ACTION", "RESULT"]), &rows);
    let count = |a: &str| steps.iter().filter(|x| x["action"] == a).count();
    let failed = steps
        .iter()
        .filter(|x| x["result"].as_str().is_some_and(|r| r != "ok"))
        .count();
    out.push_str(&format!(
        "\n{} agents: {} created, {} rebuilt, {} kept, {} stopped, {} left alone, {} refused, {failed} failed\n",
        steps.len(),
        count("create"),
        count("rebuild"),
        count("keep"),
        count("stop"),
        count("leave"),
        count("refuse"),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plan_shows_units_checks_and_diff() {
        let plans = vec![
            json!({"agent": "a", "action": "create", "plan": "p1", "checks": [
                {"what": "root", "verdict": "ok", "detail": "/"},
                {"what": "harness command", "verdict": "warn", "detail": "x: not found"}],
                "units": [{"unit": "hive-agent-a.service", "on": "host",
                           "properties": [["Slice", "hive.slice"]]}], "diff": []}),
            json!({"agent": "b", "action": "rebuild", "plan": "p2", "live_plan": "p1",
                   "live": {"state": "active/running"}, "checks": [], "units": [],
                   "diff": [{"property": "MemoryMax", "live": "1024", "planned": null}]}),
        ];
        assert_eq!(
            render_plans(&plans),
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
        let r = refusals(&items);
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
            render_plans(&plans),
            "eve: refuse: agent eve: root /nope: No such file or directory\n"
        );
    }
}
