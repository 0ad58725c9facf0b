//! One cgroup per test host, in every hierarchy nspawn uses here, so that parallel hosts
//! (and same-named units in them) never share a tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::warn;
use anyhow::{Context as _, Result};

/// The cgroup hierarchies nspawn uses here: on a hybrid host the named `systemd` v1
/// hierarchy and the unified one; on a pure cgroup2 host the root itself.
pub(crate) fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| root.join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// The v1 controllers this machine binds resource control to (docs/testing.md), which a
/// test host may be given writable (`Options::v1_controllers`) so that its systemd enforces
/// `MemoryMax=`, `TasksMax=` and `CPUWeight=` for real. Absent on a pure cgroup2 host.
pub(crate) const V1_CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

fn v1_controller_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return Vec::new();
    }
    V1_CONTROLLERS
        .iter()
        .map(|c| root.join(c))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// Every cgroup a host of this name may have: teardown removes whichever exist.
pub(crate) fn host_cgroups(name: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .chain(v1_controller_hierarchies())
        .map(|h| h.join("hyperhive-testhost").join(name))
        .collect()
}

/// Whether this machine has v1 controllers a test host can be given.
pub fn has_v1_controllers() -> bool {
    !v1_controller_hierarchies().is_empty()
}

pub(crate) fn create_host_cgroups(name: &str, v1_controllers: bool) -> Result<Vec<PathBuf>> {
    let mut hierarchies = cgroup_hierarchies();
    if v1_controllers {
        hierarchies.extend(v1_controller_hierarchies());
    }
    let dirs: Vec<PathBuf> = hierarchies
        .into_iter()
        .map(|h| h.join("hyperhive-testhost").join(name))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).with_context(|| format!("creating cgroup {}", d.display()))?;
    }
    Ok(dirs)
}

pub(crate) fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Removes a host's cgroups bottom-up. The kernel only lets empty cgroups go; processes of
/// a just-killed container can take a moment to be reaped, so retry briefly.
pub(crate) fn remove_host_cgroups(name: &str) {
    for dir in host_cgroups(name) {
        let t0 = Instant::now();
        while dir.exists() && rmdir_tree(&dir).is_err() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if dir.exists() {
            warn(&format!(
                "cannot remove cgroup {}: still populated",
                dir.display()
            ));
        }
    }
}

pub(crate) fn rmdir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}
