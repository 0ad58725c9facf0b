//! A test hook: `HYPERHIVE_FAILPOINT=<step>` in hive-c0re's environment makes the daemon
//! SIGKILL itself when it reaches that step, once (a marker in /run keeps the restarted
//! daemon from dying there again). The reliability tests use it to prove that every
//! interrupted operation ends done or cleanly not done.
//!
//! Built on the `fail` crate and only with the `failpoints` cargo feature, which the test
//! build turns on (Cargo.toml); without it [`hit`] is empty and nothing reads the
//! environment.

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

/// Dies here, like `kill -9`, if the environment asks for this step and it has not fired.
pub fn hit(step: &str) {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    #[cfg(feature = "failpoints")]
    {
        static ARMED: std::sync::Once = std::sync::Once::new();
        ARMED.call_once(armed::arm);
        fail::fail_point!(step);
    }
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::path::PathBuf;

    use super::STEPS;

    fn marker(step: &str) -> PathBuf {
        PathBuf::from(format!(
            "/run/hyperhive-failpoint-{}",
            step.replace(':', "-")
        ))
    }

    /// Registers the step the environment names, unless it fired before this boot's
    /// restart of the daemon.
    pub(super) fn arm() {
        let Ok(wanted) = std::env::var("HYPERHIVE_FAILPOINT") else {
            return;
        };
        let Some(step) = STEPS.into_iter().find(|s| *s == wanted) else {
            log::warn!("HYPERHIVE_FAILPOINT={wanted}: not a failpoint step, ignored");
            return;
        };
        let marker = marker(step);
        if marker.exists() {
            return;
        }
        let armed = fail::cfg_callback(step, move || {
            let _ = std::fs::write(&marker, step);
            log::warn!("failpoint {step}: killing hive-c0re as HYPERHIVE_FAILPOINT asks");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // Never go on past the step, whatever kill did.
            std::process::abort();
        });
        if let Err(e) = armed {
            log::warn!("failpoint {step}: cannot arm it: {e}");
        }
    }
}
