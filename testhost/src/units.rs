//! The test host's /etc/systemd/system: a minimal boot target, the units it masks, and
//! the project's units installed as packaging would, their `Exec*=` lines pointed at the
//! freshly built binaries.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Program basenames that packaging installs; unit files name them by their installed path
/// (`/usr/bin/...`) and the test host rewrites that to the freshly built binary.
pub(crate) const PROJECT_BINARIES: &[&str] = &["hive-c0re", "hivectl", "hive-harness"];

/// Units the minimal test host must not start: each either fails without real hardware or a
/// real console, or just costs boot time the tests do not need.
pub(crate) const MASKED_UNITS: &[&str] = &[
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-repart.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-journal-flush.service",
    "systemd-machine-id-commit.service",
    "kmod-static-nodes.service",
    "systemd-modules-load.service",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "console-getty.service",
    "getty.target",
    "systemd-logind.service",
    "systemd-timesyncd.service",
    "postgresql.service",
    "timers.target",
    "e2scrub_reap.service",
    "systemd-initctl.socket",
    "systemd-journald-audit.socket",
    "systemd-firstboot.service",
];

/// Units whose `LoadCredential=` makes systemd mount /run/credentials/<unit> at boot: that costs
/// ~30 ms and once stalled a boot by 0.9 s, and the test host has no credentials to pass.
pub(crate) const NO_CREDENTIAL_UNITS: &[&str] = &[
    "systemd-sysusers.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup.service",
];

/// Generates the test host's /etc/systemd/system (the container's /etc is an empty tmpfs, so
/// this is all the configuration it gets), then installs the project's units over it.
pub(crate) fn write_units(
    dir: &Path,
    start_daemon: bool,
    units_dir: Option<&Path>,
    bin_dir: Option<&Path>,
) -> Result<()> {
    let daemon = if start_daemon {
        " hive-c0re.service"
    } else {
        ""
    };
    fs::write(
        dir.join("hive-test.target"),
        format!(
            "[Unit]\n\
             Description=Hive integration-test host (minimal)\n\
             Wants=dbus.socket dbus.service systemd-journald.socket systemd-journald.service systemd-machined.service{daemon}\n\
             After=dbus.service systemd-journald.service systemd-machined.service{daemon}\n\
             AllowIsolate=yes\n"
        ),
    )?;
    fs::write(
        dir.join("hive-agent.target"),
        "[Unit]\n\
         Description=Hive agent container (minimal)\n\
         Wants=dbus.socket dbus.service systemd-journald.socket systemd-journald.service\n\
         After=dbus.service systemd-journald.service\n\
         AllowIsolate=yes\n",
    )?;
    for unit in MASKED_UNITS {
        symlink("/dev/null", dir.join(unit))?;
    }
    for unit in NO_CREDENTIAL_UNITS {
        let dropins = dir.join(format!("{unit}.d"));
        fs::create_dir_all(&dropins)?;
        fs::write(dropins.join("nocred.conf"), "[Service]\nLoadCredential=\n")?;
    }
    if let Some(units) = units_dir {
        copy_dir(&units.join("systemd/system"), dir, bin_dir)?;
    }
    Ok(())
}

/// Copies a directory tree (a missing `src` is an empty one), keeping symlinks as symlinks.
/// With `bin_dir`, unit files get their `Exec*=` lines pointed at the built binaries.
pub(crate) fn copy_dir(src: &Path, dst: &Path, bin_dir: Option<&Path>) -> Result<()> {
    let entries = match fs::read_dir(src) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
    };
    fs::create_dir_all(dst)?;
    for entry in entries {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let ty = entry.file_type()?;
        // The project's own file wins over a generated mask or drop-in of the same name.
        if let Ok(meta) = fs::symlink_metadata(&to) {
            if !(meta.is_dir() && ty.is_dir()) {
                if meta.is_dir() {
                    fs::remove_dir_all(&to)?;
                } else {
                    fs::remove_file(&to)?;
                }
            }
        }
        if ty.is_symlink() {
            symlink(fs::read_link(&from)?, &to)?;
        } else if ty.is_dir() {
            copy_dir(&from, &to, bin_dir)?;
        } else {
            let data = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            match (bin_dir, String::from_utf8(data)) {
                (Some(bin), Ok(text)) => fs::write(&to, rewrite_exec_lines(&text, bin))?,
                (_, Ok(text)) => fs::write(&to, text)?,
                (_, Err(e)) => fs::write(&to, e.into_bytes())?,
            }
        }
    }
    Ok(())
}

