//! hive-container-bus: the small helper hive-c0re and hivectl start to reach the system bus
//! inside an agent's container (see src/systemd/container_bus.rs). Not for admins: it
//! takes its work as file descriptors on stdin. Being small, it starts in a fraction of
//! the time of re-running the daemon's own binary, which the daemon does once per agent
//! when it restarts.

use std::process::ExitCode;

fn main() -> ExitCode {
    match hyperhive::systemd::container_bus::run_if_helper() {
        Some(code) => code,
        None => {
            eprintln!(
                "hive-container-bus: started by hive-c0re and hivectl only (see hive-c0re(8))"
            );
            ExitCode::from(2)
        }
    }
}
