//! An agent's bounds as unit properties: memory (with `MemoryHigh=` below `MemoryMax=`),
//! tasks and CPU weight on every agent unit, from its spec or the daemon's defaults
//! (spec/bounds.rs). The disk bound is not a unit property: see hive/disk.rs.

use super::Prop;
use crate::spec::bounds::Bounds;

/// The properties that bound the container unit's cgroup. Set on every agent unit, never
/// left to systemd's defaults (`MemoryMax=infinity`, a host-wide `TasksMax=`).
pub fn properties(b: &Bounds) -> Vec<(String, Prop)> {
    vec![
        ("MemoryMax".into(), Prop::U64(b.memory_max)),
        // The kernel reclaims and throttles past this, so an agent slows down before it is
        // killed at MemoryMax.
        ("MemoryHigh".into(), Prop::U64(b.memory_high)),
        ("TasksMax".into(), Prop::U64(b.tasks_max)),
        ("CPUWeight".into(), Prop::U64(b.cpu_weight)),
        // A process the kernel kills for memory is one of the agent's (the largest); the
        // container and its other work go on, and the daemon journals `agent_oom`. With
        // systemd's default (`stop`) one runaway build would take the whole agent down.
        ("OOMPolicy".into(), Prop::Str("continue".into())),
    ]
}
