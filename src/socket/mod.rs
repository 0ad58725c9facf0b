//! The per-agent socket `/run/hyperhive/<name>/hive.sock`: the harness's only door to
//! the host. The protocol is in [`protocol`]; [`server`] serves one listener per agent.

pub mod answers;
pub mod protocol;
pub mod push;
pub mod server;
pub mod throttle;
mod turn_entry;

pub use server::Sockets;

/// The socket's file name inside the agent's runtime dir.
pub const SOCKET_NAME: &str = "hive.sock";
/// Where the socket appears inside the container (defined with the other paths, which
/// the planner reads too).
pub use crate::paths::SOCKET_IN_CONTAINER;
