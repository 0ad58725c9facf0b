//! Reading an agent's spec: the one `create` saved, else the one declared under the
//! config root. A missing spec (`NoSuchAgent`) is told apart from a broken one.

use super::{preflight, Error, Hive};
use crate::paths::Roots;
use crate::spec::{AgentName, AgentSpec, SpecFile};

impl Hive {
    /// The agent's spec: the one `create` saved, else a declared one under the config root.
    pub fn load_spec(&self, name: &AgentName) -> Result<AgentSpec, Error> {
        load_spec(&self.host.roots, name)
    }

    /// Whether the agent has a spec on disk, saved or declared (valid or not).
    pub fn has_spec(&self, name: &AgentName) -> bool {
        self.host.roots.spec_paths(name).iter().any(|p| p.exists())
    }

    /// Agents with a spec, plus those whose unit makes an agent (see `crate::inventory`).
    pub async fn known_agents(&self) -> std::collections::BTreeSet<AgentName> {
        crate::inventory::known_agents(&self.host.roots, &self.sd).await
    }

    /// The spec file an agent's spec is read from: the saved one, else the declared one.
    pub(super) fn spec_origin(&self, name: &AgentName) -> std::path::PathBuf {
        let roots = &self.host.roots;
        roots
            .spec_paths(name)
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| roots.saved_spec(name))
    }

    /// An agent exists if it has a spec or a unit.
    pub(super) async fn require_known(&self, name: &AgentName) -> Result<(), Error> {
        match self.load_spec(name) {
            Ok(_) => Ok(()),
            Err(Error::NoSuchAgent(msg)) => {
                let unit = self
                    .sd
                    .status(&name.container_unit())
                    .await
                    .map_err(Error::failed)?;
                if unit.is_some() {
                    Ok(())
                } else {
                    Err(Error::NoSuchAgent(msg))
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// An agent's spec: the one `create` saved, else a declared one under the config root.
pub fn load_spec(roots: &Roots, name: &AgentName) -> Result<AgentSpec, Error> {
    {
        for path in roots.spec_paths(name) {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let origin = path.display().to_string();
                    let file = SpecFile::from_toml(&text, &origin)?;
                    return Ok(AgentSpec::validate(name, &file)?);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Failed(format!(
                        "agent {name}: reading {}: {}",
                        path.display(),
                        preflight::io_reason(&e)
                    )))
                }
            }
        }
        Err(Error::NoSuchAgent(format!(
            "no agent {name}: no spec at {} or {}",
            roots.saved_spec(name).display(),
            roots.declared_spec(name).display()
        )))
    }
}
