//! `tool_use` approvals: a Claude Code agent's claude asks, through the hive's MCP tool
//! `permission_prompt`, to use a tool its spec does not allow unasked; an admin decides.
//! Approving lets that one call run; the spec never changes, so there is nothing to apply
//! and no restart. docs/approvals.md.
//!
//! claude waits for the decision only up to the agent's `permission_timeout` (the hive's
//! MCP tool answers "refused" then); an approval still pending past it is closed (by the
//! applier, `apply.rs`), as denied by hive-c0re with a note saying so, so that it neither counts against the
//! agent's pending requests nor offers an admin a decision that no longer reaches claude.

use std::time::Duration;

use serde_json::Value;

use super::specs::load_spec;
use crate::paths::Roots;
use crate::spec::claude::Permission;
use crate::spec::AgentName;

/// How often pending `tool_use` approvals are looked at for expiry.
pub(super) const EXPIRY_EVERY: Duration = Duration::from_secs(10);
/// Past `permission_timeout`, this long more: claude has had its refusal.
const EXPIRY_GRACE: Duration = Duration::from_secs(5);
/// Who closes an expired one, as `HIVE_DECIDED_BY` and `hivectl approvals` show it.
pub const EXPIRED_BY: &str = "hive-c0re (timeout)";

pub(super) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Whether a `tool_use` approval made at `created_at` (unix µs) with `timeout` seconds
/// for an admin is past it, at `now`.
pub(super) fn expired(created_at: i64, timeout: u64, now: i64) -> bool {
    let limit = Duration::from_secs(timeout) + EXPIRY_GRACE;
    now.saturating_sub(created_at) > limit.as_micros() as i64
}

/// The longest tool name claude may name.
const MAX_TOOL_NAME: usize = 200;

/// Checks a `tool_use` request: `{"tool": NAME, "input": {...}}` from an agent whose spec
/// puts claude's permission questions to admins. The payload's size is bounded by the
/// caller, as for every request.
pub fn check(roots: &Roots, agent: &AgentName, payload: &Value) -> Result<(), String> {
    let obj = payload
        .as_object()
        .ok_or("a tool_use request is a JSON object {\"tool\", \"input\"}")?;
    if let Some(k) = obj.keys().find(|k| *k != "tool" && *k != "input") {
        return Err(format!(
            "tool_use: unknown field {:?} (allowed: tool, input)",
            k.chars().take(64).collect::<String>()
        ));
    }
    let tool = obj
        .get("tool")
        .and_then(Value::as_str)
        .ok_or("tool_use: \"tool\" must be the tool's name")?;
    if tool.is_empty()
        || tool.len() > MAX_TOOL_NAME
        || tool.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "tool_use: tool name of 1 to {MAX_TOOL_NAME} characters, no spaces or control characters"
        ));
    }
    if !obj.get("input").is_some_and(Value::is_object) {
        return Err("tool_use: \"input\" must be the tool's input, a JSON object".into());
    }
    let spec = load_spec(roots, agent).map_err(|e| e.to_string())?;
    match spec.claude {
        Some(c) if c.permission == Permission::Approvals => Ok(()),
        Some(_) => Err(format!(
            "agent {agent}: its claude's permission questions are refused, not asked (claude.permission = deny)"
        )),
        None => Err(format!(
            "agent {agent}: tool_use approvals are for Claude Code agents (spec [claude])"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_use_expires_after_its_timeout_and_a_grace() {
        let s = 1_000_000;
        assert!(!expired(0, 10, 10 * s));
        assert!(!expired(0, 10, 15 * s));
        assert!(expired(0, 10, 15 * s + 1));
        // A clock that went back expires nothing.
        assert!(!expired(100 * s, 10, 0));
    }
}
