//! Reading an agent's spec: the one `create` saved, else the one declared under the
//! config root. A missing spec (`NoSuchAgent`) is told apart from a broken one.

use super::{preflight, Error};
use crate::paths::Roots;
use crate::spec::{AgentName, AgentSpec, SpecFile};

/// Whether the agent has a spec on disk, saved or declared (valid or not).
pub fn has_spec(roots: &Roots, name: &AgentName) -> bool {
    roots.spec_paths(name).iter().any(|p| p.exists())
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
