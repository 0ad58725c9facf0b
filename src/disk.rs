//! An agent's disk: every byte it writes on the host — its state, its credentials and its
//! journal directory — against its `disk_max` (spec, or hive.toml's default).
//!
//! Not enforced yet: this kernel has no CONFIG_QUOTA (no ext4/XFS project quotas), and the
//! mechanisms that would bound it here (a per-agent filesystem image on a loop device, or
//! a btrfs subvolume with a qgroup limit) are not built (docs/persistence.md, "Disk").
//! Until they are, the bound is never silent: hive-c0re says so at its start and `hivectl
//! status` shows the use beside the bound with `NOT ENFORCED`.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why no disk bound is enforced, as the daemon's start and `hivectl status` say it.
pub const NOT_ENFORCED: &str =
    "disk bounds (disk_max) are not enforced on this host: no per-agent \
     mechanism is in place yet, so agents' state, credentials and journals share the host's \
     filesystems (docs/persistence.md, \"Disk\")";

/// Most directory entries one usage count reads: an agent decides how many files it has,
/// and `hivectl status` must still answer.
pub const MAX_ENTRIES: usize = 200_000;

/// What one agent uses of its disk bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskUse {
    /// Bytes allocated on the host under its directories (st_blocks, links not followed).
    pub used: u64,
    /// False when the count stopped at [`MAX_ENTRIES`]: `used` is then a lower bound.
    pub complete: bool,
    pub max: u64,
    pub enforced: bool,
    /// The directories counted.
    pub dirs: Vec<PathBuf>,
}

impl DiskUse {
    /// At or above 90 % of the bound.
    pub fn near(&self) -> bool {
        u128::from(self.used) * 100 >= u128::from(self.max) * 90
    }
}

/// Counts what `dirs` hold, without following links (an agent plants them) and without
/// leaving each directory's filesystem.
pub fn usage(dirs: &[PathBuf], max: u64) -> DiskUse {
    let mut used = 0u64;
    let mut budget = MAX_ENTRIES;
    let mut complete = true;
    for d in dirs {
        complete &= walk(d, &mut used, &mut budget);
    }
    DiskUse {
        used,
        complete,
        max,
        enforced: false,
        dirs: dirs.to_vec(),
    }
}

fn walk(root: &Path, used: &mut u64, budget: &mut usize) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(root) else {
        return true;
    };
    let dev = top.dev();
    *used += top.blocks() * 512;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            *used += m.blocks() * 512;
            if m.is_dir() && m.dev() == dev {
                stack.push(e.path());
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("sub")).unwrap();
        std::fs::write(state.join("sub/file"), vec![1u8; 1 << 20]).unwrap();
        // A link to a big tree elsewhere counts as a link, not as the tree.
        std::os::unix::fs::symlink("/usr", state.join("usr")).unwrap();
        let u = usage(&[state.clone(), dir.path().join("missing")], 64 << 20);
        assert!(u.complete);
        assert!(u.used >= 1 << 20 && u.used < 2 << 20, "{}", u.used);
        assert!(!u.enforced);
        assert!(!u.near());
        let full = usage(&[state], 1 << 20);
        assert!(full.near());
    }
}
