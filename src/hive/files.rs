//! The daemon's filesystem work outside the agents' trees: the bind sources it prepares,
//! the spec it writes atomically, the `hivectl stop` mark, and runtime dirs left behind.
//! Inside trees an agent writes into, everything goes through `safe_fs`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::preflight;
use crate::paths::Roots;
use crate::plan::{self, Host};
use crate::spec::{AgentName, AgentSpec};

/// The bind sources the daemon makes for an agent: its state and credentials
/// directories (mode 0700, created if missing and tightened if they exist; their
/// contents are never touched), and its journal directory where it gets one (0755,
/// as journald's own). Also where `create` saves the spec.
pub(super) fn prepare_dirs(host: &Host, spec: &AgentSpec) -> Result<()> {
    let name = &spec.name;
    let roots = &host.roots;
    std::fs::create_dir_all(roots.agents_dir())
        .with_context(|| format!("creating {}", roots.agents_dir().display()))?;
    // The agent writes inside state/ and claude/ and could plant a symlink there, but
    // not at these paths themselves; opened without following links all the same.
    // Where disks are images, they are made inside the image (`ensure_disk`).
    crate::safe_fs::private_dir(&roots.agent_dir(name)).with_context(|| format!("agent {name}"))?;
    if !host.disk_images {
        for dir in [roots.state_dir(name), roots.claude_dir(name)] {
            crate::safe_fs::private_dir(&dir).with_context(|| format!("agent {name}"))?;
        }
    }
    if let Some(dir) = plan::agent_journal_dir(spec, host).filter(|_| !host.disk_images) {
        crate::safe_fs::dir_with_mode(&dir, 0o755)
            .with_context(|| format!("agent {name}: its journal directory"))?;
    }
    if spec.system.is_some() {
        super::nixos_system::prepare_root(roots, name)?;
    }
    Ok(())
}

/// Writes `data` to `path` through a temporary file beside it, synced, then renamed over
/// it: a crash or a full disk never leaves half a file behind. The one atomic write of
/// the daemon (specs are the only files it writes whole).
pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = write_synced(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| anyhow!(preflight::io_reason(&e)))
}

/// Writes `data` to a new or truncated file at `path` (mode 0600) and syncs it: a full
/// disk may only show at the sync.
pub(super) fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Sets or clears the mark that `hivectl stop` leaves for reconcile (see
/// `Roots::stopped_marker`).
pub(super) fn mark_stopped(roots: &Roots, name: &AgentName, stopped: bool) -> Result<()> {
    let marker = roots.stopped_marker(name);
    if !stopped {
        return remove_if_present(&marker);
    }
    let dir = marker.parent().expect("the marker is in a directory");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&marker, b""))
        .map_err(|e| {
            anyhow!(
                "agent {name}: writing {}: {}",
                marker.display(),
                preflight::io_reason(&e)
            )
        })
}

/// Removes a file or a whole directory; one that is already gone is fine.
pub(super) fn remove_if_present(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!(
            "removing {}: {}",
            path.display(),
            preflight::io_reason(&e)
        )),
    }
}

/// Removes runtime dirs of agents that no longer exist (a destroy interrupted after the
/// spec was removed leaves them behind, and a socket nobody serves must not linger), and
/// every `<name>.bus` dir: earlier versions bound the container's bus out there, and
/// nothing uses one now. Never follows a symlink in them.
pub(crate) fn remove_orphan_runtime_dirs(roots: &Roots, known: &BTreeSet<AgentName>) {
    let Ok(dir) = std::fs::read_dir(&roots.run) else {
        return;
    };
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(raw) = file.to_str() else { continue };
        let legacy_bus = raw.strip_suffix(".bus");
        let Ok(name) = AgentName::parse(legacy_bus.unwrap_or(raw)) else {
            continue;
        };
        if legacy_bus.is_none() && known.contains(&name) {
            continue;
        }
        match crate::safe_fs::remove_tree(&entry.path()) {
            Ok(()) => log::info!(
                "removed {} of agent {name}, which no longer uses it",
                entry.path().display()
            ),
            Err(e) => log::warn!("agent {name}: {e:#}"),
        }
    }
}
