//! What `Plan` and `Reload` answer, as types both sides share: the daemon serializes them
//! into the JSON its D-Bus methods return (docs/dbus-api.md), hivectl reads them back and
//! renders from the types, never re-deriving what the daemon computed.

use serde::{Deserialize, Serialize};

use super::diff::{self, Change};
use super::Step;
use crate::plan::UnitPlan;

/// One agent as `hivectl plan` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlan {
    #[serde(flatten)]
    pub step: Step,
    /// `active/running`, and the HIVE_PLAN the live unit carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveView>,
    #[serde(default)]
    pub checks: Vec<Check>,
    /// The units that would be created (for create and rebuild).
    #[serde(default)]
    pub units: Vec<UnitView>,
    /// Properties that differ between the live container unit and the plan (rebuild).
    #[serde(default)]
    pub diff: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveView {
    pub unit: String,
    pub state: String,
    pub plan: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitView {
    pub unit: String,
    /// `host`, or the machine whose systemd gets the unit.
    pub on: String,
    pub properties: Vec<(String, String)>,
}

impl UnitView {
    pub fn of(p: &UnitPlan, on: String) -> UnitView {
        UnitView {
            unit: p.unit.clone(),
            on,
            properties: p
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), diff::render_planned(v)))
                .collect(),
        }
    }
}

/// How a check came out. A warning is shown but refuses nothing: it is a guess made from
/// the host's side (e.g. what a container's PATH will hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `root`, `bind source`, `systemd-nspawn`.
    pub what: String,
    pub verdict: Verdict,
    /// The path or value checked and, unless ok, why not.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Action, StepResult};
    use crate::spec::AgentName;

    #[test]
    fn what_the_daemon_writes_hivectl_reads_back_the_same() {
        let plan = AgentPlan {
            step: Step {
                agent: AgentName::parse("bob").unwrap(),
                action: Action::Rebuild {
                    live_plan: "p1".into(),
                },
                plan: Some("p2".into()),
                result: Some(StepResult::Failed("agent bob: boom".into())),
            },
            live: Some(LiveView {
                unit: "hive-agent-bob.service".into(),
                state: "active/running".into(),
                plan: Some("p1".into()),
            }),
            checks: vec![Check {
                what: "root".into(),
                verdict: Verdict::Warn,
                detail: "/".into(),
            }],
            units: vec![UnitView {
                unit: "hive-agent-bob.service".into(),
                on: "host".into(),
                properties: vec![("Slice".into(), "hive.slice".into())],
            }],
            diff: vec![Change {
                property: "MemoryMax".into(),
                live: Some("1024".into()),
                planned: None,
            }],
        };
        let json = serde_json::to_value(&plan).unwrap();
        // The wire words stay as docs/dbus-api.md has them.
        assert_eq!(json["result"], "failed: agent bob: boom");
        assert_eq!(json["action"], "rebuild");
        assert_eq!(json["checks"][0]["verdict"], "warn");
        assert_eq!(serde_json::from_value::<AgentPlan>(json).unwrap(), plan);
        let ok: StepResult = serde_json::from_str("\"ok\"").unwrap();
        assert!(ok.is_ok());
        // A name the daemon would never write is refused on reading, as on parsing.
        let bad = serde_json::json!({"agent": "../x", "action": "keep"});
        assert!(serde_json::from_value::<Step>(bad).is_err());
    }
}
