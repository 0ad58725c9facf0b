//! A private-network agent's egress proxy on the host (`hive-egress-<name>.service`), its
//! allowlist file, and its forwarder inside the container. The proxy runs under a dynamic
//! user that owns its directory, so the daemon writes there without following anything
//! the proxy could have planted (a descriptor of the directory, `O_NOFOLLOW|O_EXCL`, then
//! a rename).

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use rustix::fs::{Mode as FileMode, OFlags};

use super::driver::UnitDriver;
use super::mode::Mode;
use crate::egress::allowlist::{render, ALLOW_FILE};
use crate::journal::fields;
use crate::plan::egress as plan;
use crate::spec::{AgentName, AgentSpec};

impl UnitDriver {
    /// Brings the proxy up (kept as it is when it already runs this plan: an allowlist
    /// change never restarts it) and writes its allowlist and the login shells' profile.
    /// An agent on the host's network has no proxy: one left from before is stopped.
    pub(super) async fn ensure_egress(&self, spec: &AgentSpec) -> Result<()> {
        let name = &spec.name;
        if !plan::has_egress(spec) {
            return self.stop_egress(name).await;
        }
        let unit = plan::proxy_unit(spec, &self.host);
        Self::ensure_running(&self.sd, &unit, Mode::Create)
            .await
            .with_context(|| format!("agent {name}: egress proxy {}", unit.unit))?;
        self.write_egress_files(spec)
    }

    /// At startup, for an adopted agent: a proxy that is not up (it failed for good, e.g.
    /// hit its start limit while the daemon was away) is reset and started again, and one
    /// that runs an older plan (an upgrade) is replaced; the agent's container keeps
    /// running. A proxy that runs its plan is left as it is.
    pub(super) async fn heal_egress(&self, name: &AgentName) -> Result<()> {
        let spec = self.load_spec(name)?;
        if !plan::has_egress(&spec) {
            return Ok(());
        }
        let unit = plan::proxy_unit(&spec, &self.host);
        let st = self.sd.status(&unit.unit).await?;
        let was = match &st {
            Some(s) if s.is_up() && s.plan_hash() == Some(unit.hash.as_str()) => return Ok(()),
            Some(s) if s.is_up() => "running an older plan".to_string(),
            Some(s) => format!("{} ({})", s.active_state, s.result),
            None => "gone".to_string(),
        };
        let _guard = self.lock(name).await;
        Self::ensure_running(&self.sd, &unit, Mode::Create)
            .await
            .with_context(|| format!("agent {name}: egress proxy {}", unit.unit))?;
        self.write_egress_files(&spec)?;
        log::warn!(
            "agent {name}: egress proxy {} was {was}; started it again",
            unit.unit
        );
        Ok(())
    }

    /// The allowlist (and profile) as the spec says now; the proxy reads the file again
    /// at its next connection.
    pub(super) fn write_egress_files(&self, spec: &AgentSpec) -> Result<()> {
        if !plan::has_egress(spec) {
            return Ok(());
        }
        let dir = plan::dir(&self.host.roots, &spec.name);
        let fd = crate::safe_fs::open_dir(&dir)
            .with_context(|| format!("agent {}: egress directory", spec.name))?;
        replace_file(&fd, &dir, ALLOW_FILE, &render(&spec.egress))?;
        replace_file(&fd, &dir, plan::PROFILE_FILE, &plan::profile_script())?;
        Ok(())
    }

    /// An approved change that only adds to the egress allowlist of a running agent is
    /// applied in place: the proxy re-reads its file at the next connection; the
    /// container, its harness and the proxy keep running (same InvocationIDs). Whether
    /// it was (`false`: the change needs a rebuild).
    pub(super) async fn egress_in_place(&self, spec: &AgentSpec, approval: i64) -> Result<bool> {
        let name = &spec.name;
        let unit = name.container_unit();
        let Some(st) = self.sd.status(&unit).await? else {
            return Ok(false);
        };
        // The unit runs exactly the plan of the new spec: nothing but egress changed.
        if !plan::has_egress(spec)
            || !st.is_up()
            || st.plan_hash() != Some(self.container_plan(spec).hash.as_str())
        {
            return Ok(false);
        }
        self.write_egress_files(spec)?;
        crate::journal::emit(
            crate::journal::Event::RebuildFinished,
            Some(name),
            Some(&unit),
            &[
                (fields::APPROVAL_ID, approval.to_string()),
                (fields::OUTCOME, "in_place".into()),
            ],
            &format!(
                "agent {name}: approval {approval}: egress allowlist updated in place, container not restarted (InvocationID {})",
                st.invocation_id
            ),
        );
        Ok(true)
    }

    pub(super) async fn stop_egress(&self, name: &AgentName) -> Result<()> {
        let unit = plan::proxy_unit_name(name);
        self.sd.stop(&unit).await?;
        self.sd.reset_failed(&unit).await
    }

    /// After destroy: the directory RuntimeDirectoryPreserve=yes kept.
    pub(super) fn remove_egress_dir(&self, name: &AgentName) -> Result<()> {
        let dir = plan::dir(&self.host.roots, name);
        if dir.exists() {
            crate::safe_fs::remove_tree(&dir)?;
        }
        let link = Path::new("/run").join(plan::runtime_directory(&self.host.roots, name));
        if link.is_symlink() {
            std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        Ok(())
    }
}

/// Writes `name` in the directory open as `dir` through a fresh temporary file created
/// with `O_EXCL|O_NOFOLLOW` (a planted link is never followed) renamed over it, mode 0644
/// (the proxy's dynamic user reads it).
fn replace_file(dir: &OwnedFd, shown: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = format!(".{name}.new");
    let ctx = || format!("writing {}", shown.join(name).display());
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), rustix::fs::AtFlags::empty());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        FileMode::from_raw_mode(0o644),
    )
    .map_err(|e| anyhow!("{e}"))
    .with_context(ctx)?;
    // The umask may have taken bits away.
    rustix::fs::fchmod(&fd, FileMode::from_raw_mode(0o644))
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes()).with_context(ctx)?;
    drop(f);
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)
}
