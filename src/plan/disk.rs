//! An agent's disk bound as units (pure): its filesystem image
//! `<state>/agents/<name>/disk.img`, mounted by a transient `.mount` unit at
//! `<state>/agents/<name>/disk`, which holds the agent's `state/` and `claude/`. The
//! container unit requires that mount and is ordered after it. The daemon's `disk.rs`
//! makes, grows and mounts the image; docs/persistence.md, "Disk".

use std::path::{Path, PathBuf};

use super::{Host, Prop, UnitPlan};
use crate::journal::fields;
use crate::paths::Roots;
use crate::spec::AgentName;

/// The image's filesystem.
pub const FS_TYPE: &str = "ext4";
/// `loop`: mount(8) attaches the image to a free loop device (and detaches it at the
/// unmount). `nosuid,nodev`: a file the agent's root made setuid or a device node it made
/// means nothing on the host.
pub const MOUNT_OPTIONS: &str = "loop,nosuid,nodev";

/// The mount unit's name for `where_`, as `systemd-escape --path --suffix=mount` makes it:
/// `/var/lib/hyperhive/agents/a-b/disk` is `var-lib-hyperhive-agents-a\x2db-disk.mount`.
pub fn mount_unit_name(where_: &Path) -> String {
    format!("{}.mount", escape_path(where_))
}

/// systemd's path escaping (`unit_name_path_escape`): slashes become `-`, every byte but
/// `[A-Za-z0-9:_.]` (and a leading `.`) becomes `\xNN`.
pub fn escape_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let trimmed: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
    if trimmed.is_empty() {
        return "-".into();
    }
    let joined = trimmed.join("/");
    let mut out = String::with_capacity(joined.len());
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The agent's disk mount unit.
pub fn mount_unit_name_for(roots: &Roots, name: &AgentName) -> String {
    mount_unit_name(&roots.disk_dir(name))
}

/// Plans the mount of the agent's image at its disk directory.
pub fn mount_unit(roots: &Roots, name: &AgentName) -> UnitPlan {
    let where_ = roots.disk_dir(name);
    let properties: Vec<(String, Prop)> = vec![
        (
            "Description".into(),
            Prop::Str(format!(
                "hyperhive agent {name}: its disk (state, credentials)"
            )),
        ),
        (
            "What".into(),
            Prop::Str(roots.disk_image(name).display().to_string()),
        ),
        ("Where".into(), Prop::Str(where_.display().to_string())),
        ("Type".into(), Prop::Str(FS_TYPE.into())),
        ("Options".into(), Prop::Str(MOUNT_OPTIONS.into())),
        // The daemon makes the directory (0700, inside the agent's 0700 directory).
        ("DirectoryMode".into(), Prop::U32(0o700)),
        // So `journalctl HIVE_AGENT=<name>` shows its mount and unmount too.
        (
            "LogExtraFields".into(),
            Prop::Bytes(vec![fields::assign(fields::AGENT, name).into_bytes()]),
        ),
    ];
    let hash = super::hash_properties(&properties, None);
    UnitPlan {
        unit: mount_unit_name(&where_),
        machine: None,
        properties,
        hash,
        aux: Vec::new(),
    }
}

/// Where the container binds `/state` from: inside the image where the host bounds disks,
/// the agent's plain directory otherwise.
pub fn state_source(host: &Host, name: &AgentName) -> PathBuf {
    if host.disk_images {
        host.roots.disk_dir(name).join("state")
    } else {
        host.roots.state_dir(name)
    }
}

/// Where the container binds `/root/.claude` from (see [`state_source`]).
pub fn claude_source(host: &Host, name: &AgentName) -> PathBuf {
    if host.disk_images {
        host.roots.disk_dir(name).join("claude")
    } else {
        host.roots.claude_dir(name)
    }
}

/// Where an agent's journal directory lives where the host bounds disks: in its image,
/// bound over `/var/log/journal/<its machine ID>` inside; the host's path is then a link to
/// it, so the host's journalctl reads it (hive/disk.rs).
pub fn journal_source(host: &Host, name: &AgentName) -> Option<PathBuf> {
    host.disk_images
        .then(|| host.roots.disk_dir(name).join("journal"))
}

