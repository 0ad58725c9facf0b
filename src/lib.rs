//! hyperhive: a systemd-native orchestrator for a hive of AI agents. Each agent's
//! container is a transient systemd unit created over D-Bus; see docs/architecture.md.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod disk;
pub mod egress;
pub mod failpoint;
pub(crate) mod harness;
pub(crate) mod hive;
pub(crate) mod inventory;
pub mod journal;
pub mod logging;
pub mod paths;
pub mod plan;
pub mod ports;
pub(crate) mod reconcile;
pub(crate) mod safe_fs;
pub(crate) mod serve;
pub mod socket;
pub(crate) mod spans;
pub mod spec;
pub mod store;
pub mod systemd;
