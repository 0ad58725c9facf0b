//! A throwaway, real systemd for hyperhive's integration tests and demo.
//!
//! The host this runs on does not have systemd as PID 1, yet hyperhive talks to systemd over
//! D-Bus. So each test boots its own systemd in `systemd-nspawn --volatile=yes -D /`: the root is
//! a tmpfs and the host's `/usr` is mounted read-only, which is what keeps this safe. Booting
//! systemd on the host's writable `/` would let its boot-time `systemd-tmpfiles --remove` wipe
//! the host's `/tmp`.
//!
//! This is a port of `testhost.sh` (`up`, `down`, `sh`, `ctl`): the project has to carry its own
//! test host, and a Rust fixture can tear the container down from `Drop`, even when a test panics.
//!
//! ```no_run
//! let host = testhost::TestHost::boot(testhost::Options::default()).unwrap();
//! assert_eq!(host.show("dbus.service", "ActiveState"), "active");
//! // dropping `host` kills the container
//! ```

mod cgroups;
pub use cgroups::has_v1_controllers;
mod console;
mod exec;
mod host;
pub mod os;
mod procs;
mod record;
mod teardown;
mod units;

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

pub use exec::{ctl_command, nsenter_command, path_with_bins};
pub use host::TestHost;
pub use os::HostOs;
pub use record::{leader_of, state_dir};
pub use teardown::{down, reap_stale};
pub use units::rewrite_exec_lines;

/// Where every test host keeps its state: `<STATE_ROOT>/<name>/`.
///
/// Under /var/tmp rather than /tmp so that nothing that cleans /tmp races a running host, and
/// so the paths are short enough for the notify socket (`sun_path` is 108 bytes).
pub const STATE_ROOT: &str = "/var/tmp/hyperhive-testhost";

/// How long teardown waits for nspawn to exit after its container's PID 1 was killed.
pub(crate) const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A state dir without a readable record older than this is an abandoned boot, not one in
/// progress in another process.
pub(crate) const ABANDONED_AFTER: Duration = Duration::from_secs(120);

pub(crate) fn warn(msg: &str) {
    // eprintln! panics if stderr is gone; this runs in Drop.
    let _ = writeln!(io::stderr(), "testhost: {msg}");
}

/// How to boot a test host. `Options::default()` boots a bare systemd with D-Bus, journald and
/// machined, and nothing of the project's.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Machine name (nspawn `-M`) and state dir name. Default: a unique `hvt-<pid>-<counter>`.
    pub name: Option<String>,
    /// Directory with the built binaries (e.g. `target/debug`). It is bound read-only at the
    /// same path inside, so a path computed on the host is valid in the container too, and
    /// unit `ExecStart=` lines naming the project's binaries are rewritten to point here.
    pub bin_dir: Option<PathBuf>,
    /// The project's `units/` tree in install layout (`systemd/system/`, `dbus-1/system.d/`,
    /// `tmpfiles.d/`, `sysusers.d/`); any of those subdirectories may be missing.
    pub units_dir: Option<PathBuf>,
    /// Also start `hive-c0re.service` (from `units_dir`) as part of the boot target. It is
    /// `Type=notify`, so `boot` then returns only once the daemon has said READY=1, and fails
    /// (with the daemon's journal) if the daemon is not active by then.
    pub start_daemon: bool,
    /// Extra read-write binds `(host path, container path)`, for tests that keep state across
    /// reboots of the test host.
    pub extra_binds: Vec<(PathBuf, PathBuf)>,
    /// The OS tree to boot; `None` reads [`os::ENV`] (default: this machine's own).
    pub os: Option<HostOs>,
    /// On a hybrid host (this machine), give the test host its own writable v1 `pids`,
    /// `memory` and `cpu` hierarchies, so its systemd enforces `TasksMax=`, `MemoryMax=`
    /// and `CPUWeight=`. nspawn mounts v1 controllers read-only into a container; the
    /// host's cgroups are made for it before nspawn starts (so its cgroup namespace is
    /// rooted there), remounted writable once it has booted, and systemd is re-executed to
    /// take them up. No effect on a pure cgroup2 host (Debian 13's side), which has no
    /// controllers to give (docs/testing.md).
    pub v1_controllers: bool,
    /// Give the test host loop devices, so a filesystem image can be mounted in it (the
    /// per-agent disk images of docs/persistence.md, "Disk"): the host's
    /// `/dev/loop-control` is bound in, and block nodes `/dev/loop0`..`/dev/loop{N}` are
    /// made in the container's own `/dev` once it has booted (no udev runs there to make
    /// them as the kernel adds devices). It also keeps `CAP_SYS_RESOURCE`, which nspawn
    /// drops and growing a mounted ext4 (`resize2fs` online) needs. Loop devices are the machine's: what a test
    /// attaches is detached when its mount is stopped, or by the kernel when the test host
    /// is torn down and the last reference goes (autoclear).
    pub loop_devices: bool,
}

/// How many loop block nodes a test host with [`Options::loop_devices`] gets: the kernel
/// hands out the lowest free device, and other test hosts may hold some.
pub const LOOP_NODES: u32 = 64;
