//! Reads what the defaults need from the host: `<config>/hive.toml` and the host's memory
//! (`/proc/meminfo`). The rules themselves are pure, in spec/bounds.rs.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::spec::bounds::{Defaults, DEFAULTS_FILE};

/// The defaults every agent gets, from `<config>/hive.toml` over the shipped ones. A file
/// that does not parse stops the daemon at its start, in one line: agents must never run
/// with bounds other than the admin wrote.
pub fn load_defaults(config_root: &Path) -> Result<Defaults> {
    let memory = host_memory()?;
    let path = config_root.join(DEFAULTS_FILE);
    let defaults = read_defaults(config_root)?;
    log::info!(
        "agent defaults: memory_max={} tasks_max={} cpu_weight={} disk_max={} (host memory {memory}; {})",
        defaults.memory_max,
        defaults.tasks_max,
        defaults.cpu_weight,
        defaults.disk_max,
        if path.exists() { path.display().to_string() } else { "shipped".into() },
    );
    Ok(defaults)
}

/// The defaults as `<config>/hive.toml` says now, without a word in the log.
pub fn read_defaults(config_root: &Path) -> Result<Defaults> {
    let memory = host_memory()?;
    let path = config_root.join(DEFAULTS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Defaults::from_toml(&text, &path.display().to_string(), memory)
            .map_err(anyhow::Error::msg),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Defaults::shipped(memory)),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The host's memory in bytes (`MemTotal` of /proc/meminfo).
pub fn host_memory() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    parse_meminfo(&text).context("/proc/meminfo has no MemTotal")
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn memtotal_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(super::parse_meminfo(text), Some(24_576_000 * 1024));
        assert_eq!(super::parse_meminfo("MemFree: 1 kB\n"), None);
    }
}
