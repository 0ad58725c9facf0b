//! A unit's state as an admin reads it from `systemctl show`.

use crate::journal::fields;
use std::collections::HashMap;

use serde::Serialize;
use zbus::zvariant::OwnedValue;

use super::{ActiveState, LoadState, SubState};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    pub unit: String,
    pub load_state: LoadState,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    /// The service's Result (`success`, `signal`, `exit-code`, …).
    pub result: String,
    pub invocation_id: String,
    pub main_pid: u32,
    /// `ExecMainCode`: a `CLD_*` code (1 exited, 2 killed, 3 dumped).
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    pub n_restarts: u32,
    /// Microseconds since the epoch; 0 if never.
    pub state_change_timestamp: u64,
    pub environment: Vec<String>,
}

/// An `InvocationID` as systemd shows it (`systemctl show`): 32 lowercase hex digits.
pub(super) fn invocation_hex(id: &[u8]) -> String {
    id.iter().map(|x| format!("{x:02x}")).collect()
}

impl UnitStatus {
    pub fn from_properties(unit: &str, p: &HashMap<String, OwnedValue>) -> Self {
        let s = |k: &str| {
            p.get(k)
                .and_then(|v| String::try_from(v.clone()).ok())
                .unwrap_or_default()
        };
        let u32_ = |k: &str| {
            p.get(k)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or_default()
        };
        let i32_ = |k: &str| {
            p.get(k)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or_default()
        };
        let u64_ = |k: &str| {
            p.get(k)
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or_default()
        };
        let invocation_id = p
            .get("InvocationID")
            .and_then(|v| Vec::<u8>::try_from(v.clone()).ok())
            .map(|b| invocation_hex(&b))
            .unwrap_or_default();
        let environment = p
            .get("Environment")
            .and_then(|v| Vec::<String>::try_from(v.clone()).ok())
            .unwrap_or_default();
        Self {
            unit: unit.to_owned(),
            load_state: LoadState(s("LoadState")),
            active_state: ActiveState::from(s("ActiveState")),
            sub_state: SubState(s("SubState")),
            result: s("Result"),
            invocation_id,
            main_pid: u32_("MainPID"),
            exec_main_code: i32_("ExecMainCode"),
            exec_main_status: i32_("ExecMainStatus"),
            n_restarts: u32_("NRestarts"),
            state_change_timestamp: u64_("StateChangeTimestamp"),
            environment,
        }
    }

    /// See [`ActiveState::is_up`].
    pub fn is_up(&self) -> bool {
        self.active_state.is_up()
    }

    pub fn is_failed(&self) -> bool {
        self.active_state == ActiveState::Failed
    }

    /// The `HIVE_PLAN=` hash stamped by the planner, if any.
    pub fn plan_hash(&self) -> Option<&str> {
        self.environment
            .iter()
            .find_map(|e| fields::value_of(e, fields::PLAN))
    }

    pub fn exec_main_code_name(&self) -> &'static str {
        match self.exec_main_code {
            1 => "exited",
            2 => "killed",
            3 => "dumped",
            _ => "-",
        }
    }
}
