//! An agent's disk image: made, grown, mounted, and the agent's state and credentials in it
//! (docs/persistence.md, "Disk"; the units are planned in plan/disk.rs).
//!
//! Everything here happens under `<state>/agents/<name>/`, a directory of root's (0700) the
//! agent never sees: the image and its mount point are opened without following links all
//! the same. Inside the mounted filesystem only the daemon's own top directories are touched
//! (through `safe_fs`); the agent's files are never read, except by `cp -a` when an agent's
//! plain directories from before are moved into its image (it copies links as links).

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::driver::UnitDriver;
use crate::plan::disk as plan;
use crate::spec::{AgentName, AgentSpec};
use crate::systemd::{anyhow_error_name, UNIT_EXISTS};

/// Attempts to create the mount unit while systemd collects one just stopped.
const MOUNT_ATTEMPTS: u32 = 50;
const MOUNT_PAUSE: Duration = Duration::from_millis(20);

impl UnitDriver {
    /// Before the container starts: the agent's image made (or grown to its `disk_max`),
    /// mounted, its `state/` and `claude/` in it, and its plain directories from before
    /// moved in. Where the host cannot make images it does nothing, unless the agent has one:
    /// then it refuses, rather than start the agent on empty directories. Whether it stopped
    /// the agent's running container on the way (to grow its image, or move data in).
    pub(super) async fn ensure_disk(&self, spec: &AgentSpec) -> Result<bool> {
        let name = &spec.name;
        let roots = &self.host.roots;
        let image = roots.disk_image(name);
        let size = image_size(&image).with_context(|| format!("agent {name}"))?;
        if !self.host.disk_images {
            if size.is_some() {
                let why = crate::disk::images_available()
                    .err()
                    .unwrap_or_else(|| "it could not when the daemon started".into());
                bail!(
                    "agent {name}: its state is in its disk image {} but this host cannot mount it: {why}",
                    image.display()
                );
            }
            return Ok(false);
        }
        let max = self.host.defaults.for_agent(spec).disk_max;
        let mount = plan::mount_unit(roots, name);
        let up = self
            .sd
            .active_state(&mount.unit)
            .await?
            .is_some_and(|s| s.is_up());
        let (up, stopped) = self
            .fit_image(name, &image, size, max, up, &mount.unit)
            .await?;
        if !up {
            crate::safe_fs::private_dir(&roots.disk_dir(name))
                .with_context(|| format!("agent {name}: its disk mount point"))?;
            self.start_mount(&mount).await.with_context(|| {
                format!("agent {name}: mounting its disk image ({})", mount.unit)
            })?;
        }
        let moved = self.fill_disk(spec).await?;
        Ok(stopped || moved)
    }

    /// Makes the image, or grows it offline to `max` (stopping the container and the
    /// mount first, if up); never shrinks it. Returns whether the mount is still up and
    /// whether the container was stopped.
    async fn fit_image(
        &self,
        name: &AgentName,
        image: &Path,
        size: Option<u64>,
        max: u64,
        mut up: bool,
        mount_unit: &str,
    ) -> Result<(bool, bool)> {
        let mut stopped = false;
        match size {
            None => {
                let (img, n) = (image.to_owned(), name.clone());
                tokio::task::spawn_blocking(move || make_image(&img, max, &n)).await??;
                log::info!(
                    "agent {name}: made its disk image {} ({max} bytes, sparse)",
                    image.display()
                );
            }
            Some(size) if size < max => {
                // Offline: this machine's kernel lets no process grow a mounted ext4
                // (resize2fs online needs CAP_SYS_RESOURCE), and e2fsck wants it unmounted.
                if up {
                    stopped = self.stop_container(name).await?;
                    self.sd.stop(mount_unit).await?;
                    up = false;
                }
                let (img, n) = (image.to_owned(), name.clone());
                tokio::task::spawn_blocking(move || grow_image(&img, max, &n)).await??;
                log::info!("agent {name}: grew its disk image from {size} to {max} bytes");
            }
            Some(size) if size > max => log::warn!(
                "agent {name}: disk_max {max} is below its image's {size} bytes; an image is \
                 never shrunk (its data could be lost), so {size} bytes stay its bound"
            ),
            Some(_) => {}
        }
        Ok((up, stopped))
    }

