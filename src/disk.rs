//! An agent's disk: every byte it writes on the host — its state and its credentials — against
//! its `disk_max` (spec, or hive.toml's default).
//!
//! The bound is a filesystem image per agent (`<state>/agents/<name>/disk.img`, ext4, sparse),
//! mounted through a loop device by a transient `.mount` unit at `…/<name>/disk`; the agent's
//! `state/` and `claude/` live in it (plan/disk.rs, hive/disk.rs). This kernel has no
//! CONFIG_QUOTA, so project quotas are no option here; an image bounds any host filesystem.
//! Where the host cannot make or mount one (no `/dev/loop-control`, no `mkfs.ext4`), nothing
//! bounds the bytes, and that is never silent: hive-c0re says so at its start and `hivectl
//! status` shows the use beside the bound with `NOT ENFORCED` (docs/persistence.md, "Disk").

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why no disk bound is enforced, as the daemon's start and `hivectl status` say it.
pub fn not_enforced(reason: &str) -> String {
    format!(
        "disk bounds (disk_max) are not enforced on this host: {reason}, so agents' state and \
         credentials share the host's filesystems (docs/persistence.md, \"Disk\")"
    )
}

/// The tools an image needs, looked up on the daemon's PATH: made, checked before it grows,
/// grown.
pub const TOOLS: [&str; 3] = ["mkfs.ext4", "e2fsck", "resize2fs"];

/// The device mount(8) asks for a free loop device.
pub const LOOP_CONTROL: &str = "/dev/loop-control";

/// Whether this host can bound agents' disks with images: `Err` says why not, in words
/// for the admin.
pub fn images_available() -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(LOOP_CONTROL) {
        Ok(m) if m.file_type().is_char_device() => {}
        _ => return Err(format!("{LOOP_CONTROL} is missing (no loop devices)")),
    }
    for tool in TOOLS {
        if find_program(tool).is_none() {
            return Err(format!("{tool} is not on PATH (install e2fsprogs)"));
        }
    }
    Ok(())
}

/// How long the filesystem tools may take on one agent's image (mkfs, e2fsck, resize2fs),
/// and a copy of its state into a new image: far above what they take (seconds for a
/// 10 GiB image), so only a stuck tool meets it. The agent's content is what they walk.
pub const FS_TOOL_BOUND: std::time::Duration = std::time::Duration::from_secs(5 * 60);
pub const COPY_BOUND: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Runs `cmd` to its end, or kills it at `bound`: its output, or an error that says it was
/// stopped. Blocking: for `spawn_blocking`.
pub fn output_within(
    mut cmd: std::process::Command,
    bound: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    let what = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = std::sync::mpsc::channel();
    // The waiter reaps the child, so until it answers the PID is still the child's.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out,
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            // Reaped at once, unless something it started still holds its pipes: then the
            // waiter is left to finish on its own.
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "{what} did not finish within {} s; stopped it",
                    bound.as_secs()
                ),
            ))
        }
    }
}

/// `name` on PATH (plus the sbin directories a daemon's PATH may lack), if executable.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        });
    found
}

/// Most directory entries one usage count reads: an agent decides how many files it has,
/// and `hivectl status` must still answer.
pub const MAX_ENTRIES: usize = 200_000;

/// What one agent uses of its disk bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskUse {
    /// Bytes in use: of its mounted image's filesystem (statvfs), of the image file on the
    /// host while it is not mounted, or allocated under its directories (no image).
    pub used: u64,
    /// False when the count stopped at [`MAX_ENTRIES`]: `used` is then a lower bound.
    pub complete: bool,
    pub max: u64,
    /// An image bounds it.
    pub enforced: bool,
    /// Its image, if it has one.
    pub image: Option<PathBuf>,
    /// Its image is mounted (the agent's container requires it).
    pub mounted: bool,
    /// The mounted filesystem's size (what the agent can fill; an image is never shrunk,
    /// so this may exceed a lowered `max`).
    pub size: Option<u64>,
    /// The directories counted (no image), or the mount point.
    pub dirs: Vec<PathBuf>,
}

impl DiskUse {
    /// At or above 90 % of the bound.
    pub fn near(&self) -> bool {
        let max = self.size.unwrap_or(self.max);
        u128::from(self.used) * 100 >= u128::from(max) * 90
    }
}

/// An agent's use with its image `image` mounted (or not) at `mount`: from the mounted
/// filesystem (statvfs), never by walking what the agent wrote.
pub fn image_usage(image: &Path, mount: &Path, max: u64) -> Option<DiskUse> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::symlink_metadata(image).ok()?;
    if !file.is_file() {
        return None;
    }
    let parent = mount.parent()?;
    let mounted = match (
        std::fs::symlink_metadata(mount),
        std::fs::symlink_metadata(parent),
    ) {
        (Ok(m), Ok(p)) => m.is_dir() && m.dev() != p.dev(),
        _ => false,
    };
    let (used, size) = if mounted {
        let st = rustix::fs::statvfs(mount).ok()?;
        let frsize = st.f_frsize;
        (
            st.f_blocks.saturating_sub(st.f_bfree) * frsize,
            Some(st.f_blocks * frsize),
        )
    } else {
        (file.blocks() * 512, None)
    };
    Some(DiskUse {
        used,
        complete: true,
        max,
        enforced: true,
        image: Some(image.to_path_buf()),
        mounted,
        size,
        dirs: vec![mount.to_path_buf()],
    })
}

/// Counts what `dirs` hold, without following links (an agent plants them) and without
/// leaving each directory's filesystem: an agent without an image.
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
        image: None,
        mounted: false,
        size: None,
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
    fn a_tool_that_never_ends_is_stopped_at_its_bound() {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        let t = std::time::Instant::now();
        let err = output_within(cmd, std::time::Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("sleep did not finish"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = output_within(cmd, std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

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

    #[test]
    fn an_unmounted_image_counts_what_it_takes_on_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(64 << 20).unwrap();
        std::fs::create_dir(dir.path().join("disk")).unwrap();
        let u = image_usage(&image, &dir.path().join("disk"), 64 << 20).unwrap();
        assert!(u.enforced && !u.mounted, "{u:?}");
        // Sparse: nothing written yet.
        assert!(u.used < 1 << 20, "{}", u.used);
        // A link where the image should be is not an image.
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&image, &link).unwrap();
        assert_eq!(image_usage(&link, &dir.path().join("disk"), 1), None);
    }
}
