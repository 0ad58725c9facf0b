//! An agent's bounds and what it uses of them, as `hivectl status` and `list` show them:
//! from the container unit's own properties (`MemoryCurrent=`, `MemoryMax=`,
//! `TasksCurrent=`, … as `systemctl show` and node_exporter read them), the kernel's OOM
//! count for its cgroup, and its disk bound (hive/disk.rs). Pure but for the cgroup read.

use std::collections::HashMap;

use serde::Serialize;
use zbus::zvariant::OwnedValue;

/// Use at or above this share of a bound (percent) flags the agent as near it.
pub const NEAR_PERCENT: u64 = 90;

/// One bound and its use; `None`: unknown (no accounting) or, for `max`, unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Use {
    pub current: Option<u64>,
    pub max: Option<u64>,
}

impl Use {
    /// At or above [`NEAR_PERCENT`] of its bound.
    pub fn near(&self) -> bool {
        match (self.current, self.max) {
            (Some(c), Some(m)) if m > 0 => {
                u128::from(c) * 100 >= u128::from(m) * u128::from(NEAR_PERCENT)
            }
            _ => false,
        }
    }
}

/// Memory, tasks and CPU of one running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitBounds {
    pub memory: Use,
    /// `MemoryHigh=`: where the kernel starts throttling.
    pub memory_high: Option<u64>,
    pub tasks: Use,
    pub cpu_weight: Option<u64>,
    /// OOM kills in the agent's cgroup since its start, as the kernel counts them; `None`
    /// where the host has no memory controller for it (or from another host).
    pub oom_kills: Option<u64>,
}

/// systemd's "unset"/"infinity" for these properties.
const UNSET: u64 = u64::MAX;

impl UnitBounds {
    pub fn from_properties(p: &HashMap<String, OwnedValue>) -> Self {
        let get = |k: &str| {
            p.get(k)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|&v| v != UNSET)
        };
        Self {
            memory: Use {
                current: get("MemoryCurrent"),
                max: get("MemoryMax"),
            },
            memory_high: get("MemoryHigh"),
            tasks: Use {
                current: get("TasksCurrent"),
                max: get("TasksMax"),
            },
            cpu_weight: get("CPUWeight"),
            oom_kills: None,
        }
    }

    /// The bounds it is near: `memory`, `tasks`.
    pub fn near(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.memory.near() {
            out.push("memory".to_owned());
        }
        if self.tasks.near() {
            out.push("tasks".to_owned());
        }
        out
    }
}

/// Bytes for people: `17.8M`, `6.0G`, as systemctl status writes them.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)];
    for (suffix, shift) in UNITS {
        if n >= 1 << shift {
            return format!("{:.1}{suffix}", n as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{n}B")
}

/// The status lines of the bounds, e.g. `    Memory: 17.8M in use, max 6.0G, throttled past 5.4G`.
pub fn render(b: &UnitBounds) -> String {
    let of = |u: &Use, fmt: &dyn Fn(u64) -> String| {
        let cur = u
            .current
            .map(|c| format!("{} in use", fmt(c)))
            .unwrap_or_else(|| "use not accounted here".into());
        let max = u.max.map(fmt).unwrap_or_else(|| "none".into());
        let near = if u.near() { "  NEAR ITS BOUND" } else { "" };
        format!("{cur}, max {max}{near}")
    };
    let mut out = String::new();
    let high = b
        .memory_high
        .map(|h| format!(", throttled past {}", bytes(h)))
        .unwrap_or_default();
    out.push_str(&format!("    Memory: {}{high}\n", of(&b.memory, &bytes)));
    out.push_str(&format!(
        "     Tasks: {}\n",
        of(&b.tasks, &|n: u64| n.to_string())
    ));
    if let Some(w) = b.cpu_weight {
        out.push_str(&format!(" CPUWeight: {w}\n"));
    }
    match b.oom_kills {
        Some(k) => out.push_str(&format!(" OOM kills: {k} since it started\n")),
        None => out.push_str(" OOM kills: not counted here (no memory controller for it)\n"),
    }
    out
}

/// The agent's disk use against its bound: its spec's `disk_max`, or hive.toml's default.
/// Counted on this host's disk; `None` when its spec cannot be read.
pub fn disk_use(
    roots: &crate::paths::Roots,
    name: &crate::spec::AgentName,
) -> Option<crate::disk::DiskUse> {
    let spec = crate::hive::specs::load_spec(roots, name).ok()?;
    let max = match spec.disk_max {
        Some(m) => m,
        None => {
            crate::hive::bounds::read_defaults(&roots.config)
                .ok()?
                .disk_max
        }
    };
    if let Some(u) = crate::disk::image_usage(&roots.disk_image(name), &roots.disk_dir(name), max) {
        return Some(u);
    }
    let mut dirs = vec![roots.state_dir(name), roots.claude_dir(name)];
    let journal =
        std::path::Path::new("/var/log/journal").join(crate::plan::agent_machine_id(name));
    if journal.is_dir() {
        dirs.push(journal);
    }
    Some(crate::disk::usage(&dirs, max))
}

/// The status line of the disk bound.
pub fn render_disk(d: &crate::disk::DiskUse) -> String {
    let at_least = if d.complete { "" } else { "at least " };
    let near = if d.near() { "  NEAR ITS BOUND" } else { "" };
    if d.enforced {
        let how = match (d.mounted, d.size) {
            (true, Some(size)) if size > d.max => format!(
                "enforced by its image, mounted; the image holds {} (never shrunk)",
                bytes(size)
            ),
            (true, _) => "enforced by its image, mounted".to_string(),
            (false, _) => {
                "enforced by its image, not mounted (agent down): use is the image's on the host"
                    .to_string()
            }
        };
        return format!(
            "      Disk: {} in use (state, credentials, journal), max {}{near}  {how}\n",
            bytes(d.used),
            bytes(d.max)
        );
    }
    format!(
        "      Disk: {at_least}{} in use (state, credentials, journal), max {}{near}  NOT ENFORCED (docs/persistence.md)\n",
        bytes(d.used),
        bytes(d.max)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_is_ninety_percent_of_a_bound() {
        let u = |c, m| Use {
            current: Some(c),
            max: Some(m),
        };
        assert!(!u(89, 100).near());
        assert!(u(90, 100).near());
        assert!(u(4096, 4096).near());
        assert!(!Use {
            current: Some(5),
            max: None
        }
        .near());
    }

    #[test]
    fn status_lines_show_use_and_bound() {
        let b = UnitBounds {
            memory: Use {
                current: Some(18_664_243),
                max: Some(6 << 30),
            },
            memory_high: Some((6 << 30) / 10 * 9),
            tasks: Use {
                current: Some(3700),
                max: Some(4096),
            },
            cpu_weight: Some(100),
            oom_kills: Some(1),
        };
        assert_eq!(
            render(&b),
            "    Memory: 17.8M in use, max 6.0G, throttled past 5.4G\n     Tasks: 3700 in use, max 4096  NEAR ITS BOUND\n CPUWeight: 100\n OOM kills: 1 since it started\n"
        );
        assert_eq!(b.near(), ["tasks"]);
    }
}
