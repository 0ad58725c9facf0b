//! The resource bounds every agent gets unless its spec says otherwise: the daemon-wide
//! defaults file (`<config root>/hive.toml`, table `[agents]`), the shipped defaults
//! derived from the host's size, and one agent's effective bounds. Pure: the daemon reads
//! the file and the host's memory (`hive::bounds`) and hands the text and the number in.

use serde::{Deserialize, Serialize};

use super::size::{parse_bytes, Size};
use super::{one_line, AgentSpec};

/// The defaults file's name under the config root (`/etc/hyperhive/hive.toml`).
pub const DEFAULTS_FILE: &str = "hive.toml";

/// Shipped default of `tasks_max`: room for a build with parallel jobs and a browser, far
/// below what a fork loop reaches, and a small share of the host's (systemd's own default
/// per unit is 15 % of the kernel's limit, ~29,000 on a 24 GiB host).
pub const SHIPPED_TASKS_MAX: u64 = 4096;
/// Shipped default of `cpu_weight`: systemd's own, so agents share the CPU equally with
/// each other and with the host's services.
pub const SHIPPED_CPU_WEIGHT: u64 = 100;
/// Shipped default of `disk_max`: 10 GiB for state, credentials and journal together.
pub const SHIPPED_DISK_MAX: u64 = 10 << 30;
/// Shipped default of `memory_max`: this share of the host's memory, in percent...
pub const SHIPPED_MEMORY_PERCENT: u64 = 25;
/// ...but never less than this, so an agent on a small host can still boot its systemd.
pub const MIN_SHIPPED_MEMORY_MAX: u64 = 512 << 20;
/// `MemoryHigh=` is this share of `MemoryMax=` (percent): past it the kernel reclaims and
/// throttles the agent, so it slows down before it is OOM-killed at `MemoryMax=`.
pub const MEMORY_HIGH_PERCENT: u64 = 90;

/// The defaults every agent gets, resolved to numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Defaults {
    pub memory_max: u64,
    pub tasks_max: u64,
    pub cpu_weight: u64,
    pub disk_max: u64,
}

/// One agent's bounds: its spec's where set, the defaults otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub memory_max: u64,
    /// Below `memory_max`: where the kernel starts throttling.
    pub memory_high: u64,
    pub tasks_max: u64,
    pub cpu_weight: u64,
    pub disk_max: u64,
}

/// `hive.toml` as written. Unknown keys are refused: a misspelt bound must not leave
/// agents with the shipped one silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HiveFile {
    #[serde(default)]
    agents: AgentsTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsTable {
    /// Bytes (`2G`, `512M`, a number) or a share of the host's memory (`25%`).
    memory_max: Option<Size>,
    tasks_max: Option<u64>,
    cpu_weight: Option<u64>,
    disk_max: Option<Size>,
}

/// Systemd keeps these as u64 but specs are TOML (i64); nothing larger is useful.
const LIMIT: u64 = i64::MAX as u64;

impl Defaults {
    /// What hyperhive ships, for a host with `host_memory` bytes of RAM.
    pub fn shipped(host_memory: u64) -> Self {
        let share = percent(host_memory, SHIPPED_MEMORY_PERCENT);
        Self {
            memory_max: share.max(MIN_SHIPPED_MEMORY_MAX),
            tasks_max: SHIPPED_TASKS_MAX,
            cpu_weight: SHIPPED_CPU_WEIGHT,
            disk_max: SHIPPED_DISK_MAX,
        }
    }

