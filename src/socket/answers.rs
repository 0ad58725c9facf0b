//! The core's answers to an agent, as the wire carries them (docs/socket-protocol.md):
//! the only place they become JSON. The core hands over its own types.

use serde_json::{json, Value};

use super::protocol::Push;
use crate::hive::agent_side::{Notice, WhoAmI};
use crate::store::Approval;

/// An approval as its agent sees it.
pub fn approval(a: &Approval) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind.as_str(),
        "status": a.status.as_str(),
        "payload": serde_json::from_str::<Value>(&a.payload).unwrap_or(Value::Null),
        "note": a.note.clone().unwrap_or_default(),
        "decided_by": a.decided_by.clone().unwrap_or_default(),
        "created_at": a.created_at,
        "decided_at": a.decided_at.unwrap_or_default(),
        "finished_at": a.finished_at.unwrap_or_default(),
    })
}

/// `my_approvals`: the list, oldest first.
pub fn approvals(all: &[Approval]) -> Value {
    Value::Array(all.iter().map(approval).collect())
}

/// `whoami`.
pub fn whoami(w: &WhoAmI) -> Value {
    json!({
        "agent": w.agent.as_str(),
        "path": w.path,
        "env": w.env,
        "binds": w.binds.iter().map(|b| json!({
            "source": b.source,
            "target": b.target,
            "readonly": b.readonly,
        })).collect::<Vec<_>>(),
        "limits": {
            "memory_max": w.memory_max,
            "tasks_max": w.tasks_max,
            "cpu_weight": w.cpu_weight,
        },
        "pending_approvals": w.pending_approvals,
    })
}

/// The wire message for what the core tells an agent.
pub fn push(notice: &Notice) -> Push {
    match notice.clone() {
        Notice::Decided {
            id,
            kind,
            status,
            note,
        } => Push::ApprovalDecided {
            id,
            kind: kind.as_str().to_owned(),
            status: status.as_str().to_owned(),
            note,
        },
        Notice::RestartPending { id, grace } => Push::RestartPending {
            id,
            grace_secs: grace.as_secs(),
        },
        Notice::Wake { reason, message } => Push::Wake { reason, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AgentName;
    use crate::store::{ApprovalKind, Status};

    #[test]
    fn an_approval_keeps_its_wire_bytes() {
        let a = Approval {
            id: 7,
            agent: AgentName::parse("alice").unwrap(),
            kind: ApprovalKind::ToolUse,
            payload: r#"{"tool":"Bash"}"#.into(),
            status: Status::Denied,
            note: Some("no".into()),
            decided_by: None,
            created_at: 1,
            decided_at: Some(2),
            finished_at: None,
        };
        assert_eq!(
            approval(&a).to_string(),
            r#"{"created_at":1,"decided_at":2,"decided_by":"","finished_at":0,"id":7,"kind":"tool_use","note":"no","payload":{"tool":"Bash"},"status":"denied"}"#
        );
        let bad = Approval {
            payload: "{not json".into(),
            ..a
        };
        assert_eq!(approval(&bad)["payload"], Value::Null);
    }
}