    /// Fills the mounted image: the agent's state, credentials and journal dirs, what
    /// was in plain dirs moved in, the journal linked. Returns whether the container was
    /// stopped to move data in.
    async fn fill_disk(&self, spec: &AgentSpec) -> Result<bool> {
        let name = &spec.name;
        let roots = &self.host.roots;
        let mut stopped = false;
        let disk = roots.disk_dir(name);
        check_mounted(&disk).with_context(|| format!("agent {name}"))?;
        // Its journal directory too, where it gets one: 0755 as journald's own.
        let journal = crate::plan::agent_journal_dir(spec, &self.host);
        let mut dirs = vec![
            (disk.clone(), 0o700),
            (disk.join("state"), 0o700),
            (disk.join("claude"), 0o700),
        ];
        let mut pairs = vec![
            (roots.state_dir(name), disk.join("state")),
            (roots.claude_dir(name), disk.join("claude")),
        ];
        if let Some(host_dir) = &journal {
            dirs.push((disk.join("journal"), 0o755));
            pairs.push((host_dir.clone(), disk.join("journal")));
        }
        let make = |dirs: &[(PathBuf, u32)]| -> Result<()> {
            for (dir, mode) in dirs {
                crate::safe_fs::dir_with_mode(dir, *mode)
                    .with_context(|| format!("agent {name}"))?;
            }
            Ok(())
        };
        make(&dirs)?;
        if self.move_in_plain_dirs(name, &pairs).await? {
            stopped = true;
            // cp -a gave them the modes of the old ones.
            make(&dirs)?;
        }
        if let Some(host_dir) = &journal {
            link_journal(host_dir, &disk.join("journal"))
                .with_context(|| format!("agent {name}"))?;
        }
        Ok(stopped)
    }

    /// Stops the agent's container if it runs; whether it did.
    async fn stop_container(&self, name: &AgentName) -> Result<bool> {
        let unit = name.container_unit();
        let up = self
            .sd
            .active_state(&unit)
            .await?
            .is_some_and(|s| s.is_up());
        if up {
            self.sd.stop(&unit).await?;
        }
        Ok(up)
    }