    /// The shipped defaults with `hive.toml`'s `[agents]` laid over them. The error is one
    /// line naming the file and the key.
    pub fn from_toml(text: &str, origin: &str, host_memory: u64) -> Result<Self, String> {
        let file: HiveFile = toml::from_str(text)
            .map_err(|e| format!("{origin}: {}", one_line(e.message().trim())))?;
        let bad = |key: &str, why: String| format!("{origin}: agents.{key}: {why}");
        let mut out = Self::shipped(host_memory);
        let t = file.agents;
        if let Some(m) = &t.memory_max {
            out.memory_max = memory_amount(m, host_memory).map_err(|e| bad("memory_max", e))?;
        }
        if let Some(n) = t.tasks_max {
            if !(1..=LIMIT).contains(&n) {
                return Err(bad("tasks_max", format!("{n}: must be 1..={LIMIT}")));
            }
            out.tasks_max = n;
        }
        if let Some(w) = t.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return Err(bad("cpu_weight", format!("{w}: must be 1..=10000")));
            }
            out.cpu_weight = w;
        }
        if let Some(d) = &t.disk_max {
            let bytes = d.bytes().map_err(|e| bad("disk_max", e.to_string()))?;
            check_disk_max(bytes).map_err(|e| bad("disk_max", e))?;
            out.disk_max = bytes;
        }
        Ok(out)
    }

    /// One agent's bounds: what its spec sets wins.
    pub fn for_agent(&self, spec: &AgentSpec) -> Bounds {
        let memory_max = spec.memory_max.unwrap_or(self.memory_max);
        Bounds {
            memory_max,
            memory_high: memory_high(memory_max),
            tasks_max: spec.tasks_max.unwrap_or(self.tasks_max),
            cpu_weight: spec.cpu_weight.unwrap_or(self.cpu_weight),
            disk_max: spec.disk_max.unwrap_or(self.disk_max),
        }
    }
}

/// `MemoryHigh=` for a `MemoryMax=`: [`MEMORY_HIGH_PERCENT`] of it, always below it.
pub fn memory_high(memory_max: u64) -> u64 {
    let high = percent(memory_max, MEMORY_HIGH_PERCENT);
    high.min(memory_max.saturating_sub(1)).max(1)
}

/// `pct` percent of `n`, rounded down, without overflowing.
fn percent(n: u64, pct: u64) -> u64 {
    (u128::from(n) * u128::from(pct) / 100) as u64
}

/// Smallest `disk_max`: an agent's journal alone takes a few MiB, and a filesystem image
/// below this has no room for its own metadata.
pub const MIN_DISK_MAX: u64 = 64 << 20;

/// Checks a disk bound in bytes.
pub fn check_disk_max(bytes: u64) -> Result<(), String> {
    if bytes < MIN_DISK_MAX {
        return Err(format!("{bytes} bytes: must be at least 64M"));
    }
    if bytes > LIMIT {
        return Err(format!("{bytes} bytes: must be at most {LIMIT}"));
    }
    Ok(())
}

fn memory_amount(size: &Size, host_memory: u64) -> Result<u64, String> {
    let bytes = match size {
        Size::Text(t) if t.trim().ends_with('%') => {
            let pct: u64 = t
                .trim()
                .trim_end_matches('%')
                .parse()
                .map_err(|_| format!("{t:?}: a share of the host's memory is 1% to 100%"))?;
            if !(1..=100).contains(&pct) {
                return Err(format!("{t:?}: a share of the host's memory is 1% to 100%"));
            }
            percent(host_memory, pct)
        }
        other => other.bytes().map_err(|e| e.to_string())?,
    };
    if bytes == 0 || bytes > LIMIT {
        return Err(format!("{bytes} bytes: must be 1..={LIMIT}"));
    }
    Ok(bytes)
}

