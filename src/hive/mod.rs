//! The core of hive-c0re: the agent lifecycle, reconcile, approvals, harness supervision
//! and the watch on systemd. It talks to systemd (`crate::systemd`) and knows nothing of
//! its adapters: the D-Bus API (`crate::api`) and the agents' sockets (`crate::socket`)
//! hold a [`Hive`], call its verbs, and follow what it publishes ([`changes`]).
//! `crate::serve` wires them together.

pub mod agent_side;
mod apply;
mod approval_view;
pub mod approvals;
pub mod bounds;
pub mod changes;
mod crash;
mod disk;
mod driver;
mod egress;
mod ensure;
mod error;
mod facade;
mod files;
mod harness_supervisor;
mod lifecycle;
mod locks;
mod login;
mod mode;
mod nixos_system;
pub mod oom;
mod planner;
mod ports;
pub mod preflight;
mod reconciler;
pub mod request_checks;
pub mod sd_notify;
pub(crate) mod specs;
mod startup;
pub mod tool_use;
mod units;
mod watch;

pub use agent_side::AgentDoors;
pub use approval_view::ApprovalView;
pub use changes::Change;
pub use ensure::{Created, Outcome};
pub use error::Error;
pub use facade::Hive;
pub use reconciler::Trigger;
pub use specs::load_spec;
