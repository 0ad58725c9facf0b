//! Which operating system tree a test host boots.
//!
//! `machine` (the default) boots this machine's own `/usr`: Debian 12, systemd 252, on the
//! machine's hybrid cgroup hierarchy. `debian13` boots a Debian 13 tree — systemd 257 on a
//! pure cgroup v2 hierarchy, as our users' NixOS hosts run — built once with debootstrap
//! and cached at [`DEBIAN13_TREE`]. Chosen with `HYPERHIVE_TESTHOST_OS`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// The environment variable that picks the OS: `machine` (default) or `debian13`.
pub const ENV: &str = "HYPERHIVE_TESTHOST_OS";

/// Where the Debian 13 tree is cached between runs.
pub const DEBIAN13_TREE: &str = "/var/cache/hyperhive-testhost/debian13";

/// Written last by a complete build, holding [`PACKAGES`]: a tree without it, or built
/// with another package list, is rebuilt.
const COMPLETE: &str = ".hyperhive-testhost-complete";

/// What the tree holds beyond `minbase`: systemd and its bus, nspawn for the agents, and
/// every tool the tests run inside a test host.
const PACKAGES: &str = "systemd,systemd-sysv,dbus,systemd-container,python3,iproute2,passwd,\
util-linux,e2fsprogs,procps,sqlite3,curl";

const MIRROR: &str = "http://deb.debian.org/debian";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostOs {
    /// This machine's own `/usr`.
    #[default]
    Machine,
    /// A cached Debian 13 (trixie) tree: systemd 257, cgroup v2 only.
    Debian13,
}

impl HostOs {
    /// From [`ENV`]; unset or empty is [`HostOs::Machine`].
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENV).unwrap_or_default().as_str() {
            "" | "machine" => Ok(Self::Machine),
            "debian13" => Ok(Self::Debian13),
            other => bail!("{ENV}={other:?}: use machine or debian13"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Debian13 => "debian13",
        }
    }

    /// The directory nspawn boots (`-D`), building the Debian 13 tree first if needed.
    pub fn root(self) -> Result<PathBuf> {
        match self {
            Self::Machine => Ok(PathBuf::from("/")),
            Self::Debian13 => debian13_tree(),
        }
    }

    /// nspawn's environment for this OS: systemd 257 gets a pure cgroup v2 hierarchy, as
    /// on our users' hosts; this machine's systemd keeps its hybrid one.
    pub fn nspawn_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Self::Machine => vec![],
            Self::Debian13 => vec![("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")],
        }
    }
}

/// The cached Debian 13 tree, built with debootstrap when it is missing or incomplete.
/// Tests of one process share one build; a second process finds the finished tree, or
/// builds its own beside it and renames it into place (the rename is atomic).
pub fn debian13_tree() -> Result<PathBuf> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let tree = PathBuf::from(DEBIAN13_TREE);
    let complete = |t: &std::path::Path| {
        std::fs::read_to_string(t.join(COMPLETE)).is_ok_and(|p| p == PACKAGES)
    };
    if complete(&tree) {
        return Ok(tree);
    }
    let build = tree.with_extension(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&build);
    if let Some(parent) = build.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    eprintln!(
        "testhost: building the Debian 13 tree at {} (debootstrap, about a minute)",
        tree.display()
    );
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            "trixie",
        ])
        .arg(&build)
        .arg(MIRROR)
        .output()
        .context("running debootstrap (apt-get install debootstrap)")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&build);
        bail!(
            "debootstrap of Debian 13 into {} failed ({}): {}",
            build.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    std::fs::write(build.join(COMPLETE), PACKAGES)?;
    if complete(&tree) {
        // Another process finished first.
        let _ = std::fs::remove_dir_all(&build);
        return Ok(tree);
    }
    // An incomplete or outdated tree is in the way.
    if tree.exists() {
        std::fs::remove_dir_all(&tree)
            .with_context(|| format!("removing the incomplete {}", tree.display()))?;
    }
    std::fs::rename(&build, &tree)
        .with_context(|| format!("moving {} to {}", build.display(), tree.display()))?;
    Ok(tree)
}
