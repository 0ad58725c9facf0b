//! File operations on trees an agent can write into (its state, credentials and runtime
//! dirs). The daemon runs as root; a path it resolves there could have been turned into a
//! symlink to anything on the host. So nothing here follows a symlink: directories are
//! opened with `RESOLVE_NO_SYMLINKS` / `O_NOFOLLOW`, and every change is made relative to
//! a directory descriptor (`mkdirat`, `unlinkat`, `fchmod`), never by path again.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

/// How deep [`remove_tree`] descends; deeper entries are reported, not removed, so an
/// agent cannot exhaust the daemon's descriptors or stack with a very deep tree.
const MAX_DEPTH: usize = 256;
/// Failures named in [`remove_tree`]'s error; the rest are counted.
const SHOWN_FAILURES: usize = 5;

/// Opens a directory by an absolute path, refusing a symlink in any component.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| anyhow!("opening {}: {}", path.display(), reason(e)))
}

/// `path` as a directory of root's, mode 0700: created if missing, tightened if present.
/// Refuses a symlink or anything but a directory there. Returns the open directory.
pub fn private_dir(path: &Path) -> Result<OwnedFd> {
    dir_with_mode(path, 0o700)
}

/// Like [`private_dir`] with another mode.
pub fn dir_with_mode(path: &Path, mode: u32) -> Result<OwnedFd> {
    let (parent, name) = split(path)?;
    let parent_fd = open_dir(parent)?;
    match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => bail!("creating {}: {}", path.display(), reason(e)),
    }
    let dir = rustix::fs::openat(
        &parent_fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| anyhow!("opening {}: {}", path.display(), reason(e)))?;
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
        .map_err(|e| anyhow!("setting mode {mode:o} on {}: {}", path.display(), reason(e)))?;
    Ok(dir)
}

/// Checks that `path` (resolved without following symlinks) is still the directory `dir`
/// was opened as.
pub fn same_dir(dir: &OwnedFd, path: &Path) -> Result<()> {
    let opened =
        rustix::fs::fstat(dir).map_err(|e| anyhow!("{}: {}", path.display(), reason(e)))?;
    let now = rustix::fs::fstat(open_dir(path)?)
        .map_err(|e| anyhow!("{}: {}", path.display(), reason(e)))?;
    if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino) {
        bail!("{} was replaced while in use", path.display());
    }
    Ok(())
}

/// Removes `name` from the open directory `dir` if it is there and not a directory.
pub fn remove_file_in(dir: &OwnedFd, name: &str, shown: &Path) -> Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => bail!("removing {}: {}", shown.display(), reason(e)),
    }
}

/// Removes a whole tree without following any symlink in it, going on past entries it
/// cannot remove (immutable, busy, too deep) and naming them in the error. A tree that is
/// already gone is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    let (parent, name) = split(path)?;
    let parent_fd = match open_dir(parent) {
        Ok(fd) => fd,
        Err(_) if !parent.exists() => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    remove_entry(&parent_fd, OsString::from(name), path, 0, &mut failures);
    if failures.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = failures
        .iter()
        .take(SHOWN_FAILURES)
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect();
    let more = failures.len().saturating_sub(SHOWN_FAILURES);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    bail!(
        "could not remove {} of {}: {}{more}; the rest was removed",
        if failures.len() == 1 {
            "1 entry".to_string()
        } else {
            format!("{} entries", failures.len())
        },
        path.display(),
        shown.join(", ")
    )
}

fn remove_entry(
    parent: &OwnedFd,
    name: OsString,
    shown: &Path,
    depth: usize,
    failures: &mut Vec<(PathBuf, String)>,
) {
    let stat = match rustix::fs::statat(parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return,
        Err(e) => return failures.push((shown.to_owned(), reason(e))),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        if depth >= MAX_DEPTH {
            return failures.push((shown.to_owned(), format!("nested deeper than {MAX_DEPTH}")));
        }
        match rustix::fs::openat(
            parent,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(dir) => {
                for child in entries(&dir, shown, failures) {
                    let child_path = shown.join(&child);
                    remove_entry(&dir, child, &child_path, depth + 1, failures);
                }
            }
            Err(e) => return failures.push((shown.to_owned(), reason(e))),
        }
        match rustix::fs::unlinkat(parent, &name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            // Its own failed entries are already named; the directory adds nothing.
            Err(Errno::NOTEMPTY) if !failures.is_empty() => {}
            Err(e) => failures.push((shown.to_owned(), reason(e))),
        }
    } else {
        match rustix::fs::unlinkat(parent, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => failures.push((shown.to_owned(), reason(e))),
        }
    }
}

fn entries(dir: &OwnedFd, shown: &Path, failures: &mut Vec<(PathBuf, String)>) -> Vec<OsString> {
    let mut names = Vec::new();
    let mut reader = match rustix::fs::Dir::read_from(dir.as_fd()) {
        Ok(r) => r,
        Err(e) => {
            failures.push((shown.to_owned(), format!("listing: {}", reason(e))));
            return names;
        }
    };
    while let Some(entry) = reader.read() {
        match entry {
            Ok(e) => {
                let bytes = e.file_name().to_bytes();
                if bytes != b"." && bytes != b".." {
                    names.push(OsString::from_vec(bytes.to_vec()));
                }
            }
            Err(e) => {
                failures.push((shown.to_owned(), format!("listing: {}", reason(e))));
                break;
            }
        }
    }
    names
}

fn split(path: &Path) -> Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if path.is_absolute() => Ok((parent, name)),
        _ => Err(anyhow!(
            "{}: not an absolute path to an entry",
            path.display()
        ))
        .context("internal"),
    }
}

/// An errno as an admin reads it, with the likely cause where one is typical here.
fn reason(e: Errno) -> String {
    let io = std::io::Error::from(e);
    match e {
        Errno::PERM => format!("{io}; immutable or append-only? see lsattr, chattr -i"),
        Errno::LOOP | Errno::XDEV | Errno::NOTDIR => {
            format!("{io}; a symlink or file is in the way and is not followed")
        }
        _ => io.to_string(),
    }
}

/// "No such file or directory" without Rust's "(os error 2)" suffix: how an I/O error reads
/// in a one-line refusal, from the daemon or from hivectl.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_never_follows_a_symlink_out() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path().join("agent");
        std::fs::create_dir_all(root.join("state/deep")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("state/link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep"), root.join("state/deep/f")).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn remove_tree_of_a_missing_tree_is_fine() {
        let tree = tempfile::tempdir().unwrap();
        remove_tree(&tree.path().join("gone")).unwrap();
    }

    #[test]
    fn open_dir_refuses_a_symlinked_component() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("real")).unwrap();
        std::os::unix::fs::symlink(tree.path().join("real"), tree.path().join("link")).unwrap();
        assert!(open_dir(&tree.path().join("real")).is_ok());
        let err = open_dir(&tree.path().join("link")).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        let err = private_dir(&tree.path().join("link"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("link"), "{err}");
    }
}
