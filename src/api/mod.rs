//! hive-c0re's D-Bus API on the system bus, shaped like machined's: a manager object with
//! `List*`/`Get*` and verbs, one object per agent at an escaped path, `*New`/`*Removed`
//! signals. Names here are part of the external contract (docs/dbus-api.md).

mod access;
pub mod calls;
mod changes;
pub mod client;
mod paging;
pub mod server;
mod views;

pub use views::{ApprovalShown, ShownRecord};

pub(crate) use changes::follow;

pub const BUS_NAME: &str = "org.hyperhive.Hive1";
pub const MANAGER_PATH: &str = "/org/hyperhive/hive1";
pub const MANAGER_INTERFACE: &str = "org.hyperhive.Hive1.Manager";
pub const AGENT_INTERFACE: &str = "org.hyperhive.Hive1.Agent";

/// Errors the API returns; their D-Bus names are `org.hyperhive.Hive1.Error.<Variant>`.
/// hivectl maps InvalidArgument and NoSuchAgent to exit code 2 (bad input).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.hyperhive.Hive1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Bad input: nothing was touched.
    InvalidArgument(String),
    NoSuchAgent(String),
    NoSuchApproval(String),
    /// The approval was decided already (or failed); the second decision changed nothing.
    AlreadyDecided(String),
    AccessDenied(String),
    /// The operation was attempted and failed; the message says where.
    Failed(String),
}

/// The one place the core's errors become wire errors: each keeps its name, which
/// clients branch on (hivectl's exit code 2 for bad input), and its one-line message.
impl From<crate::hive::Error> for Error {
    fn from(e: crate::hive::Error) -> Self {
        use crate::hive::Error as Core;
        match e {
            Core::InvalidArgument(m) => Error::InvalidArgument(m),
            Core::NoSuchAgent(m) => Error::NoSuchAgent(m),
            Core::NoSuchApproval(m) => Error::NoSuchApproval(m),
            Core::AlreadyDecided(m) => Error::AlreadyDecided(m),
            Core::Failed(m) => Error::Failed(m),
        }
    }
}

/// An approval as the API carries it (D-Bus signature `(xssssssxxx)`): the store's row
/// with absent values as "" and 0, so every field has a fixed D-Bus type.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::zvariant::Type,
)]
pub struct ApprovalRecord {
    pub id: i64,
    pub agent: String,
    pub kind: String,
    /// JSON text, as the agent sent it.
    pub payload: String,
    /// pending, approved, denied, applied or failed.
    pub status: String,
    pub note: String,
    pub decided_by: String,
    /// Unix microseconds; 0 when not (yet) set.
    pub created_at: i64,
    pub decided_at: i64,
    pub finished_at: i64,
}

impl From<&crate::store::Approval> for ApprovalRecord {
    fn from(a: &crate::store::Approval) -> Self {
        Self {
            id: a.id,
            agent: a.agent.to_string(),
            kind: a.kind.as_str().to_owned(),
            payload: a.payload.clone(),
            status: a.status.as_str().to_owned(),
            note: a.note.clone().unwrap_or_default(),
            decided_by: a.decided_by.clone().unwrap_or_default(),
            created_at: a.created_at,
            decided_at: a.decided_at.unwrap_or_default(),
            finished_at: a.finished_at.unwrap_or_default(),
        }
    }
}

/// The object path of an agent: `sd_bus_path_encode` of the name under the manager path,
/// so `alice-2` becomes `/org/hyperhive/hive1/agent/alice_2d2`.
pub fn agent_path(name: &str) -> String {
    let mut out = format!("{MANAGER_PATH}/agent/");
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn agent_paths_are_escaped_like_sd_bus() {
        assert_eq!(
            super::agent_path("alice"),
            "/org/hyperhive/hive1/agent/alice"
        );
        assert_eq!(super::agent_path("a-2"), "/org/hyperhive/hive1/agent/a_2d2");
        assert!(zbus::zvariant::ObjectPath::try_from(super::agent_path("x-y-9")).is_ok());
    }
}
