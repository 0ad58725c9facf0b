//! Checks against the host that a spec's validation cannot make: do the paths it names
//! exist, are the binaries there. Run before anything is written, so bad input touches
//! nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::plan::Host;
use crate::spec::AgentSpec;

pub fn check(spec: &AgentSpec, host: &Host) -> Result<(), String> {
    let name = &spec.name;
    match std::fs::metadata(&spec.root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "agent {name}: root {}: not a directory",
                spec.root.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "agent {name}: root {}: {}",
                spec.root.display(),
                io_reason(&e)
            ))
        }
    }
    for b in &spec.binds {
        if let Err(e) = std::fs::metadata(&b.source) {
            return Err(format!(
                "agent {name}: bind source {}: {}",
                b.source.display(),
                io_reason(&e)
            ));
        }
    }
    // Name the binary and where its path comes from, so the admin knows what to fix.
    for (what, path) in [
        ("systemd-nspawn (--nspawn / HYPERHIVE_NSPAWN)", &host.nspawn),
        ("hive-c0re", &host.hive_c0re),
        (
            "hive-harness (--harness / HYPERHIVE_HARNESS)",
            &host.hive_harness,
        ),
    ] {
        executable(path).map_err(|e| format!("agent {name}: {what}: {e}"))?;
    }
    Ok(())
}

/// `Ok` if `path` is an executable regular file.
pub fn executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("{}: not an executable file", path.display())),
        Err(e) => Err(format!("{}: {}", path.display(), io_reason(&e))),
    }
}

/// "No such file or directory" without Rust's "(os error 2)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
