//! A test hook: `HYPERHIVE_FAILPOINT=<step>` in hive-c0re's environment makes the daemon
//! SIGKILL itself when it reaches that step, once (a marker in /run keeps the restarted
//! daemon from dying there again). The reliability tests use it to prove that every
//! interrupted operation ends done or cleanly not done. Unset, it costs one env lookup.

use std::path::PathBuf;

/// Every step a failpoint may name, in the order operations reach them.
pub const STEPS: [&str; 9] = [
    "create:spec-saved",
    "create:container-up",
    "rebuild:container-stopped",
    "rebuild:container-up",
    "destroy:stopped",
    "destroy:spec-removed",
    "approve:decided",
    "approve:spec-saved",
    "approve:applied",
];

fn marker(step: &str) -> PathBuf {
    PathBuf::from(format!(
        "/run/hyperhive-failpoint-{}",
        step.replace(':', "-")
    ))
}

/// Dies here, like `kill -9`, if the environment asks for this step and it has not fired.
pub fn hit(step: &str) {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    if std::env::var("HYPERHIVE_FAILPOINT").ok().as_deref() != Some(step) {
        return;
    }
    let marker = marker(step);
    if marker.exists() {
        return;
    }
    let _ = std::fs::write(&marker, step);
    log::warn!("failpoint {step}: killing hive-c0re as HYPERHIVE_FAILPOINT asks");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // kill(1) may be missing: still do not go on past the step.
    std::process::abort();
}
