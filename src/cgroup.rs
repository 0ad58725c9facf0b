//! What the kernel says of an agent's cgroup: its memory and tasks in use and how often the
//! OOM killer struck there. Read from `/sys/fs/cgroup` on the host, in either layout:
//! unified (cgroup v2, as on NixOS) or legacy/hybrid, where memory and pids are v1
//! hierarchies (this project's build machines). The oracle beside systemd's own
//! `MemoryCurrent=`/`TasksCurrent=`: OOM kills are in no unit property.

use std::path::{Path, PathBuf};

use crate::plan::SLICE;

const ROOT: &str = "/sys/fs/cgroup";

/// Where the memory controller's files of `unit` (in hive.slice) are, if the host has one.
pub fn memory_dir(unit: &str) -> Option<PathBuf> {
    memory_root().map(|root| root.join(SLICE).join(unit))
}

/// The directory holding hive.slice in the memory hierarchy.
fn memory_root() -> Option<PathBuf> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        // Unified: one tree; memory only if the controller is enabled there.
        let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
        return controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then(|| root.to_path_buf());
    }
    let v1 = root.join("memory");
    v1.join("cgroup.procs").exists().then_some(v1)
}

/// OOM kills in `unit`'s cgroup since it was made (the unit's start), subtree included.
pub fn oom_kills(unit: &str) -> Option<u64> {
    let dir = memory_dir(unit)?;
    // v2 counts in memory.events, v1 (kernel 4.13+) in memory.oom_control.
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|text| parse_oom_kills(&text))
}

/// The `oom_kill N` line of memory.events (v2) or memory.oom_control (v1).
pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some("oom_kill"))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// Agent units with a cgroup in the memory hierarchy now, with their OOM kill counts.
pub fn agents_oom_kills() -> Vec<(String, u64)> {
    let Some(slice) = memory_root().map(|r| r.join(SLICE)) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&slice) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("hive-agent-") && n.ends_with(".service"))
        .filter_map(|n| oom_kills(&n).map(|k| (n, k)))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::parse_oom_kills;

    #[test]
    fn oom_kills_are_read_from_either_layout() {
        let v2 = "low 0\nhigh 12\nmax 30\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        assert_eq!(parse_oom_kills(v1), Some(1));
        assert_eq!(parse_oom_kills("oom 3\n"), None);
    }
}
