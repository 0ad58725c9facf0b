//! `tool_use` approvals: a Claude Code agent's claude asks, through the hive's MCP tool
//! `permission_prompt`, to use a tool its spec does not allow unasked; an admin decides.
//! Approving lets that one call run; the spec never changes, so there is nothing to apply
//! and no restart. docs/approvals.md.

use serde_json::Value;

use super::specs::load_spec;
use crate::paths::Roots;
use crate::spec::claude::Permission;
use crate::spec::AgentName;

pub const TOOL_USE: &str = "tool_use";

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
