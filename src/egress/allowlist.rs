//! The proxy's allowlist: a file the daemon rewrites (atomically) when an admin or an
//! approval changes the agent's `egress`. Read again whenever it changed, so a change
//! applies to the next connection without restarting the proxy or the container.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::spec::egress::EgressEntry;

/// The file inside the proxy's directory.
pub const ALLOW_FILE: &str = "allow";

/// One line per entry, as `EgressEntry` prints it.
pub fn render(entries: &[EgressEntry]) -> String {
    entries.iter().map(|e| format!("{e}\n")).collect()
}

/// Lines that do not parse are skipped: the daemon wrote them from a validated spec, so
/// one only appears if someone else edited the file; never widen on a bad line.
pub fn parse(text: &str) -> Vec<EgressEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.parse().ok())
        .collect()
}

type Stamp = Option<(SystemTime, u64, u64)>;

/// The current allowlist, re-read when the file's (mtime, size, inode) changed.
pub struct Allowlist {
    path: PathBuf,
    cached: Mutex<(Stamp, Arc<Vec<EgressEntry>>)>,
}

impl Allowlist {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(ALLOW_FILE),
            cached: Mutex::new((None, Arc::new(Vec::new()))),
        }
    }

    /// The entries now. A missing or unreadable file is an empty list: refuse, never open.
    pub fn current(&self) -> Arc<Vec<EgressEntry>> {
        use std::os::unix::fs::MetadataExt;
        let stamp: Stamp = std::fs::metadata(&self.path).ok().map(|m| {
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                m.ino(),
            )
        });
        let mut cached = self.cached.lock().expect("allowlist lock");
        if stamp.is_some() && cached.0 == stamp {
            return cached.1.clone();
        }
        let entries = match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&text),
            Err(_) => Vec::new(),
        };
        *cached = (stamp, Arc::new(entries));
        cached.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_is_read_again_and_a_missing_one_allows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let list = Allowlist::new(dir.path());
        assert!(list.current().is_empty());
        let entries: Vec<EgressEntry> = vec!["a.example.com".parse().unwrap()];
        std::fs::write(dir.path().join(ALLOW_FILE), render(&entries)).unwrap();
        assert_eq!(*list.current(), entries);
        let tmp = dir.path().join("allow.new");
        std::fs::write(&tmp, "b.example.com:80\nnot valid!\n").unwrap();
        std::fs::rename(&tmp, dir.path().join(ALLOW_FILE)).unwrap();
        assert_eq!(list.current().len(), 1);
        assert_eq!(list.current()[0].to_string(), "b.example.com:80");
        std::fs::remove_file(dir.path().join(ALLOW_FILE)).unwrap();
        assert!(list.current().is_empty());
    }
}
