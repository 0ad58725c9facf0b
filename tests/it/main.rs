//! hyperhive's integration tests, one binary so the crate links once: a module per area,
//! all sharing `common` (a test host with hive-c0re as its real unit). One area:
//! `cargo test --test it attacks::`; one test: `cargo test --test it attacks::NAME`.

mod common;

mod admin;
mod agent_side;
mod agents;
mod approval_bounds;
mod approvals;
mod attacks;
mod bounds;
mod bounds_enforced;
mod bounds_journal;
mod browser;
mod claude;
mod cockpit;
mod cockpit_ws;
mod cookbook;
mod create_safety;
mod daemon_away;
mod disk;
mod egress;
mod events;
mod failpoints;
mod faults;
mod harness;
mod network;
mod nixos_system;
mod outage_survival;
mod outages;
mod ports;
mod proptest_parsers;
mod reconcile;
mod remote;
mod systemd_claims;
