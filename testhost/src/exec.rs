//! Commands aimed at a test host: run inside it (nsenter), or host-side systemd tools on
//! its bus; and the nspawn arguments a boot is made of.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Result};

/// The command [`TestHost::run`] uses: `argv` inside the container whose PID 1 is `leader`.
/// `path` with `dir` in front when `dir` holds hyperhive's binaries (hivectl): the
/// directory `hive-testhost` was built into, bound into every test host at the same path.
pub fn path_with_bins(dir: &Path, path: &str) -> Option<String> {
    dir.join("hivectl")
        .is_file()
        .then(|| format!("{}:{path}", dir.display()))
}

pub fn nsenter_command(leader: u32, argv: &[impl AsRef<OsStr>]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &leader.to_string(), "-a"])
        .args(argv)
        // nsenter passes our environment in: an exported bus address or notify socket would
        // make tools inside (machinectl, systemd-notify) talk to the wrong place.
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    cmd
}

/// A host-side `systemctl`/`systemd-run`/`busctl` aimed at a test host's bus.
///
/// Those tools refuse to work unless the machine looks booted with systemd
/// (/run/systemd/system exists), and as root they prefer /run/systemd/private, which is not
/// usable from outside the container. So the command runs in a private mount namespace with an
/// empty tmpfs on /run/systemd that contains just `system/`.
pub fn ctl_command(bus_address: &str, argv: &[impl AsRef<OsStr>]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs hive /run/systemd && mkdir /run/systemd/system && exec \"$@\"")
        .arg("ctl")
        .args(argv)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
        .stdin(Stdio::null());
    cmd
}

pub(crate) fn failed_output(msg: String) -> Output {
    use std::os::unix::process::ExitStatusExt as _;
    Output {
        status: std::process::ExitStatus::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: msg.into_bytes(),
    }
}

/// nspawn splits `--bind=` on ':' (its escape for a literal colon is easy to get wrong).
pub(crate) fn check_bind_path(path: &Path) -> Result<()> {
    let s = path.to_string_lossy();
    if !path.is_absolute() || s.contains(':') || s.contains(',') {
        bail!("bind path {s:?} must be absolute and contain no ':' or ','");
    }
    Ok(())
}

pub(crate) fn bind_ro(src: &Path, dst: &str) -> String {
    format!("--bind-ro={}:{dst}", src.display())
}

pub(crate) fn bind_rw(src: &Path, dst: &str) -> String {
    format!("--bind={}:{dst}", src.display())
}

pub(crate) fn bus_address_of(state: &Path) -> String {
    format!("unix:path={}/run-dbus/system_bus_socket", state.display())
}

/// The container's machine id; fresh per boot so journals of different boots do not mix.
pub(crate) fn new_id128() -> Result<String> {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")?;
    Ok(uuid.trim().replace('-', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_binaries_go_first_on_path_only_where_they_are() {
        let dir = std::env::temp_dir().join(format!("testhost-bins-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(path_with_bins(&dir, "/usr/bin"), None);
        fs::write(dir.join("hivectl"), "").unwrap();
        assert_eq!(
            path_with_bins(&dir, "/usr/bin"),
            Some(format!("{}:/usr/bin", dir.display()))
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
