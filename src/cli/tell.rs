//! `hivectl tell NAME MESSAGE`: an admin's message to an agent, waking its turn loop.

use anyhow::Result;

use super::{BadInput, Target};
use crate::spec::AgentName;

#[derive(Debug, clap::Args)]
pub struct TellArgs {
    /// Agent name
    pub name: String,
    /// What to tell it (at most 4 KiB of text); its next turn gets it on stdin and in
    /// HIVE_WAKE_MESSAGE
    pub message: String,
    /// Print nothing on success
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(t: &Target, a: TellArgs) -> Result<()> {
    let n = AgentName::parse(&a.name).map_err(|e| BadInput(e.to_string()))?;
    // Checked here too, so a bad message is refused before the bus is touched.
    crate::spec::message::check_message(&a.message)
        .map_err(|e| BadInput(format!("agent {n}: {e}")))?;
    t.manager()
        .await?
        .tell_agent(n.as_str(), &a.message)
        .await?;
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
}

pub fn last_turn(name: &AgentName) -> Option<LastTurn> {
    let out = std::process::Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "-n", "1", "--output-fields"])
        .arg("HIVE_TURN,HIVE_TURN_PHASE,HIVE_DATA,__REALTIME_TIMESTAMP")
        .arg("HIVE_EVENT=agent_turn")
        .arg(format!("HIVE_AGENT={name}"))
        .arg("SYSLOG_IDENTIFIER=hive-c0re")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    parse_entry(line.lines().last()?)
}

fn parse_entry(line: &str) -> Option<LastTurn> {
    let e: serde_json::Value = serde_json::from_str(line).ok()?;
    let data: serde_json::Value = serde_json::from_str(e["HIVE_DATA"].as_str()?).ok()?;
    Some(LastTurn {
        turn: e["HIVE_TURN"].as_str()?.parse().ok()?,
        phase: e["HIVE_TURN_PHASE"].as_str()?.to_owned(),
        reason: crate::spec::one_line(data["reason"].as_str().unwrap_or("")),
        code: data["code"].as_i64(),
        secs: data["secs"].as_f64(),
        timed_out: data["timed_out"].as_bool().unwrap_or(false),
        at_usec: e["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?,
    })
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
}
