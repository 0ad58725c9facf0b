//! Processes of a test host as /proc and pidfds see them: a PID is never trusted alone,
//! so a reused PID is never mistaken for (or signalled as) the process we started.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;

use rustix::process::{Pid, PidfdFlags, Signal};

/// A process identified by PID and start time, so that a recorded PID that was reused by an
/// unrelated process is never mistaken for (or signalled as) the one we started.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    pub(crate) start: Option<u64>,
}

impl Proc {
    /// Alive and still the same process. A zombie counts as dead: an orphaned nspawn is
    /// reaped by this machine's PID 1 only 1-2 s after it exits.
    pub(crate) fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => state != 'Z' && self.start.is_none_or(|s| s == start),
            None => false,
        }
    }

    pub(crate) fn signal(&self, sig: Signal) -> io::Result<()> {
        let fd = PidFd::open(self.pid)?;
        // Checked after opening the pidfd: if it is still the same process now, the pidfd
        // refers to it and the signal cannot reach a PID reuser.
        if !self.alive() {
            return Err(rustix::io::Errno::SRCH.into());
        }
        fd.send_signal(sig)
    }
}

/// State letter and start time (clock ticks since boot) from /proc/<pid>/stat.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

pub(crate) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

pub(crate) fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    proc_status_field(pid, "PPid")?.parse().ok()
}

/// PID 1 of a PID namespace nested one level below ours: NSpid reads "<our pid> 1".
pub(crate) fn is_container_init(pid: u32) -> bool {
    proc_status_field(pid, "NSpid").is_some_and(|ns| {
        let ids: Vec<&str> = ns.split_whitespace().collect();
        ids.len() == 2 && ids[1] == "1"
    })
}

/// A Linux pidfd: a handle on one process that stays valid (and never aliases another
/// process) after the PID is reused.
#[derive(Debug)]
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    pub(crate) fn open(pid: u32) -> io::Result<PidFd> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::from(rustix::io::Errno::SRCH))?;
        Ok(PidFd(rustix::process::pidfd_open(
            pid,
            PidfdFlags::empty(),
        )?))
    }

    pub(crate) fn send_signal(&self, sig: Signal) -> io::Result<()> {
        Ok(rustix::process::pidfd_send_signal(&self.0, sig)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_reused_pid_is_not() {
        let me = std::process::id();
        assert!(Proc {
            pid: me,
            start: start_time(me)
        }
        .alive());
        assert!(!Proc {
            pid: me,
            start: start_time(me).map(|s| s + 1)
        }
        .alive());
    }
}
