//! A harness's `turn_started` / `turn_done` events become `agent_turn` journal entries, so
//! `journalctl HIVE_AGENT=alice` tells the agent's turns and `hivectl status` finds the
//! last one. Only numbers and fixed words from the agent's data reach the message; the
//! rest stays in `HIVE_DATA`, as for any event.

use crate::journal::fields;
use crate::spec::AgentName;

pub struct Turn {
    phase: &'static str,
    turn: u64,
    code: Option<i64>,
    secs: Option<f64>,
    timed_out: bool,
    /// A Claude Code agent's turn: what claude reported it cost (harness/claude.rs).
    usage: Option<Usage>,
}

/// Numbers only, and a session id of claude's alphabet: nothing else of the agent's data
/// becomes a field of its own.
struct Usage {
    cost_usd: f64,
    tokens_in: u64,
    tokens_out: u64,
    model_turns: u64,
    session_id: Option<String>,
}

fn usage(v: &serde_json::Value) -> Option<Usage> {
    let cost_usd = v["cost_usd"]
        .as_f64()
        .filter(|c| c.is_finite() && *c >= 0.0)?;
    let session_id = v["session_id"].as_str().filter(|id| {
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    });
    Some(Usage {
        cost_usd,
        tokens_in: v["tokens_in"].as_u64().unwrap_or(0),
        tokens_out: v["tokens_out"].as_u64().unwrap_or(0),
        model_turns: v["model_turns"].as_u64().unwrap_or(0),
        session_id: session_id.map(str::to_owned),
    })
}

/// The turn an event reports, if it is one of the turn loop's.
pub fn of(name: &str, data: &str) -> Option<Turn> {
    let phase = match name {
        "turn_started" => "started",
        "turn_done" => "done",
        _ => return None,
    };
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    Some(Turn {
        phase,
        turn: v["turn"].as_u64()?,
        code: v["code"].as_i64(),
        secs: v["secs"].as_f64(),
        timed_out: v["timed_out"].as_bool().unwrap_or(false),
        usage: usage(&v),
    })
}

impl Turn {
    pub fn fields(&self, name: &str, data: String) -> Vec<(&'static str, String)> {
        let mut f = vec![
            (fields::AGENT_EVENT, name.to_owned()),
            (fields::TURN, self.turn.to_string()),
            (fields::TURN_PHASE, self.phase.to_owned()),
            (fields::DATA, data),
        ];
        if let Some(u) = &self.usage {
            f.push((fields::COST_USD, format!("{:.6}", u.cost_usd)));
            f.push((fields::TOKENS_IN, u.tokens_in.to_string()));
            f.push((fields::TOKENS_OUT, u.tokens_out.to_string()));
            f.push((fields::MODEL_TURNS, u.model_turns.to_string()));
            if let Some(id) = &u.session_id {
                f.push((fields::SESSION_ID, id.clone()));
            }
        }
        f
    }

    pub fn message(&self, agent: &AgentName) -> String {
        let mut m = format!("agent {agent}: turn {} {}", self.turn, self.phase);
        if let Some(code) = self.code {
            m.push_str(&format!(" (exit {code}"));
            if let Some(secs) = self.secs {
                m.push_str(&format!(", {secs:.1}s"));
            }
            if self.timed_out {
                m.push_str(", killed at its timeout");
            }
            if let Some(u) = &self.usage {
                m.push_str(&format!(", ${:.4}", u.cost_usd));
            }
            m.push(')');
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_events_name_their_turn_and_nothing_else_leaks_into_the_message() {
        let alice = AgentName::parse("alice").unwrap();
        let t = of(
            "turn_done",
            r#"{"turn":3,"code":0,"secs":1.25,"timed_out":false,"reason":"tell\n\u001b[2J"}"#,
        )
        .unwrap();
        assert_eq!(t.message(&alice), "agent alice: turn 3 done (exit 0, 1.2s)");
        assert!(of("turn_done", r#"{"turn":"x"}"#).is_none());
        assert!(of("something_else", r#"{"turn":1}"#).is_none());
        let t = of(
            "turn_done",
            r#"{"turn":4,"code":137,"secs":2.0,"timed_out":true}"#,
        )
        .unwrap();
        assert!(t.message(&alice).ends_with("killed at its timeout)"));
    }

    #[test]
    fn a_claude_turn_carries_its_cost_and_only_clean_values() {
        let alice = AgentName::parse("alice").unwrap();
        let t = of(
            "turn_done",
            r#"{"turn":2,"code":0,"secs":3.0,"timed_out":false,"cost_usd":0.0125,"tokens_in":16,"tokens_out":7,"model_turns":2,"session_id":"3f6c70e8-65a2"}"#,
        )
        .unwrap();
        let f = t.fields("turn_done", String::new());
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("HIVE_COST_USD").as_deref(), Some("0.012500"));
        assert_eq!(get("HIVE_TOKENS_IN").as_deref(), Some("16"));
        assert_eq!(get("HIVE_SESSION_ID").as_deref(), Some("3f6c70e8-65a2"));
        assert_eq!(
            t.message(&alice),
            "agent alice: turn 2 done (exit 0, 3.0s, $0.0125)"
        );
        let t = of(
            "turn_done",
            r#"{"turn":2,"code":0,"cost_usd":-1,"session_id":"x\nHIVE_EVENT=forged"}"#,
        )
        .unwrap();
        assert!(
            t.fields("turn_done", String::new()).len() == 4,
            "a negative cost is no usage"
        );
        let t = of(
            "turn_done",
            r#"{"turn":2,"code":0,"cost_usd":1,"session_id":"x\nHIVE_EVENT=forged"}"#,
        )
        .unwrap();
        let f = t.fields("turn_done", String::new());
        assert!(!f.iter().any(|(k, _)| *k == "HIVE_SESSION_ID"));
    }
}
