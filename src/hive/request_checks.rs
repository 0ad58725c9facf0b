//! The host side of what an agent may ask for (`spec::request` is the pure side): a bind
//! source it names must exist on the host, and no part of its path may be a symlink, so
//! the path an admin reads is the path that gets bound.

use std::path::{Path, PathBuf};

use crate::paths::Roots;
use crate::spec::bind::BindEntry;
use crate::spec::request::AgentRequest;
use crate::spec::AgentSpec;

/// The spec `req` would make of `current`, if it stays within what an agent may ask for
/// and its bind sources pass [`bind_source`]. Run when the agent asks, when an admin
/// looks, and again when applying: the host may have changed in between.
pub fn check(req: &AgentRequest, current: &AgentSpec, roots: &Roots) -> Result<AgentSpec, String> {
    // Read now, as the bind sources are: the bound an agent may not exceed is the one its
    // spec would get, hive.toml's where the spec sets none.
    let defaults = super::bounds::read_defaults(&roots.config).map_err(|e| format!("{e:#}"))?;
    let spec = req.apply_to(current, &defaults, &roots.protected())?;
    for entry in &req.bind {
        bind_source(&entry_source(entry)?)?;
    }
    Ok(spec)
}

fn entry_source(entry: &BindEntry) -> Result<PathBuf, String> {
    Ok(entry.to_bind()?.source)
}

/// `source` (absolute and clean) exists, and no component of it, the last included, is a
/// symlink: each is looked at with lstat from the root down, never followed.
pub fn bind_source(source: &Path) -> Result<(), String> {
    let mut at = PathBuf::from("/");
    for part in source.components().skip(1) {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(if at == source {
                    format!("bind source {}: is a symlink", source.display())
                } else {
                    format!(
                        "bind source {}: {} is a symlink",
                        source.display(),
                        at.display()
                    )
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "bind source {}: {}",
                    source.display(),
                    super::preflight::io_reason(&e)
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_anywhere_in_the_path_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("docs")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(real.join("docs"), dir.path().join("leaf")).unwrap();
        assert_eq!(bind_source(&real.join("docs")), Ok(()));
        let err = bind_source(&dir.path().join("link/docs")).unwrap_err();
        assert!(err.contains("link is a symlink"), "{err}");
        let err = bind_source(&dir.path().join("leaf")).unwrap_err();
        assert!(err.ends_with("leaf: is a symlink"), "{err}");
        let err = bind_source(&dir.path().join("gone")).unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
    }
}
