//! `hivectl tell NAME MESSAGE`: an admin's message to an agent, waking its turn loop.

use anyhow::Result;

use super::{BadInput, Target};
use crate::journal::{fields, Event};
use crate::spec::AgentName;

#[derive(Debug, clap::Args)]
pub struct TellArgs {
    /// Agent name
    pub name: String,
    /// What to tell it (at most 4 KiB of text); its next turn gets it on stdin and in
    /// HIVE_WAKE_MESSAGE
    pub message: String,
    /// A Claude Code agent starts a new conversation for this message instead of resuming
    /// its session (docs/agent-side.md)
    #[arg(long)]
    pub new_session: bool,
    /// Print nothing on success
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(t: &Target, a: TellArgs) -> Result<()> {
    let n = AgentName::parse(&a.name).map_err(|e| BadInput(e.to_string()))?;
    // Checked here too, so a bad message is refused before the bus is touched.
    crate::spec::message::check_message(&a.message)
        .map_err(|e| BadInput(format!("agent {n}: {e}")))?;
    let manager = t.manager().await?;
    if a.new_session {
        manager
            .tell_agent_new_session(n.as_str(), &a.message)
            .await?;
    } else {
        manager.tell_agent(n.as_str(), &a.message).await?;
    }
    if !a.quiet {
        println!("agent {n}: told");
    }
    Ok(())
}

/// The agent's last turn as `hivectl status` shows it, from the daemon's `agent_turn`
/// journal entries (the agent's harness reported it; `None`: no turn recorded, or the
/// journal cannot be read).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastTurn {
    pub turn: u64,
    /// `started` (still running, or the harness died in it) or `done`.
    pub phase: String,
    pub reason: String,
    pub code: Option<i64>,
    pub secs: Option<f64>,
    pub timed_out: bool,
    /// When the entry was written, unix microseconds.
    pub at_usec: u64,
    /// A Claude Code agent's turn: what it cost and its tokens, as claude reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
}

pub fn last_turn(name: &AgentName) -> Option<LastTurn> {
    let out = turn_entries(
        name,
        &[
            fields::TURN,
            fields::TURN_PHASE,
            fields::DATA,
            "__REALTIME_TIMESTAMP",
            fields::COST_USD,
            fields::TOKENS_IN,
            fields::TOKENS_OUT,
        ]
        .join(","),
        &["-n", "1"],
    )?;
    parse_entry(out.lines().last()?)
}

/// The daemon's `agent_turn` entries of `name` as JSON lines, with only `output_fields`;
/// `None` when the journal cannot be read.
fn turn_entries(name: &AgentName, output_fields: &str, extra: &[&str]) -> Option<String> {
    let out = std::process::Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "--output-fields", output_fields])
        .args(extra)
        .arg(fields::assign(fields::EVENT, Event::AgentTurn.name()))
        .arg(fields::assign(fields::AGENT, name))
        .arg("SYSLOG_IDENTIFIER=hive-c0re")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_entry(line: &str) -> Option<LastTurn> {
    let e: serde_json::Value = serde_json::from_str(line).ok()?;
    let data: serde_json::Value = serde_json::from_str(e[fields::DATA].as_str()?).ok()?;
    Some(LastTurn {
        turn: e[fields::TURN].as_str()?.parse().ok()?,
        phase: e[fields::TURN_PHASE].as_str()?.to_owned(),
        reason: crate::spec::one_line(data["reason"].as_str().unwrap_or("")),
        code: data["code"].as_i64(),
        secs: data["secs"].as_f64(),
        timed_out: data["timed_out"].as_bool().unwrap_or(false),
        at_usec: e["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?,
        cost_usd: e[fields::COST_USD].as_str().and_then(|c| c.parse().ok()),
        tokens_in: e[fields::TOKENS_IN].as_str().and_then(|c| c.parse().ok()),
        tokens_out: e[fields::TOKENS_OUT].as_str().and_then(|c| c.parse().ok()),
    })
}

/// What a Claude Code agent spent today (UTC), summed over its turns' `agent_turn`
/// entries; `None` when it recorded no cost today (or the journal cannot be read).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpentToday {
    pub day: String,
    pub usd: f64,
    pub turns: u64,
}