/// Whether units/catalog was installed at /etc/systemd/catalog (`journalctl -x` then
/// shows the text of hive-c0re's events, as on an installed host).
pub(crate) fn state_has_catalog(state: &Path) -> bool {
    state.join("catalog").is_dir()
}

/// Does what packaging does to the project's units: `ExecStart=/usr/bin/hive-c0re ...` (and
/// the other `Exec*=` keys, for any of the project's binaries, wherever they were said to be)
/// becomes `ExecStart=<bin_dir>/hive-c0re ...`. systemd's prefixes (`-@:+!`) are kept.
pub fn rewrite_exec_lines(unit: &str, bin_dir: &Path) -> String {
    let mut out = String::with_capacity(unit.len());
    for line in unit.split_inclusive('\n') {
        out.push_str(&rewrite_exec_line(line, bin_dir).unwrap_or_else(|| line.to_string()));
    }
    out
}

pub(crate) fn rewrite_exec_line(line: &str, bin_dir: &Path) -> Option<String> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let (key, value) = trimmed.split_once('=')?;
    let key = key.trim_end();
    const KEYS: &[&str] = &[
        "ExecCondition",
        "ExecStartPre",
        "ExecStart",
        "ExecStartPost",
        "ExecReload",
        "ExecStop",
        "ExecStopPost",
    ];
    if !KEYS.contains(&key) {
        return None;
    }
    let value = value.trim_start();
    let prefix_len = value.len() - value.trim_start_matches(['-', '@', ':', '+', '!']).len();
    let (prefix, rest) = value.split_at(prefix_len);
    let prog_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (prog, args) = rest.split_at(prog_len);
    let base = prog.rsplit('/').next()?;
    if !PROJECT_BINARIES.contains(&base) {
        return None;
    }
    Some(format!(
        "{indent}{key}={prefix}{}{args}",
        bin_dir.join(base).display()
    ))
}

/// Where the test host's system bus finds the project's D-Bus activation files. A package
/// installs them in /usr/share/dbus-1/system-services, which is the machine's read-only
/// /usr here; this directory is named to the bus by a `<servicedir>` in a config file beside
/// the policies instead.
pub(crate) const SERVICE_DIR: &str = "/etc/dbus-1/system-services";

/// Copies `units/dbus-1/system-services` to `services` (bound at [`SERVICE_DIR`]) and adds
/// the `<servicedir>` naming it to `policies` (bound at /etc/dbus-1/system.d).
pub(crate) fn install_dbus_services(units: &Path, services: &Path, policies: &Path) -> Result<()> {
    copy_dir(&units.join("dbus-1/system-services"), services, None)?;
    let conf = policies.join("zz-testhost-servicedir.conf");
    fs::write(
        &conf,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig><servicedir>{SERVICE_DIR}</servicedir></busconfig>\n"
        ),
    )
    .with_context(|| format!("writing {}", conf.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_project_binaries_only() {
        let bin = Path::new("/w/target/debug");
        let unit = "[Service]\n\
                    Type=notify\n\
                    ExecStart=/usr/bin/hive-c0re --foo bar\n\
                    ExecStartPre=-/usr/bin/hivectl check\n\
                    ExecStopPost=/usr/bin/busctl call x\n\
                    ExecReload=hive-harness\n\
                    Environment=ExecStart=/usr/bin/hive-c0re\n";
        assert_eq!(
            rewrite_exec_lines(unit, bin),
            "[Service]\n\
             Type=notify\n\
             ExecStart=/w/target/debug/hive-c0re --foo bar\n\
             ExecStartPre=-/w/target/debug/hivectl check\n\
             ExecStopPost=/usr/bin/busctl call x\n\
             ExecReload=/w/target/debug/hive-harness\n\
             Environment=ExecStart=/usr/bin/hive-c0re\n"
        );
    }

    #[test]
    fn rewrite_keeps_missing_final_newline() {
        assert_eq!(
            rewrite_exec_lines("ExecStart=/opt/hive-c0re", Path::new("/b")),
            "ExecStart=/b/hive-c0re"
        );
    }
}
