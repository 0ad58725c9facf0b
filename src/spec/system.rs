//! The `system` field: an agent that is a NixOS system booted from the store, as
//! `containers.<name>` does, instead of a root directory. Pure validation; the daemon
//! checks on the host that `<system>/init` is executable (hive::preflight) and prepares
//! the root (hive::nixos_system).

use std::path::{Path, PathBuf};

use super::{clean_abs_path, SpecError, SpecFile, Volatile};

/// Where the running system is bound inside the container (read-only, from the agent's GC
/// root on the host), so the unit's command line does not name a store path: a switch in
/// place changes the GC root, and a later restart of the container boots what runs now.
pub const SYSTEM_IN_CONTAINER: &str = "/nix/var/hyperhive/system";

/// Targets a system agent's own binds may not shadow: the store, the Nix state nspawn
/// binds from the host, and where the system is bound.
pub const SYSTEM_RESERVED_TARGETS: [&str; 3] = ["/nix/store", "/nix/var/nix", "/nix/var/hyperhive"];

/// The spec's root directory or its system, exactly one of them.
pub(super) fn root_or_system(
    file: &SpecFile,
) -> Result<(Option<PathBuf>, Option<PathBuf>), SpecError> {
    match (&file.root, &file.system) {
        (Some(_), Some(_)) => Err(SpecError::RootAndSystem),
        (None, None) => Err(SpecError::NoRoot),
        (Some(root), None) => Ok((Some(clean_abs_path("root", root)?), None)),
        (None, Some(system)) => {
            let system = clean_abs_path("system", system)?;
            if system == Path::new("/") {
                return Err(SpecError::SystemIsHostRoot);
            }
            if file.volatile.is_some_and(|v| v != Volatile::No) {
                return Err(SpecError::SystemVolatile);
            }
            Ok((None, Some(system)))
        }
    }
}

/// Refuses a bind of a system agent onto the store or the Nix state it is given.
pub(super) fn check_bind_target(target: &Path) -> Result<(), SpecError> {
    for reserved in SYSTEM_RESERVED_TARGETS {
        if target.starts_with(reserved) || Path::new(reserved).starts_with(target) {
            return Err(SpecError::SystemBindReserved {
                target: target.to_owned(),
                reserved,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::spec::{AgentName, AgentSpec, SpecFile};

    fn validate(toml: &str) -> Result<AgentSpec, String> {
        let file = SpecFile::from_toml(toml, "t")?;
        Ok(AgentSpec::validate(
            &AgentName::parse("alice").unwrap(),
            &file,
        )?)
    }

    #[test]
    fn a_system_agent_has_no_root_and_round_trips() {
        let spec = validate("system = \"/nix/store/abc-nixos-system-alice/\"\n").unwrap();
        assert_eq!(spec.root, None);
        assert_eq!(
            spec.system.as_deref(),
            Some(std::path::Path::new("/nix/store/abc-nixos-system-alice"))
        );
        let again = validate(&spec.to_file().to_toml()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn root_and_system_together_or_neither_are_refused() {
        let e = validate("root = \"/srv/a\"\nsystem = \"/nix/store/x\"\n").unwrap_err();
        assert!(
            e.starts_with("agent alice: root and system are both set"),
            "{e}"
        );
        let e = validate("volatile = \"no\"\n").unwrap_err();
        assert!(e.contains("no root directory and no system"), "{e}");
    }

    #[test]
    fn bad_system_paths_and_volatile_are_refused() {
        for (toml, want) in [
            ("system = \"nix/store/x\"\n", "must be an absolute path"),
            ("system = \"/nix/store/../x\"\n", "must not contain .."),
            ("system = \"/\"\n", "system /: must be"),
            (
                "system = \"/nix/store/x\"\nvolatile = \"yes\"\n",
                "volatile must be no",
            ),
        ] {
            let e = validate(toml).unwrap_err();
            assert!(e.contains(want), "{toml}: {e}");
        }
        assert!(validate("system = \"/nix/store/x\"\nvolatile = \"no\"\n").is_ok());
    }

    #[test]
    fn a_system_agent_may_not_bind_over_the_store_or_nix_state() {
        for target in [
            "/nix/store",
            "/nix/store/x",
            "/nix/var/nix/db",
            "/nix",
            "/nix/var/hyperhive",
        ] {
            let e = validate(&format!(
                "system = \"/nix/store/x\"\nbind = [\"/srv:{target}\"]\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("bound by hyperhive for a system agent"),
                "{target}: {e}"
            );
        }
        assert!(validate("system = \"/nix/store/x\"\nbind = [\"/usr:/usr:ro\"]\n").is_ok());
        // A root agent keeps its freedom.
        assert!(validate("root = \"/srv/a\"\nbind = [\"/srv:/nix/store\"]\n").is_ok());
    }

    #[test]
    fn a_layer_with_a_system_replaces_the_root_and_back() {
        let base = SpecFile::from_toml("root = \"/srv/a\"\n", "t").unwrap();
        let sys = SpecFile::from_toml("system = \"/nix/store/x\"\n", "t").unwrap();
        let merged = base.clone().overlay(sys.clone());
        assert_eq!((merged.root, merged.system), (None, sys.system.clone()));
        let back = sys.overlay(base.clone());
        assert_eq!((back.root, back.system), (base.root, None));
    }
}
