//! NixOS system agents on the host side: the root the daemon prepares under the agent's
//! state, and the GC root that names the running system. Switching a running container to
//! a new system in place is the unit driver's (`units.rs`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{Mode as FileMode, OFlags};
use rustix::io::Errno;

use crate::paths::Roots;
use crate::plan::system::{gc_root, prepared_root, GC_ROOTS};
use crate::safe_fs::io_reason;
use crate::spec::AgentName;

/// Longest a switch may run inside the container before the daemon gives up on it (the
/// unit itself is stopped by its own `TimeoutStartSec=` of the same length).
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Directories a NixOS system's activation expects in its root, as `containers.<name>`
/// makes them, with their modes; nspawn refuses a tree without `usr/`.
const ROOT_DIRS: [(&str, u32); 7] = [
    ("etc", 0o755),
    ("var", 0o755),
    ("var/lib", 0o755),
    ("var/lib/private", 0o700),
    ("root", 0o700),
    ("usr", 0o755),
    ("usr/bin", 0o755),
];

/// Files systemd looks for before the system's activation makes them, made empty.
const ROOT_FILES: [&str; 2] = ["etc/os-release", "etc/machine-id"];

/// Makes the system agent's root: `<agent dir>/root` (0755) and what [`ROOT_DIRS`] and
/// [`ROOT_FILES`] name, where nothing is yet. Once booted the tree is the agent's: every
/// step is relative to a descriptor opened without following links, and an entry the
/// agent put in the way (a symlink, a file) is left as it is, never followed.
pub fn prepare_root(roots: &Roots, name: &AgentName) -> Result<()> {
    let root = prepared_root(roots, name);
    let dir = crate::safe_fs::dir_with_mode(&root, 0o755)
        .with_context(|| format!("agent {name}: preparing its root"))?;
    for (rel, mode) in ROOT_DIRS {
        let (parent, leaf) = rel.rsplit_once('/').unwrap_or(("", rel));
        let Some(parent) = open_in(&dir, parent) else {
            continue;
        };
        match rustix::fs::mkdirat(&parent, leaf, FileMode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => bail!("agent {name}: creating {}/{rel}: {e}", root.display()),
        }
    }
    for rel in ROOT_FILES {
        let (parent, leaf) = rel.rsplit_once('/').expect("a file below a directory");
        let Some(parent) = open_in(&dir, parent) else {
            continue;
        };
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&parent, leaf, flags, FileMode::from_raw_mode(0o644)) {
            Ok(_) | Err(Errno::EXIST) => {}
            Err(e) => bail!("agent {name}: creating {}/{rel}: {e}", root.display()),
        }
    }
    Ok(())
}

/// The directory `rel` below `dir`, each component opened without following a link;
/// `None` if any is not a directory (the agent's choice, left alone).
fn open_in(dir: &OwnedFd, rel: &str) -> Option<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = rustix::fs::openat(dir, ".", flags, FileMode::empty()).ok()?;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        cur = rustix::fs::openat(&cur, part, flags, FileMode::empty()).ok()?;
    }
    Some(cur)
}

/// The system the agent's GC root names: what its container runs (or last ran).
pub fn running_system(name: &AgentName) -> Option<PathBuf> {
    std::fs::read_link(gc_root(name)).ok()
}

/// Points the agent's GC root at `system`, atomically (a new link renamed over the old).
pub fn set_gc_root(name: &AgentName, system: &Path) -> Result<()> {
    let link = gc_root(name);
    let ctx = || format!("agent {name}: GC root {}", link.display());
    std::fs::create_dir_all(GC_ROOTS)
        .map_err(|e| anyhow!("creating {GC_ROOTS}: {}", io_reason(&e)))
        .with_context(ctx)?;
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(system, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .map_err(|e| anyhow!("pointing it at {}: {}", system.display(), io_reason(&e)))
        .with_context(ctx)
}

/// Removes the agent's GC root (destroy --purge): the store may collect its system.
pub fn remove_gc_root(name: &AgentName) -> Result<()> {
    let link = gc_root(name);
    match std::fs::remove_file(&link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!(
            "agent {name}: removing GC root {}: {}",
            link.display(),
            io_reason(&e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn roots(dir: &Path) -> Roots {
        Roots {
            state: dir.to_path_buf(),
            ..Roots::default()
        }
    }

    #[test]
    fn the_root_gets_what_activation_expects_and_keeps_what_is_there() {
        let state = tempfile::tempdir().unwrap();
        let roots = roots(state.path());
        let name = AgentName::parse("alice").unwrap();
        crate::safe_fs::private_dir(&roots.agents_dir()).unwrap();
        crate::safe_fs::private_dir(&roots.agent_dir(&name)).unwrap();
        prepare_root(&roots, &name).unwrap();
        let root = prepared_root(&roots, &name);
        for (rel, mode) in ROOT_DIRS {
            let m = std::fs::symlink_metadata(root.join(rel)).unwrap();
            assert!(m.is_dir(), "{rel}");
            assert_eq!(m.permissions().mode() & 0o7777, mode, "{rel}");
        }
        for rel in ROOT_FILES {
            assert!(root.join(rel).is_file(), "{rel}");
        }
        std::fs::write(root.join("etc/machine-id"), "kept\n").unwrap();
        prepare_root(&roots, &name).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
            "kept\n"
        );
    }

    #[test]
    fn links_the_agent_planted_in_its_root_are_never_followed() {
        let state = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let roots = roots(state.path());
        let name = AgentName::parse("eve").unwrap();
        crate::safe_fs::private_dir(&roots.agents_dir()).unwrap();
        crate::safe_fs::private_dir(&roots.agent_dir(&name)).unwrap();
        let root = prepared_root(&roots, &name);
        std::fs::create_dir(&root).unwrap();
        for rel in ["etc", "var", "usr"] {
            std::os::unix::fs::symlink(outside.path(), root.join(rel)).unwrap();
        }
        prepare_root(&roots, &name).unwrap();
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "something was made through a planted link"
        );
        // The root itself replaced by a link is refused.
        std::fs::remove_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), &root).unwrap();
        let e = prepare_root(&roots, &name).unwrap_err();
        assert!(
            format!("{e:#}").contains("agent eve: preparing its root"),
            "{e:#}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