pub fn spent_today(name: &AgentName) -> Option<SpentToday> {
    let day = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let since = format!("--since={day} 00:00:00 UTC");
    let out = turn_entries(
        name,
        fields::COST_USD,
        &[&since, &fields::assign(fields::TURN_PHASE, "done")],
    )?;
    sum_costs(&day, &out)
}

fn sum_costs(day: &str, lines: &str) -> Option<SpentToday> {
    let mut spent = SpentToday {
        day: day.to_owned(),
        usd: 0.0,
        turns: 0,
    };
    for line in lines.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(c) = e[fields::COST_USD]
            .as_str()
            .and_then(|c| c.parse::<f64>().ok())
        {
            spent.usd += c;
            spent.turns += 1;
        }
    }
    (spent.turns > 0).then_some(spent)
}

impl LastTurn {
    /// `#3 done: exit 0 after 1.2s (woken by tell), 2026-11-30 01:40:00`.
    pub fn render(&self) -> String {
        let mut s = format!("#{} {}", self.turn, self.phase);
        if let Some(code) = self.code {
            s.push_str(&format!(": exit {code}"));
            if let Some(secs) = self.secs {
                s.push_str(&format!(" after {secs:.1}s"));
            }
            if self.timed_out {
                s.push_str(", killed at its timeout");
            }
        }
        if let Some(cost) = self.cost_usd {
            s.push_str(&format!(
                ", ${cost:.4} ({} in / {} out tokens)",
                self.tokens_in.unwrap_or(0),
                self.tokens_out.unwrap_or(0)
            ));
        }
        let reason: String = self
            .reason
            .chars()
            .filter(|c| !c.is_control() && !crate::spec::request::is_format(*c))
            .take(64)
            .collect();
        if !reason.is_empty() {
            s.push_str(&format!(" (woken by {reason})"));
        }
        s.push_str(&format!(", {}", super::render::format_usec(self.at_usec)));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_turn_reads_from_its_journal_entry() {
        let line = r#"{"HIVE_TURN":"3","HIVE_TURN_PHASE":"done","__REALTIME_TIMESTAMP":"1000000","HIVE_DATA":"{\"turn\":3,\"reason\":\"tell\",\"code\":0,\"secs\":1.25,\"timed_out\":false}"}"#;
        let t = parse_entry(line).unwrap();
        assert_eq!(t.turn, 3);
        assert_eq!(t.code, Some(0));
        assert!(
            t.render()
                .starts_with("#3 done: exit 0 after 1.2s (woken by tell), "),
            "{}",
            t.render()
        );
        assert!(parse_entry(r#"{"HIVE_TURN":"x"}"#).is_none());
    }

    #[test]
    fn a_claude_turn_shows_its_cost_and_the_day_sums_them() {
        let line = r#"{"HIVE_TURN":"2","HIVE_TURN_PHASE":"done","__REALTIME_TIMESTAMP":"1000000","HIVE_COST_USD":"0.012500","HIVE_TOKENS_IN":"300","HIVE_TOKENS_OUT":"60","HIVE_DATA":"{\"turn\":2,\"reason\":\"tell\",\"code\":0,\"secs\":2.0}"}"#;
        let t = parse_entry(line).unwrap();
        assert!(
            t.render().starts_with(
                "#2 done: exit 0 after 2.0s, $0.0125 (300 in / 60 out tokens) (woken by tell)"
            ),
            "{}",
            t.render()
        );
        let lines = "{\"HIVE_COST_USD\":\"0.5\"}\n{\"HIVE_COST_USD\":\"0.25\"}\n{}\nnot json\n";
        let s = sum_costs("2026-12-03", lines).unwrap();
        assert_eq!((s.usd, s.turns), (0.75, 2));
        assert!(sum_costs("2026-12-03", "{}\n").is_none());
    }
}
