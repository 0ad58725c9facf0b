//! A test host on disk: its name and state dir under [`STATE_ROOT`], and the record
//! (`host.json`) of its nspawn, container PID 1 and owning process that lets another
//! process find, stop or reap it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::procs::{start_time, Proc};
use crate::teardown::{cleanup, stop};
use crate::STATE_ROOT;
use anyhow::{bail, Context as _, Result};

/// Unique default names within this process; the PID makes them unique across processes.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Picks the host's name and creates its empty state dir, wiping a stale one of the same name.
pub(crate) fn claim_state_dir(requested: Option<&str>) -> Result<(String, PathBuf)> {
    fs::create_dir_all(STATE_ROOT).with_context(|| format!("creating {STATE_ROOT}"))?;
    let _ = fs::set_permissions(STATE_ROOT, fs::Permissions::from_mode(0o755));
    loop {
        let name = match requested {
            Some(n) => n.to_string(),
            None => format!(
                "hvt-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        };
        check_name(&name)?;
        let state = Path::new(STATE_ROOT).join(&name);
        if state.exists() {
            if let Some(record) = read_record(&state) {
                if record.in_use() {
                    if requested.is_some() {
                        bail!(
                            "test host {name} is already up (state in {})",
                            state.display()
                        );
                    }
                    continue; // an earlier process with our PID left it running: skip its name
                }
                stop(&record).with_context(|| format!("stopping the stale test host {name}"))?;
            }
            cleanup(&name, &state);
        }
        match fs::create_dir(&state) {
            Ok(()) => return Ok((name, state)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && requested.is_none() => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", state.display())),
        }
    }
}

/// Machine names end up in paths and in nspawn's `-M`, which must be a valid hostname.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if !ok {
        bail!("invalid test host name {name:?}: use 1-64 of [A-Za-z0-9.-]");
    }
    Ok(())
}

/// The state dir of the test host `name` (whether or not it is up).
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// The leader (container PID 1) of a running, possibly detached, test host.
pub fn leader_of(name: &str) -> Result<u32> {
    check_name(name)?;
    let state = state_dir(name);
    let record = read_record(&state).with_context(|| format!("test host {name} is not up"))?;
    match record.leader {
        Some(leader) if record.nspawn_alive() && leader.alive() => Ok(leader.pid),
        _ => bail!("test host {name} is not up"),
    }
}

#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) nspawn: Proc,
    pub(crate) leader: Option<Proc>,
    pub(crate) owner: Option<Proc>,
}

impl Record {
    pub(crate) fn nspawn_alive(&self) -> bool {
        self.nspawn.alive()
    }

    /// Running, and either detached or owned by a live process. Anything else is stale.
    pub(crate) fn in_use(&self) -> bool {
        self.nspawn_alive() && self.owner.as_ref().is_none_or(Proc::alive)
    }
}

/// Reads `<state>/host.json`, falling back to testhost.sh's `nspawn.pid`/`leader.pid`.
pub(crate) fn read_record(state: &Path) -> Option<Record> {
    let name = state.file_name()?.to_str()?.to_string();
    let proc_at = |v: &serde_json::Value, pid: &str, start: &str| -> Option<Proc> {
        Some(Proc {
            pid: u32::try_from(v.get(pid)?.as_u64()?).ok()?,
            start: v.get(start).and_then(serde_json::Value::as_u64),
        })
    };
    if let Ok(text) = fs::read_to_string(state.join("host.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        return Some(Record {
            name,
            nspawn: proc_at(&v, "nspawn_pid", "nspawn_start")?,
            leader: proc_at(&v, "leader_pid", "leader_start"),
            owner: proc_at(&v, "owner_pid", "owner_start"),
        });
    }
    let pid_file = |f: &str| -> Option<Proc> {
        let pid = fs::read_to_string(state.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(Proc { pid, start: None })
    };
    Some(Record {
        name,
        nspawn: pid_file("nspawn.pid")?,
        leader: pid_file("leader.pid"),
        owner: None,
    })
}

/// Writes `host.json` (and testhost.sh's plain pid files, for shell use) for the host
/// `name` in `state`; `owned` records this process as its owner, so that the host counts as
/// leaked once this process is gone.
pub(crate) fn write_record(
    state: &Path,
    name: &str,
    npid: u32,
    leader: u32,
    owned: bool,
    bus_address: &str,
) -> Result<()> {
    let owner = std::process::id();
    let record = serde_json::json!({
        "name": name,
        "nspawn_pid": npid,
        "nspawn_start": start_time(npid),
        "leader_pid": if leader == 0 { None } else { Some(leader) },
        "leader_start": if leader == 0 { None } else { start_time(leader) },
        "owner_pid": if owned { Some(owner) } else { None },
        "owner_start": if owned { start_time(owner) } else { None },
        "bus_address": bus_address,
    });
    write_atomic(&state.join("host.json"), &format!("{record:#}\n"))?;
    write_atomic(&state.join("nspawn.pid"), &format!("{npid}\n"))?;
    if leader != 0 {
        write_atomic(&state.join("leader.pid"), &format!("{leader}\n"))?;
    }
    Ok(())
}

pub(crate) fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("hvt-1-2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a_b").is_err());
    }
}
