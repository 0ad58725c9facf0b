//! A harness's `turn_started` / `turn_done` events become `agent_turn` journal entries, so
//! `journalctl HIVE_AGENT=alice` tells the agent's turns and `hivectl status` finds the
//! last one. Only numbers and fixed words from the agent's data reach the message; the
//! rest stays in `HIVE_DATA`, as for any event.

use crate::spec::AgentName;

pub struct Turn {
    phase: &'static str,
    turn: u64,
    code: Option<i64>,
    secs: Option<f64>,
    timed_out: bool,
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
    })
}

impl Turn {
    pub fn fields(&self, name: &str, data: String) -> Vec<(&'static str, String)> {
        vec![
            ("HIVE_AGENT_EVENT", name.to_owned()),
            ("HIVE_TURN", self.turn.to_string()),
            ("HIVE_TURN_PHASE", self.phase.to_owned()),
            ("HIVE_DATA", data),
        ]
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
}
