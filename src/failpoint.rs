//! A test hook: `HYPERHIVE_FAILPOINT=<step>` in hive-c0re's environment makes the daemon
//! SIGKILL itself when it reaches that step, once (a marker in /run keeps the restarted
//! daemon from dying there again). The reliability tests use it to prove that every
//! interrupted operation ends done or cleanly not done.
//!
//! A few [`ERROR_STEPS`] fail instead of killing: the first time the step is reached it
//! returns an error, as a transient fault would (a container's bus silent past its bound),
//! so a test can show that the retry around it absorbs the fault.
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

/// Steps that fail once with an error instead of killing the daemon.
pub const ERROR_STEPS: [&str; 1] = [
    // One try to give a restarted container its harness back (the harness supervisor retries).
    "heal:try",
];

#[cfg(feature = "failpoints")]
static ARMED: std::sync::Once = std::sync::Once::new();

/// Dies here, like `kill -9`, if the environment asks for this step and it has not fired.
pub fn hit(step: &str) {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    #[cfg(feature = "failpoints")]
    {
        ARMED.call_once(armed::arm);
        fail::fail_point!(step);
    }
}

/// Fails here once, with an error, if the environment asks for this error step.
pub fn fails_once(step: &str) -> anyhow::Result<()> {
    debug_assert!(ERROR_STEPS.contains(&step), "unknown failpoint {step}");
    #[cfg(feature = "failpoints")]
    {
        ARMED.call_once(armed::arm);
        fail::fail_point!(step, |_| Err(anyhow::anyhow!(
            "failpoint {step}: this try fails as HYPERHIVE_FAILPOINT asks"
        )));
    }
    Ok(())
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::path::PathBuf;

    use super::{ERROR_STEPS, STEPS};

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
        if let Some(step) = ERROR_STEPS.into_iter().find(|s| *s == wanted) {
            // Once per daemon: the first time the step is reached it returns its error.
            if let Err(e) = fail::cfg(step, "1*return") {
                log::warn!("failpoint {step}: cannot arm it: {e}");
            }
            return;
        }
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
