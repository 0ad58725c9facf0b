//! An OOM kill inside an agent becomes a journaled `agent_oom` event. The kernel counts
//! them in the agent's cgroup (`crate::cgroup`); systemd reports them only on cgroup v2
//! and only in its own log line, and with `OOMPolicy=continue` the unit's state does not
//! change, so there is no D-Bus signal to watch. The counters are read every
//! [`PERIOD`]: one small file per running agent (v1 cgroup files cannot be watched with
//! inotify, and one mechanism for both layouts is one to test).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::journal::{self, fields, Event};
use crate::spec::AgentName;

/// How often the counters are read.
pub const PERIOD: Duration = Duration::from_secs(2);

/// The counts last read, per agent unit.
#[derive(Debug, Default)]
pub struct OomWatch {
    seen: BTreeMap<String, u64>,
    started: bool,
}

/// New kills found in one unit: how many since the last read, and in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKills {
    pub unit: String,
    pub new: u64,
    pub total: u64,
}

impl OomWatch {
    /// Takes one reading of every agent unit's count. The first reading is the baseline
    /// (what a previous daemon may already have reported); a unit seen later for the first
    /// time (created or restarted since: a new cgroup, counting from 0) reports all it has.
    pub fn step(&mut self, now: Vec<(String, u64)>) -> Vec<NewKills> {
        let mut out = Vec::new();
        let mut next = BTreeMap::new();
        for (unit, total) in now {
            let before = match self.seen.get(&unit) {
                Some(&b) if b <= total => b,
                // A smaller count: a new cgroup (the unit restarted between readings).
                Some(_) => 0,
                None if self.started => 0,
                None => total,
            };
            if total > before {
                out.push(NewKills {
                    unit: unit.clone(),
                    new: total - before,
                    total,
                });
            }
            next.insert(unit, total);
        }
        self.seen = next;
        self.started = true;
        out
    }
}

/// Reads the counters every [`PERIOD`] for as long as the daemon runs.
pub fn spawn() {
    tokio::spawn(async {
        let mut watch = OomWatch::default();
        loop {
            let now = tokio::task::spawn_blocking(crate::cgroup::agents_oom_kills)
                .await
                .unwrap_or_default();
            for k in watch.step(now) {
                report(&k);
            }
            tokio::time::sleep(PERIOD).await;
        }
    });
}

fn report(k: &NewKills) {
    let Some(name) = AgentName::from_container_unit(&k.unit) else {
        return;
    };
    let max = crate::cgroup::memory_dir(&k.unit)
        .and_then(|d| {
            ["memory.max", "memory.limit_in_bytes"]
                .iter()
                .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
        })
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    journal::emit(
        Event::AgentOom,
        Some(&name),
        Some(&k.unit),
        &[
            (fields::OOM_KILLS, k.total.to_string()),
            (fields::MEMORY_MAX, max.clone()),
        ],
        &format!(
            "agent {name}: the kernel killed {} process(es) in {} for memory (at its MemoryMax {max} bytes; {} since it started); the agent goes on",
            k.new, k.unit, k.total
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kills(unit: &str, new: u64, total: u64) -> NewKills {
        NewKills {
            unit: unit.into(),
            new,
            total,
        }
    }

    #[test]
    fn the_first_reading_is_the_baseline_and_later_kills_are_reported_once() {
        let mut w = OomWatch::default();
        let a = "hive-agent-a.service".to_string();
        let b = "hive-agent-b.service".to_string();
        // Kills a previous daemon saw are not reported again.
        assert_eq!(w.step(vec![(a.clone(), 3)]), vec![]);
        assert_eq!(w.step(vec![(a.clone(), 3)]), vec![]);
        assert_eq!(w.step(vec![(a.clone(), 5)]), vec![kills(&a, 2, 5)]);
        assert_eq!(w.step(vec![(a.clone(), 5)]), vec![]);
        // An agent created since reports all its kills, even in its first reading.
        assert_eq!(
            w.step(vec![(a.clone(), 5), (b.clone(), 1)]),
            vec![kills(&b, 1, 1)]
        );
        // A restarted unit's new cgroup counts from 0.
        assert_eq!(
            w.step(vec![(a.clone(), 1), (b.clone(), 1)]),
            vec![kills(&a, 1, 1)]
        );
        // Gone, then back: a new cgroup.
        assert_eq!(w.step(vec![(b.clone(), 1)]), vec![]);
        assert_eq!(w.step(vec![(a.clone(), 0), (b.clone(), 1)]), vec![]);
    }
}
