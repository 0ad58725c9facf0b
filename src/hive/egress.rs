//! A private-network agent's egress proxy on the host (`hive-egress-<name>.socket`, which
//! starts `hive-egress-<name>.service` at the agent's first connection), its allowlist
//! file, and its forwarder inside the container. The proxy's directory is root's: the
//! daemon makes it and writes there, PID 1 binds the socket in it, and the proxy (a
//! dynamic user) and the container only read it.

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
    /// Writes the allowlist and the login shells' profile, then brings the proxy's socket
    /// up (kept as it is when it already runs this plan: an allowlist change never
    /// restarts it). The proxy itself starts at the agent's first connection. An agent on
    /// the host's network has no proxy: one left from before is stopped.
    pub(super) async fn ensure_egress(&self, spec: &AgentSpec) -> Result<()> {
        let name = &spec.name;
        if !plan::has_egress(spec) {
            return self.stop_egress(name).await;
        }
        self.write_egress_files(spec)?;
        let unit = plan::proxy_units(spec, &self.host);
        Self::ensure_running(&self.sd, &unit, Mode::Create)
            .await
            .with_context(|| format!("agent {name}: egress proxy {}", unit.unit))?;
        Ok(())
    }

    /// At startup, for an adopted agent: a proxy socket that is not up (its proxy failed
    /// for good, e.g. hit its start limit while the daemon was away) is reset and started
    /// again, and one that runs an older plan (an upgrade) is replaced with its proxy; the
    /// agent's container keeps running. A socket that runs its plan is left as it is.
    pub(super) async fn heal_egress(&self, name: &AgentName) -> Result<()> {
        let spec = self.load_spec(name)?;
        if !plan::has_egress(&spec) {
            return Ok(());
        }
        let unit = plan::proxy_units(&spec, &self.host);
        let was = match self.sd.status(&unit.unit).await? {
            Some(s) if s.is_up() && s.plan_hash() == Some(unit.hash.as_str()) => return Ok(()),
            Some(s) if s.is_up() => "running an older plan".to_string(),
            Some(s) => format!("{} ({})", s.active_state, s.result),
            // A proxy from before the socket unit, that owned its directory.
            None if self
                .sd
                .status(&plan::proxy_unit_name(name))
                .await?
                .is_some() =>
            {
                "missing, its proxy running an older plan".to_string()
            }
            None => "gone".to_string(),
        };
        let _guard = self.lock(name).await;
        self.write_egress_files(&spec)?;
        Self::ensure_running(&self.sd, &unit, Mode::Create)
            .await
            .with_context(|| format!("agent {name}: egress proxy {}", unit.unit))?;
        log::warn!(
            "agent {name}: egress proxy socket {} was {was}; started it again",
            unit.unit
        );
        Ok(())
    }

    /// The allowlist (and profile) as the spec says now, in the proxy's directory (made
    /// if missing); the proxy reads the file again at its next connection.
    pub(super) fn write_egress_files(&self, spec: &AgentSpec) -> Result<()> {
        if !plan::has_egress(spec) {
            return Ok(());
        }
        let dir = plan::dir(&self.host.roots, &spec.name);
        let fd =
            egress_dir(&dir).with_context(|| format!("agent {}: egress directory", spec.name))?;
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

    /// Stops the socket first, so that no connection starts the proxy again.
    pub(super) async fn stop_egress(&self, name: &AgentName) -> Result<()> {
        for unit in [plan::socket_unit_name(name), plan::proxy_unit_name(name)] {
            self.sd.stop(&unit).await?;
            self.sd.reset_failed(&unit).await?;
        }
        Ok(())
    }

    /// After destroy: the proxy's directory, and the link to it a proxy of an earlier
    /// version had systemd make.
    pub(super) fn remove_egress_dir(&self, name: &AgentName) -> Result<()> {
        let dir = plan::dir(&self.host.roots, name);
        if dir.exists() {
            crate::safe_fs::remove_tree(&dir)?;
        }
        let link = plan::legacy_link(&self.host.roots, name);
        if link.is_symlink() {
            std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        Ok(())
    }
}

/// The proxy's directory, root's and 0755, under `/run/private` (0700, as systemd makes
/// it): made if missing. One a proxy of an earlier version owned (its
/// `RuntimeDirectory=`, under its dynamic user) becomes root's, in place: a running
/// container binds this very directory.
fn egress_dir(dir: &Path) -> Result<OwnedFd> {
    crate::safe_fs::private_dir(Path::new("/run/private"))?;
    let parent = dir.parent().expect("the egress dir has a parent");
    crate::safe_fs::dir_with_mode(parent, 0o755)?;
    let fd = crate::safe_fs::dir_with_mode(dir, 0o755)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    if st.st_uid != 0 || st.st_gid != 0 {
        rustix::fs::fchown(
            &fd,
            Some(rustix::process::Uid::ROOT),
            Some(rustix::process::Gid::ROOT),
        )
        .map_err(|e| anyhow!("making {} root's: {e}", dir.display()))?;
    }
    Ok(fd)
}

/// Writes `name` in the directory open as `dir` through a fresh temporary file created
/// with `O_EXCL|O_NOFOLLOW` (a planted link is never followed) renamed over it, mode 0644
/// (the proxy's dynamic user and the container read it).
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
