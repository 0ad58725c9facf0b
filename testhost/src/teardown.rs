//! Stopping test hosts and removing everything they leave on this machine, for a host
//! dropped by its test, one named by `hive-testhost down`, and ones leaked by killed runs.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::cgroups::remove_host_cgroups;
use crate::record::{check_name, read_record, state_dir, Record};
use crate::{warn, ABANDONED_AFTER, STATE_ROOT, TEARDOWN_TIMEOUT};
use anyhow::{bail, Result};
use rustix::process::Signal;

/// Stops a test host by name, e.g. one left running by `hive-testhost up`: kills its PID 1,
/// waits for its nspawn to exit and removes its state.
pub fn down(name: &str) -> Result<()> {
    check_name(name)?;
    let state = state_dir(name);
    if !state.exists() {
        bail!(
            "test host {name} is not up ({} does not exist)",
            state.display()
        );
    }
    match read_record(&state) {
        Some(record) => stop(&record)?,
        None => {
            if fs::symlink_metadata(state.join("host.json")).is_ok() {
                bail!("cannot read {}/host.json", state.display());
            }
        }
    }
    cleanup(name, &state);
    Ok(())
}

/// Removes the state of every test host whose nspawn is gone, and stops and removes the
/// hosts of test processes that died without tearing them down (killed test runs). Hosts of
/// live processes and detached hosts are left alone. Returns the names of the hosts removed.
pub fn reap_stale() -> Vec<String> {
    let mut reaped = Vec::new();
    let Ok(entries) = fs::read_dir(STATE_ROOT) else {
        return reaped;
    };
    for entry in entries.flatten() {
        let state = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if check_name(&name).is_err() || !state.is_dir() {
            continue;
        }
        let stale = match read_record(&state) {
            // The container may outlive a SIGKILLed nspawn, so it is stopped either way.
            Some(record) => !record.in_use() && stop(&record).is_ok(),
            // No record yet: a boot in progress, unless it was abandoned long ago.
            None => fs::metadata(&state)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ABANDONED_AFTER),
        };
        if stale {
            cleanup(&name, &state);
            reaped.push(name);
        }
    }
    reaped
}

/// Stops the host described by `record`: SIGKILL to its PID 1, then waits for its nspawn.
pub(crate) fn stop(record: &Record) -> Result<()> {
    let killed = record
        .leader
        .as_ref()
        .is_some_and(|leader| leader.signal(Signal::KILL).is_ok());
    if !killed {
        // No live PID 1 recorded: ask nspawn for an orderly stop instead.
        let _ = record.nspawn.signal(Signal::TERM);
    }
    let t0 = Instant::now();
    while record.nspawn.alive() && t0.elapsed() < TEARDOWN_TIMEOUT {
        std::thread::sleep(Duration::from_millis(5));
    }
    if record.nspawn.alive() {
        let _ = record.nspawn.signal(Signal::KILL);
        std::thread::sleep(Duration::from_millis(100));
        if record.nspawn.alive() {
            bail!(
                "nspawn {} of test host {} does not die",
                record.nspawn.pid,
                record.name
            );
        }
    }
    Ok(())
}

/// Removes everything a host leaves behind on the host side. Never panics: it runs in Drop.
pub(crate) fn cleanup(name: &str, state: &Path) {
    remove_host_cgroups(name);
    // The stale bus socket survives a shutdown and would make a client hang or fail oddly.
    let _ = fs::remove_dir_all(state.join("run-dbus"));
    let _ = fs::remove_file(state.join("notify.sock"));
    remove_state_dir(state);
    let propagate = Path::new("/run/systemd/nspawn/propagate").join(name);
    if fs::symlink_metadata(&propagate).is_ok() {
        if has_mounts_under(&propagate) {
            warn(&format!(
                "not removing {}: still mounted",
                propagate.display()
            ));
        } else if let Err(e) = fs::remove_dir_all(&propagate) {
            warn(&format!("cannot remove {}: {e}", propagate.display()));
        }
    }
}

/// `remove_dir_all` would descend into anything still mounted below the state dir (an
/// extra bind source, say, if a mount leaked into our namespace), so refuse in that case.
pub(crate) fn remove_state_dir(state: &Path) {
    if has_mounts_under(state) {
        warn(&format!(
            "not removing {}: something is mounted below it",
            state.display()
        ));
        return;
    }
    if let Err(e) = fs::remove_dir_all(state) {
        if e.kind() != io::ErrorKind::NotFound {
            warn(&format!("cannot remove {}: {e}", state.display()));
        }
    }
}

pub(crate) fn has_mounts_under(dir: &Path) -> bool {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let dir = dir.to_string_lossy();
    let under = format!("{dir}/");
    mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(unescape_mountinfo)
            .is_some_and(|mp| mp == dir || mp.starts_with(&under))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trail\\04"), "/trail\\04");
    }
}