/// Parses a `--disk-max`/`disk_max` value as bytes (K, M, G, T suffixes).
pub fn parse_disk_max(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text).map_err(|e| e.to_string())?;
    check_disk_max(bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AgentName, SpecFile};

    const GIB: u64 = 1 << 30;

    fn spec(extra: &str) -> AgentSpec {
        let name = AgentName::parse("alice").unwrap();
        let file = SpecFile::from_toml(&format!("root = \"/srv/a\"\n{extra}"), "t").unwrap();
        AgentSpec::validate(&name, &file).unwrap()
    }

    #[test]
    fn shipped_defaults_follow_the_hosts_memory() {
        let d = Defaults::shipped(24 * GIB);
        assert_eq!(d.memory_max, 6 * GIB);
        assert_eq!(d.tasks_max, 4096);
        assert_eq!(d.cpu_weight, 100);
        assert_eq!(d.disk_max, 10 * GIB);
        // A tiny host still gives an agent room to boot.
        assert_eq!(Defaults::shipped(GIB).memory_max, 512 << 20);
    }

    #[test]
    fn an_empty_or_missing_table_is_the_shipped_defaults() {
        let shipped = Defaults::shipped(8 * GIB);
        assert_eq!(Defaults::from_toml("", "f", 8 * GIB).unwrap(), shipped);
        assert_eq!(
            Defaults::from_toml("[agents]\n", "f", 8 * GIB).unwrap(),
            shipped
        );
    }

    #[test]
    fn the_file_sets_each_default() {
        let d = Defaults::from_toml(
            "[agents]\nmemory_max = \"50%\"\ntasks_max = 64\ncpu_weight = 20\ndisk_max = \"1G\"\n",
            "f",
            8 * GIB,
        )
        .unwrap();
        assert_eq!(
            d,
            Defaults {
                memory_max: 4 * GIB,
                tasks_max: 64,
                cpu_weight: 20,
                disk_max: GIB
            }
        );
        let bytes = Defaults::from_toml("[agents]\nmemory_max = 1048576000\n", "f", GIB).unwrap();
        assert_eq!(bytes.memory_max, 1_048_576_000);
    }

    #[test]
    fn bad_defaults_are_refused_in_one_line_naming_the_key() {
        for (text, key) in [
            ("[agents]\nmemory_max = \"0%\"\n", "agents.memory_max"),
            ("[agents]\nmemory_max = \"101%\"\n", "agents.memory_max"),
            ("[agents]\nmemory_max = \"lots\"\n", "agents.memory_max"),
            ("[agents]\nmemory_max = 0\n", "agents.memory_max"),
            ("[agents]\ntasks_max = 0\n", "agents.tasks_max"),
            ("[agents]\ncpu_weight = 0\n", "agents.cpu_weight"),
            ("[agents]\ncpu_weight = 10001\n", "agents.cpu_weight"),
            ("[agents]\ndisk_max = \"1M\"\n", "agents.disk_max"),
            ("[agents]\nmemmax = 1\n", "memmax"),
            ("[agent]\n", "agent"),
        ] {
            let err = Defaults::from_toml(text, "/etc/hyperhive/hive.toml", 8 * GIB).unwrap_err();
            assert!(err.starts_with("/etc/hyperhive/hive.toml: "), "{err}");
            assert!(err.contains(key), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_spec_without_limits_gets_the_defaults() {
        let d = Defaults::shipped(16 * GIB);
        let b = d.for_agent(&spec(""));
        assert_eq!(b.memory_max, 4 * GIB);
        assert_eq!(b.tasks_max, 4096);
        assert_eq!(b.cpu_weight, 100);
        assert_eq!(b.disk_max, 10 * GIB);
        assert!(b.memory_high < b.memory_max);
    }

    #[test]
    fn explicit_limits_win_over_the_defaults() {
        let d = Defaults::shipped(16 * GIB);
        let b = d.for_agent(&spec(
            "memory_max = \"1G\"\ntasks_max = 77\ncpu_weight = 5\ndisk_max = \"2G\"\n",
        ));
        assert_eq!(
            (b.memory_max, b.tasks_max, b.cpu_weight, b.disk_max),
            (GIB, 77, 5, 2 * GIB)
        );
    }

    #[test]
    fn memory_high_is_always_below_memory_max() {
        for max in [1, 2, 99, 100, 101, 1 << 20, GIB, LIMIT] {
            let high = memory_high(max);
            assert!(high >= 1 && (high < max || max == 1), "{max} -> {high}");
        }
        assert_eq!(memory_high(1000 * GIB), 900 * GIB);
    }
}