    async fn start_mount(&self, mount: &crate::plan::UnitPlan) -> Result<()> {
        for _ in 0..MOUNT_ATTEMPTS {
            self.sd.reset_failed(&mount.unit).await?;
            match self.sd.start_transient(mount).await {
                Ok(()) => return Ok(()),
                Err(e) if anyhow_error_name(&e).as_deref() == Some(UNIT_EXISTS) => {
                    // Up already (raced with another start), or being collected.
                    if self
                        .sd
                        .active_state(&mount.unit)
                        .await?
                        .is_some_and(|s| s.is_up())
                    {
                        return Ok(());
                    }
                    tokio::time::sleep(MOUNT_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(anyhow!("unit {} did not settle", mount.unit))
    }

    /// An agent's `state/` and `claude/` from before images (plain directories on the
    /// host's filesystem) are copied into its image and then removed, with the container
    /// stopped so nothing changes meanwhile. What does not fit stays where it was, and the
    /// agent does not start: raise its `disk_max`. Whether it stopped the container.
    async fn move_in_plain_dirs(
        &self,
        name: &AgentName,
        pairs: &[(PathBuf, PathBuf)],
    ) -> Result<bool> {
        let (mut stopped, mut checked) = (false, false);
        for (old, new) in pairs {
            match std::fs::symlink_metadata(old) {
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                // Never followed: the journal's link made here before (nothing else makes one
                // at these root-owned paths).
                Ok(m) if m.is_symlink() => continue,
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "agent {name}: {} is not a directory; left as it is",
                    old.display()
                ),
                Err(e) => {
                    return Err(e).with_context(|| format!("agent {name}: {}", old.display()))
                }
            }
            if !checked {
                stopped = self.stop_container(name).await?;
                checked = true;
            }
            let (o, n, who) = (old.clone(), new.clone(), name.clone());
            tokio::task::spawn_blocking(move || copy_into(&o, &n, &who)).await??;
            crate::safe_fs::remove_tree(old)
                .with_context(|| format!("agent {name}: removing {} once copied", old.display()))?;
            log::info!(
                "agent {name}: moved {} into its disk image ({})",
                old.display(),
                new.display()
            );
        }
        Ok(stopped)
    }

    /// After the container is gone (destroy): the image is unmounted and kept.
    pub(super) async fn unmount_disk(&self, name: &AgentName) -> Result<()> {
        let unit = plan::mount_unit_name_for(&self.host.roots, name);
        self.sd.stop(&unit).await?;
        self.sd.reset_failed(&unit).await
    }

    /// At `--purge`, with the image gone: the link to its journal directory.
    pub(super) fn unlink_journal(&self, name: &AgentName) -> Result<()> {
        let Some(journal) = &self.host.journal else {
            return Ok(());
        };
        let fd = crate::safe_fs::open_dir(journal)?;
        let id = crate::plan::agent_machine_id(name);
        match rustix::fs::readlinkat(&fd, id.as_str(), Vec::new()) {
            Ok(target)
                if Path::new(target.to_str().unwrap_or(""))
                    == self.host.roots.disk_dir(name).join("journal") =>
            {
                rustix::fs::unlinkat(&fd, id.as_str(), rustix::fs::AtFlags::empty())
                    .map_err(|e| anyhow!("removing {}/{id}: {e}", journal.display()))
            }
            _ => Ok(()),
        }
    }
}

/// `/var/log/journal/<id>` as a link to the journal directory in the agent's image, so the
/// host's journalctl (`-m`, `hivectl logs`) reads it: made relative to the open journal
/// directory (root's), replacing only an older link of ours.
fn link_journal(host_dir: &Path, target: &Path) -> Result<()> {
    let parent = host_dir.parent().expect("in /var/log/journal");
    let id = host_dir
        .file_name()
        .expect("a machine ID")
        .to_str()
        .expect("hex");
    let fd = crate::safe_fs::open_dir(parent)?;
    match rustix::fs::readlinkat(&fd, id, Vec::new()) {
        Ok(now) if Path::new(now.to_str().unwrap_or("")) == target => return Ok(()),
        Ok(_) => rustix::fs::unlinkat(&fd, id, rustix::fs::AtFlags::empty())
            .map_err(|e| anyhow!("removing the old link {}: {e}", host_dir.display()))?,
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => bail!(
            "{} is not a link to its image ({e}); left as it is",
            host_dir.display()
        ),
    }
    rustix::fs::symlinkat(target, &fd, id).map_err(|e| {
        anyhow!(
            "linking {} to {}: {e}",
            host_dir.display(),
            target.display()
        )
    })
}

/// The image's size, `None` if there is none. Anything but a regular file there (a link
/// included) is refused.
fn image_size(image: &Path) -> Result<Option<u64>> {
    match std::fs::symlink_metadata(image) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => bail!("{} is not a regular file; left as it is", image.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", image.display())),
    }
}

/// A sparse file of `max` bytes with an ext4 filesystem, made beside the image and renamed
/// into place only once whole: a full host disk leaves nothing behind.
fn make_image(image: &Path, max: u64, name: &AgentName) -> Result<()> {
    let tmp = tmp_path(image);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)
            .map_err(|e| {
                anyhow!(
                    "creating {}: {}",
                    tmp.display(),
                    super::preflight::io_reason(&e)
                )
            })?;
        f.set_len(max).map_err(|e| {
            anyhow!(
                "sizing {}: {}",
                tmp.display(),
                super::preflight::io_reason(&e)
            )
        })?;
        drop(f);
        // -m 0: no blocks reserved for root (the agent is root inside; the bound is all
        // its own). root_owner: the filesystem's root directory is host root's.
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", "-E", "root_owner=0:0"],
            &tmp,
        )?;
        let f = std::fs::File::open(&tmp)?;
        f.sync_all()?;
        std::fs::rename(&tmp, image).map_err(|e| {
            anyhow!(
                "naming {}: {}",
                image.display(),
                super::preflight::io_reason(&e)
            )
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("agent {name}: making its disk image"))
}

/// Grows the (unmounted) image to `max`: the file, then its filesystem (checked first, as
/// resize2fs asks).
fn grow_image(image: &Path, max: u64, name: &AgentName) -> Result<()> {
    let ctx = || format!("agent {name}: growing its disk image to {max} bytes");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc_o_nofollow())
        .open(image)
        .with_context(ctx)?;
    f.set_len(max).with_context(ctx)?;
    drop(f);
    run("e2fsck", &["-f", "-p"], image).with_context(ctx)?;
    run("resize2fs", &[], image).with_context(ctx)
}

/// `cp -a OLD/. NEW`: contents, owners, modes, times, xattrs; links copied as links.
fn copy_into(old: &Path, new: &Path, name: &AgentName) -> Result<()> {
    let mut src = old.as_os_str().to_owned();
    src.push("/.");
    let mut cp = Command::new("cp");
    cp.arg("-a").arg("--no-dereference").arg(&src).arg(new);
    let why = match crate::disk::output_within(cp, crate::disk::COPY_BOUND) {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => last_line(&out.stderr),
        Err(e) => e.to_string(),
    };
    // Nothing half-copied stays in the image; the original is untouched.
    let _ = crate::safe_fs::remove_tree(new);
    let _ = crate::safe_fs::private_dir(new);
    bail!(
        "agent {name}: {} does not fit its disk image, or could not be copied ({why}); it stays \
         where it is and the agent is not started: raise its disk_max",
        old.display()
    )
}

/// The mount point is the image's filesystem, not the directory under it: never bind an
/// unbounded directory where a bounded one was planned.
fn check_mounted(disk: &Path) -> Result<()> {
    let parent = disk
        .parent()
        .expect("the mount point is in the agent's dir");
    let (m, p) = (
        std::fs::symlink_metadata(disk)?,
        std::fs::symlink_metadata(parent)?,
    );
    if !m.is_dir() || m.dev() == p.dev() {
        bail!("{} is not its mounted disk image", disk.display());
    }
    Ok(())
}

fn run(tool: &str, args: &[&str], file: &Path) -> Result<()> {
    let program = crate::disk::find_program(tool)
        .ok_or_else(|| anyhow!("{tool} is not on PATH (install e2fsprogs)"))?;
    let mut cmd = Command::new(&program);
    cmd.args(args).arg(file);
    let out = crate::disk::output_within(cmd, crate::disk::FS_TOOL_BOUND)
        .with_context(|| format!("running {tool} on {}", file.display()))?;
    // e2fsck: 1 and 2 mean it fixed something, which is fine here.
    let ok = out.status.success() || (tool == "e2fsck" && matches!(out.status.code(), Some(1 | 2)));
    if !ok {
        bail!("{tool} {}: {}", file.display(), last_line(&out.stderr));
    }
    Ok(())
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_string()
}

fn tmp_path(image: &Path) -> PathBuf {
    let mut tmp = image.as_os_str().to_owned();
    tmp.push(".new");
    PathBuf::from(tmp)
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_where_the_image_should_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        assert_eq!(image_size(&image).unwrap(), None);
        std::os::unix::fs::symlink("/etc/passwd", &image).unwrap();
        assert!(image_size(&image).is_err());
        // Growing never follows it either.
        let name = AgentName::parse("alice").unwrap();
        assert!(grow_image(&image, 1 << 30, &name).is_err());
        assert!(std::fs::metadata("/etc/passwd").unwrap().len() < 1 << 30);
    }

    #[test]
    fn an_image_is_made_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let name = AgentName::parse("alice").unwrap();
        if crate::disk::find_program("mkfs.ext4").is_none() {
            eprintln!("mkfs.ext4 missing: making an image is untested here");
            return;
        }
        make_image(&image, 64 << 20, &name).unwrap();
        assert_eq!(image_size(&image).unwrap(), Some(64 << 20));
        assert!(!tmp_path(&image).exists());
        grow_image(&image, 96 << 20, &name).unwrap();
        assert_eq!(image_size(&image).unwrap(), Some(96 << 20));
        // A second make never clobbers: the temporary is fresh, the rename replaces only a
        // whole image, and a leftover temporary is cleared first.
        let other = dir.path().join("other.img");
        std::fs::write(tmp_path(&other), b"half").unwrap();
        make_image(&other, 64 << 20, &name).unwrap();
        assert_eq!(image_size(&other).unwrap(), Some(64 << 20));
    }
}
