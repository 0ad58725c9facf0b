//! Agent names: the one identifier every unit, path and machine name is derived from.

use std::fmt;

use super::SpecError;

/// The longest name accepted; `h-<name>` and `hive-agent-<name>.service` stay well inside
/// machined's and systemd's limits.
pub const MAX_LEN: usize = 31;

/// A validated agent name (`^[a-z][a-z0-9-]{0,30}$`). Holding one is proof it was checked,
/// so paths built from it can never escape their root.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct AgentName(String);

/// Read back (from the daemon's JSON) only through [`AgentName::parse`].
impl TryFrom<String> for AgentName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        AgentName::parse(&raw).map_err(|e| e.to_string())
    }
}

impl From<AgentName> for String {
    fn from(n: AgentName) -> Self {
        n.0
    }
}

impl AgentName {
    /// Validates `raw`; the error is a one-line reason fit for an admin.
    pub fn parse(raw: &str) -> Result<Self, SpecError> {
        let mut chars = raw.chars();
        match chars.next() {
            None => return Err(SpecError::NameEmpty),
            Some(c) if !c.is_ascii_lowercase() => return Err(SpecError::NameStart(raw.to_owned())),
            Some(_) => {}
        }
        if raw.len() > MAX_LEN {
            return Err(SpecError::NameTooLong(raw.to_owned()));
        }
        if let Some(bad) =
            chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(SpecError::NameChar {
                name: raw.to_owned(),
                bad,
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `hive-agent-<name>.service`, the container unit on the host.
    pub fn container_unit(&self) -> String {
        format!("hive-agent-{}.service", self.0)
    }

    /// `h-<name>`, the machine name registered with machined.
    pub fn machine(&self) -> String {
        format!("h-{}", self.0)
    }

    /// Recovers the agent name from a container unit name, if it is one of ours.
    pub fn from_container_unit(unit: &str) -> Option<Self> {
        let raw = unit.strip_prefix("hive-agent-")?.strip_suffix(".service")?;
        Self::parse(raw).ok()
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract() {
        for ok in ["a", "alice", "a1", "agent-7", "a-b-c", &"a".repeat(31)] {
            assert_eq!(AgentName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(32);
        for bad in [
            "",
            "A",
            "Alice",
            "1abc",
            "-a",
            "a_b",
            "a.b",
            "a/b",
            "..",
            "../x",
            "a b",
            "é",
            "a\n",
            "a\0",
            &long,
            "alice/../../etc",
        ] {
            let err = AgentName::parse(bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn unit_and_machine_names() {
        let n = AgentName::parse("alice").unwrap();
        assert_eq!(n.container_unit(), "hive-agent-alice.service");
        assert_eq!(n.machine(), "h-alice");
        assert_eq!(
            AgentName::from_container_unit("hive-agent-alice.service"),
            Some(n)
        );
        assert_eq!(
            AgentName::from_container_unit("hive-agent-Bad.service"),
            None
        );
        assert_eq!(AgentName::from_container_unit("sshd.service"), None);
    }
}
