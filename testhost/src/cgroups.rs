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

pub(crate) fn host_cgroups(name: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join("hyperhive-testhost").join(name))
        .collect()
}

pub(crate) fn create_host_cgroups(name: &str) -> Result<Vec<PathBuf>> {
    let dirs = host_cgroups(name);
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
