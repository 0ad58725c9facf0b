//! NixOS system agents on the host side: the checks before anything is made, the root the
//! daemon prepares under the agent's state, the GC root that names the running system,
//! and switching a running container to a new system in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustix::fs::Mode as FileMode;
use rustix::io::Errno;

use super::hive::Mode;
use super::preflight::{executable, io_reason, Check, Verdict};
use crate::paths::Roots;
use crate::plan::system::{gc_root, prepared_root, GC_ROOTS, NIX_STATE, STORE, SWITCH_UNIT};
use crate::spec::{AgentName, AgentSpec};

/// Longest a switch may run inside the container before the daemon gives up on it (the
/// unit itself is stopped by its own `TimeoutStartSec=` of the same length).
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Host checks of a system agent: its `init` is executable, the store and the Nix state
/// it is given exist. Looked up on the host in the store, never in the agent's root.
pub fn checks(spec: &AgentSpec) -> Vec<Check> {
    let Some(system) = &spec.system else {
        return Vec::new();
    };
    let mut out = vec![];
    let init = system.join("init");
    out.push(check(
        "system",
        executable(&init).map(|()| format!("{} (its init is PID 1)", system.display())),
    ));
    for dir in std::iter::once(STORE).chain(NIX_STATE) {
        let found = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(format!("{dir} (bound read-only)")),
            Ok(_) => Err(format!("{dir}: not a directory")),
            Err(e) => Err(format!(
                "{dir}: {}; a system agent needs Nix on the host",
                io_reason(&e)
            )),
        };
        out.push(check("nix", found));
    }
    out
}

fn check(what: &str, result: Result<String, String>) -> Check {
    let (verdict, detail) = match result {
        Ok(d) => (Verdict::Ok, d),
        Err(d) => (Verdict::Fail, d),
    };
    Check {
        what: what.into(),
        verdict,
        detail,
    }
}

/// Makes the system agent's root: `<agent dir>/root` (0755) and its `usr/` (nspawn refuses
/// a tree without one). Once booted the tree is the agent's: nothing in it is followed —
/// `usr` is made relative to the root's descriptor and left alone if anything is there.
pub fn prepare_root(roots: &Roots, name: &AgentName) -> Result<()> {
    let root = prepared_root(roots, name);
    let dir = crate::safe_fs::dir_with_mode(&root, 0o755)
        .with_context(|| format!("agent {name}: preparing its root"))?;
    match rustix::fs::mkdirat(&dir, "usr", FileMode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(anyhow!(
            "agent {name}: creating {}/usr: {e}",
            root.display()
        )),
    }
}

/// The system the agent's GC root names: what its container runs (or last ran).
pub fn running_system(name: &AgentName) -> Option<PathBuf> {
    std::fs::read_link(gc_root(name)).ok()
}

/// Points the agent's GC root at `system`, atomically (a new link renamed over the old).
pub fn set_gc_root(name: &AgentName, system: &Path) -> Result<()> {
    let link = gc_root(name);
    let ctx = || format!("agent {name}: GC root {}", link.display());
    std::fs::create_dir_all(GC_ROOTS)
        .map_err(|e| anyhow!("creating {GC_ROOTS}: {}", io_reason(&e)))
        .with_context(ctx)?;
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(system, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .map_err(|e| anyhow!("pointing it at {}: {}", system.display(), io_reason(&e)))
        .with_context(ctx)
}

/// Removes the agent's GC root (destroy --purge): the store may collect its system.
pub fn remove_gc_root(name: &AgentName) -> Result<()> {
    let link = gc_root(name);
    match std::fs::remove_file(&link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!(
            "agent {name}: removing GC root {}: {}",
            link.display(),
            io_reason(&e)
        )),
    }
}

impl super::Hive {
    /// A system agent's step before its units are ensured, returning the mode to ensure
    /// them with and whether it switched. A unit that will be (re)started boots what the GC root names, so the GC
    /// root is pointed at the spec's system first. A running unit whose plan is the same
    /// but whose system is not is switched in place (not for `start`, which keeps what
    /// runs): its InvocationID stays; a failed switch is an error and leaves the GC root,
    /// and so the running system, as it was.
    pub(super) async fn settle_system(
        &self,
        spec: &AgentSpec,
        plan: &crate::plan::UnitPlan,
        mode: Mode,
    ) -> Result<(Mode, bool)> {
        let Some(system) = &spec.system else {
            return Ok((mode, false));
        };
        let name = &spec.name;
        let live = self.sd.status(&plan.unit).await?.filter(|s| s.is_up());
        let live_plan = live.as_ref().and_then(|s| s.plan_hash().map(str::to_owned));
        let same_plan = live_plan.as_deref() == Some(plan.hash.as_str());
        let kept = live.is_some()
            && match mode {
                Mode::Start => live_plan.is_some(),
                Mode::Create => same_plan,
                Mode::Rebuild => false,
            };
        let running = running_system(name);
        if mode != Mode::Start && same_plan && running.as_deref() != Some(system.as_path()) {
            self.switch_in_place(spec, system).await?;
            set_gc_root(name, system)?;
            return Ok((Mode::Start, true));
        }
        if !kept {
            set_gc_root(name, system)?;
        }
        Ok((mode, false))
    }

    /// Runs the new system's `switch-to-configuration test` inside the running container,
    /// over the container's own bus, bounded by [`SWITCH_TIMEOUT`].
    async fn switch_in_place(&self, spec: &AgentSpec, system: &Path) -> Result<()> {
        let name = &spec.name;
        let machine = name.machine();
        let what = || {
            format!(
                "switching container {machine} to {} in place (its output: journalctl -M {machine} -u {SWITCH_UNIT})",
                system.display()
            )
        };
        let mut sd = self.container_systemd(name).await.with_context(what)?;
        sd.set_job_timeout(SWITCH_TIMEOUT + Duration::from_secs(5));
        // A switch the daemon gave up on (timed out) may still be there.
        let _ = sd.reset_failed(SWITCH_UNIT).await;
        let plan =
            crate::plan::system::switch_unit(spec, system, SWITCH_TIMEOUT.as_micros() as u64);
        sd.start_transient(&plan).await.with_context(what)?;
        log::info!(
            "agent {name}: switched container {machine} to {} in place",
            system.display()
        );
        Ok(())
    }
}