/// What the container unit gets for its disk where the host bounds disks: it requires the
/// mount of its disk directory and starts after it (a stopped mount stops the container
/// first). `RequiresMountsFor=` rather than `Requires=`/`After=`: systemd reads it back as
/// it was given, while those two come back with the implicit dependencies added.
pub fn container_properties(host: &Host, name: &AgentName) -> Vec<(String, Prop)> {
    if !host.disk_images {
        return Vec::new();
    }
    vec![(
        "RequiresMountsFor".into(),
        Prop::Strv(vec![host.roots.disk_dir(name).display().to_string()]),
    )]
}

/// The bound in the container's environment where the host bounds disks, so a changed
/// `disk_max` is drift and the agent is rebuilt, which is when its image grows (offline,
/// docs/persistence.md).
pub fn container_env(host: &Host, disk_max: u64) -> Option<String> {
    host.disk_images
        .then(|| fields::assign(fields::ENV_DISK_MAX, disk_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> AgentName {
        AgentName::parse("alice").unwrap()
    }

    #[test]
    fn names_are_escaped_as_systemd_escape_does() {
        assert_eq!(
            mount_unit_name(Path::new("/var/lib/hyperhive/agents/a-b/disk")),
            "var-lib-hyperhive-agents-a\\x2db-disk.mount"
        );
        assert_eq!(escape_path(Path::new("/srv//x y/.z/")), "srv-x\\x20y-.z");
        assert_eq!(escape_path(Path::new("/.hidden")), "\\x2ehidden");
        assert_eq!(escape_path(Path::new("/")), "-");
    }

    #[test]
    fn the_mount_is_the_agents_image_at_its_disk_dir_without_suid_or_devices() {
        let roots = Roots::default();
        let plan = mount_unit(&roots, &alice());
        assert_eq!(plan.unit, "var-lib-hyperhive-agents-alice-disk.mount");
        let s = |k: &str| match plan.get(k) {
            Some(Prop::Str(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(s("What"), "/var/lib/hyperhive/agents/alice/disk.img");
        assert_eq!(s("Where"), "/var/lib/hyperhive/agents/alice/disk");
        assert_eq!(s("Type"), "ext4");
        assert_eq!(s("Options"), "loop,nosuid,nodev");
    }

    #[test]
    fn with_images_the_container_binds_from_the_image_and_requires_its_mount() {
        let mut host = super::super::test_host();
        let name = alice();
        assert!(container_properties(&host, &name).is_empty());
        assert_eq!(container_env(&host, 1 << 30), None);
        assert_eq!(
            state_source(&host, &name),
            PathBuf::from("/var/lib/hyperhive/agents/alice/state")
        );
        host.disk_images = true;
        assert_eq!(
            state_source(&host, &name),
            PathBuf::from("/var/lib/hyperhive/agents/alice/disk/state")
        );
        assert_eq!(
            claude_source(&host, &name),
            PathBuf::from("/var/lib/hyperhive/agents/alice/disk/claude")
        );
        let props = container_properties(&host, &name);
        assert_eq!(
            props,
            vec![(
                "RequiresMountsFor".into(),
                Prop::Strv(vec!["/var/lib/hyperhive/agents/alice/disk".into()])
            )]
        );
        assert_eq!(
            container_env(&host, 1 << 30).as_deref(),
            Some("HIVE_DISK_MAX=1073741824")
        );
        let plan =
            super::super::container_unit(&crate::plan::tests_support::volatile_spec(), &host);
        assert!(plan.get("RequiresMountsFor").is_some());
        match plan.get("Environment") {
            Some(Prop::Strv(env)) => assert!(
                env.iter().any(|e| e.starts_with("HIVE_DISK_MAX=")),
                "{env:?}"
            ),
            other => panic!("{other:?}"),
        }
        let argv = format!("{:?}", plan.get("ExecStart"));
        assert_eq!(
            journal_source(&host, &name),
            Some(PathBuf::from(
                "/var/lib/hyperhive/agents/alice/disk/journal"
            ))
        );
        assert!(argv.contains("agents/alice/disk/state:/state"), "{argv}");
        assert!(
            argv.contains("agents/alice/disk/claude:/root/.claude"),
            "{argv}"
        );
    }
}
