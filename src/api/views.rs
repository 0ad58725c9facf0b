//! The D-Bus rendering of what the core answers as types.

use super::ApprovalRecord;
use crate::daemon::ApprovalView;

/// ShowApproval's JSON (docs/dbus-api.md): the record (its payload as JSON when it is),
/// who asked and when, then either why it would be refused now, or the spec diff and the
/// plan of the rebuild.
pub(super) fn approval_view_json(view: &ApprovalView) -> serde_json::Value {
    let a = &view.approval;
    let mut record = serde_json::to_value(ApprovalRecord::from(a)).expect("serializes");
    if let Ok(payload) = serde_json::from_str::<serde_json::Value>(&a.payload) {
        record["payload"] = payload;
    }
    let mut json = serde_json::json!({
        "approval": record,
        "requested_by": a.agent.as_str(),
        "requested_at": a.created_at,
    });
    match &view.outlook {
        Err(why) => json["refused"] = serde_json::json!(why),
        Ok(o) => {
            json["spec_diff"] = serde_json::json!(o.spec_diff);
            json["plan"] = serde_json::to_value(&o.plan).expect("plans serialize");
        }
    }
    json
}
