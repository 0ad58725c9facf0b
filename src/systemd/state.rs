//! systemd's words for a unit's state and a job's end, as types: a branch on them is a
//! `match`, not a string compare, and what systemd adds later is kept as it said it.
//! They serialize as systemd spells them, so hivectl's JSON shows systemd's words.

use std::fmt;

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

/// A unit's `ActiveState` (org.freedesktop.systemd1(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[serde(from = "String", into = "String")]
#[zvariant(signature = "s")]
pub enum ActiveState {
    Active,
    Reloading,
    #[default]
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Maintenance,
    Refreshing,
    /// A state this code does not know (a newer systemd), as systemd said it.
    Other(String),
}

impl ActiveState {
    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Maintenance => "maintenance",
            ActiveState::Refreshing => "refreshing",
            ActiveState::Other(s) => s,
        }
    }

    /// Running, starting, or reloading: a unit in this state is left be (never started a
    /// second time).
    pub fn is_up(&self) -> bool {
        matches!(
            self,
            ActiveState::Active | ActiveState::Activating | ActiveState::Reloading
        )
    }
}

impl From<&str> for ActiveState {
    fn from(s: &str) -> Self {
        match s {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            "maintenance" => ActiveState::Maintenance,
            "refreshing" => ActiveState::Refreshing,
            other => ActiveState::Other(other.to_owned()),
        }
    }
}

impl From<String> for ActiveState {
    fn from(s: String) -> Self {
        ActiveState::from(s.as_str())
    }
}

impl From<ActiveState> for String {
    fn from(s: ActiveState) -> Self {
        s.as_str().to_owned()
    }
}

impl fmt::Display for ActiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit's `SubState`: its own type's words (`running`, `auto-restart`, `exited`, …),
/// so it stays text; the two hyperhive branches on are named here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[serde(transparent)]
pub struct SubState(pub String);

impl SubState {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The service's main process runs.
    pub fn is_running(&self) -> bool {
        self.0 == "running"
    }

    /// The service died and systemd waits `RestartSec=` before starting it again, or (257:
    /// `auto-restart-queued`) has queued that start.
    pub fn is_auto_restart(&self) -> bool {
        matches!(self.0.as_str(), "auto-restart" | "auto-restart-queued")
    }
}

impl From<&str> for SubState {
    fn from(s: &str) -> Self {
        SubState(s.to_owned())
    }
}

impl fmt::Display for SubState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A unit's `LoadState` (`loaded`, `not-found`, `masked`, …): text, as systemd says it;
/// the one hyperhive branches on is named here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[serde(transparent)]
pub struct LoadState(pub String);

impl LoadState {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// systemd has no such unit (it answers for any name with this).
    pub fn is_not_found(&self) -> bool {
        self.0 == "not-found"
    }
}

impl From<&str> for LoadState {
    fn from(s: &str) -> Self {
        LoadState(s.to_owned())
    }
}

impl fmt::Display for LoadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a job ended (`JobRemoved`'s `result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Done,
    Canceled,
    Timeout,
    Failed,
    Dependency,
    Skipped,
    /// Not systemd's word: the bus connection ended before systemd said how the job ended.
    Disconnected,
    /// A result this code does not know, as systemd said it.
    Other(String),
}

impl JobResult {
    pub fn as_str(&self) -> &str {
        match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Disconnected => "disconnected",
            JobResult::Other(s) => s,
        }
    }
}

impl From<&str> for JobResult {
    fn from(s: &str) -> Self {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_systemds_words() {
        for s in [
            "active",
            "inactive",
            "failed",
            "activating",
            "deactivating",
            "reloading",
        ] {
            assert_eq!(ActiveState::from(s).as_str(), s);
        }
        assert_eq!(
            ActiveState::from("frobnicating"),
            ActiveState::Other("frobnicating".into())
        );
        assert_eq!(
            serde_json::to_string(&ActiveState::Failed).unwrap(),
            "\"failed\""
        );
        assert!(ActiveState::Activating.is_up() && !ActiveState::Failed.is_up());
        assert_eq!(JobResult::from("done"), JobResult::Done);
        assert_eq!(JobResult::from("odd").as_str(), "odd");
    }
}
