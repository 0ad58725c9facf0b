//! `ShowApproval`'s answer (docs/dbus-api.md) as a type both sides share: the daemon
//! writes it from the core's `ApprovalView`, hivectl reads it back and renders from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApprovalRecord;
use crate::hive::ApprovalView;
use crate::reconcile::view::AgentPlan;

/// One approval as an admin reads it before deciding: the record, who asked and when,
/// then either why it would be refused now, or the spec diff and the plan of the rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalShown {
    pub approval: ShownRecord,
    pub requested_by: String,
    /// Unix microseconds.
    pub requested_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_diff: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<AgentPlan>,
}

/// [`ApprovalRecord`] with its payload as JSON when it is JSON (else as the text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownRecord {
    pub id: i64,
    pub agent: String,
    pub kind: String,
    pub payload: Value,
    pub status: String,
    pub note: String,
    pub decided_by: String,
    pub created_at: i64,
    pub decided_at: i64,
    pub finished_at: i64,
}

impl From<&ApprovalView> for ApprovalShown {
    fn from(view: &ApprovalView) -> Self {
        let a = &view.approval;
        let r = ApprovalRecord::from(a);
        let payload =
            serde_json::from_str(&r.payload).unwrap_or_else(|_| Value::String(r.payload.clone()));
        let (refused, spec_diff, plan) = match &view.outlook {
            Err(why) => (Some(why.clone()), None, None),
            Ok(o) => (None, Some(o.spec_diff.clone()), o.plan.clone()),
        };
        ApprovalShown {
            approval: ShownRecord {
                id: r.id,
                agent: r.agent,
                kind: r.kind,
                payload,
                status: r.status,
                note: r.note,
                decided_by: r.decided_by,
                created_at: r.created_at,
                decided_at: r.decided_at,
                finished_at: r.finished_at,
            },
            requested_by: a.agent.to_string(),
            requested_at: a.created_at,
            refused,
            spec_diff,
            plan,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AgentName;
    use crate::store::{Approval, Status};

    fn approval(payload: &str) -> Approval {
        Approval {
            id: 7,
            agent: AgentName::parse("alice").unwrap(),
            kind: crate::store::ApprovalKind::SpecChange,
            payload: payload.into(),
            status: Status::Pending,
            note: None,
            decided_by: None,
            created_at: 42,
            decided_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn a_refused_view_keeps_its_documented_shape_and_reads_back() {
        let view = ApprovalView {
            approval: approval(r#"{"path":["/opt/x"]}"#),
            outlook: Err("agent alice: /opt/x: No such file or directory".into()),
        };
        let shown = ApprovalShown::from(&view);
        let json = serde_json::to_value(&shown).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "approval": {"id": 7, "agent": "alice", "kind": "spec_change",
                    "payload": {"path": ["/opt/x"]}, "status": "pending", "note": "",
                    "decided_by": "", "created_at": 42, "decided_at": 0, "finished_at": 0},
                "requested_by": "alice",
                "requested_at": 42,
                "refused": "agent alice: /opt/x: No such file or directory",
            })
        );
        assert_eq!(
            serde_json::from_value::<ApprovalShown>(json).unwrap(),
            shown
        );
        // A payload that is not JSON (older rows) is carried as its text.
        let odd = ApprovalShown::from(&ApprovalView {
            approval: approval("not json"),
            outlook: Err("x".into()),
        });
        assert_eq!(odd.approval.payload, Value::String("not json".into()));
    }
}
