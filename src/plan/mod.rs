//! Spec → unit plan: the one pure function that decides what systemd is asked to run.
//! Nothing here talks to systemd or reads the filesystem, so every property an agent's
//! unit gets is unit-tested below; `systemd::manager` only carries the plan over D-Bus.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::journal::fields;
use crate::paths::Roots;
use crate::spec::AgentSpec;

mod claude;
pub use claude::API_KEY_CREDENTIAL;
pub mod bounds;
pub mod disk;
pub mod egress;
mod harness_unit;
pub mod login;
pub mod network;
mod nspawn;
pub use nspawn::{MOUNT_BURST, MOUNT_BURST_VAR};
pub mod ports;
pub mod system;
pub use harness_unit::{harness_unit, HARNESS_IN_CONTAINER, HARNESS_UNIT, HARNESS_WATCHDOG_USEC};

/// The slice every agent unit lives in (units/systemd/system/hive.slice).
pub const SLICE: &str = "hive.slice";

/// PATH entries that follow the agent's own: the host's git (`HYPERHIVE_GIT`), the NixOS
/// system profile and the FHS directories, so the same plan works on NixOS and elsewhere.
pub const DEFAULT_BASE_PATH: [&str; 7] = [
    "/run/current-system/sw/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Delay between a crash and the restart. Short, because a container restart is cheap and
/// systemd's start limit (5 in 10 s) still stops a crash loop.
pub const RESTART_USEC: u64 = 500_000;

/// Masked in a private-network container (see [`container_unit`]).
pub const WAIT_ONLINE: &str = "systemd-networkd-wait-online.service";

/// What the daemon knows about its host that a plan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub roots: Roots,
    /// Absolute path of systemd-nspawn.
    pub nspawn: PathBuf,
    /// Absolute path of hive-c0re, run as `ExecStopPost=` to unregister a dead machine.
    pub hive_c0re: PathBuf,
    /// Absolute path of hive-harness on the host, bound read-only into every container.
    pub hive_harness: PathBuf,
    /// The PATH after the agent's own entries; never the daemon's inherited PATH.
    pub base_path: Vec<PathBuf>,
    /// The host's persistent journal (`/var/log/journal`), if it keeps one: an agent in
    /// its own user namespace gets an idmapped directory there (see [`agent_journal_dir`]).
    pub journal: Option<PathBuf>,
    /// The bounds an agent gets where its spec sets none (`<config>/hive.toml`).
    pub defaults: crate::spec::bounds::Defaults,
    /// Agents' disks are filesystem images the host can make and mount (loop devices and
    /// mkfs.ext4 are there): their state and credentials live in them (`disk.rs`).
    pub disk_images: bool,
}

/// `/var/log/journal` if the host keeps a persistent journal (nspawn's `try-host`).
pub fn persistent_journal() -> Option<PathBuf> {
    let dir = PathBuf::from("/var/log/journal");
    dir.is_dir().then_some(dir)
}

/// The container's machine ID: stable per agent (so its journal directory on the host
/// is too), derived from its name, never the host's.
pub fn agent_machine_id(name: &crate::spec::AgentName) -> String {
    let digest = Sha256::digest(format!("hyperhive agent {name}").as_bytes());
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Where an agent in its own user namespace writes its journal on the host:
/// `/var/log/journal/<its machine ID>`, bound idmapped over the same path inside, so
/// `journalctl -m` on the host reads the harness's and the agent's own lines. nspawn's
/// `--link-journal=try-host` cannot serve here: the directory it makes is owned by the
/// host's root, which the container's journald (an unprivileged host UID) cannot write.
pub fn agent_journal_dir(spec: &AgentSpec, host: &Host) -> Option<PathBuf> {
    let journal = host.journal.as_ref()?;
    spec.private_users
        .then(|| journal.join(agent_machine_id(&spec.name)))
}

/// A systemd property value, in the few D-Bus shapes agent units need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Prop {
    Str(String),
    Bool(bool),
    U64(u64),
    /// `u`, e.g. a mode such as RuntimeDirectoryMode.
    U32(u32),
    Strv(Vec<String>),
    /// `a(sasb)`: path, argv (with argv\[0\]), ignore-failure.
    Exec(Vec<ExecCommand>),
    /// `aay`, e.g. LogExtraFields.
    Bytes(Vec<Vec<u8>>),
    /// `(aiai)`: exit statuses (and no signals), e.g. SuccessExitStatus.
    ExitStatus(Vec<i32>),
    /// `a(ss)`, e.g. LoadCredential.
    Pairs(Vec<(String, String)>),
    /// `(bas)`: an allow-list of address families, e.g. RestrictAddressFamilies.
    AddressFamilies(Vec<String>),
    /// `a(iayu)`: address prefixes, e.g. IPAddressDeny.
    IpPrefixes(Vec<(std::net::IpAddr, u8)>),
    /// `a(ssbt)`: source and destination of recursive bind mounts, e.g. BindReadOnlyPaths.
    Binds(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecCommand {
    pub path: String,
    pub argv: Vec<String>,
    pub ignore_failure: bool,
}

/// Everything needed to create one transient unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitPlan {
    pub unit: String,
    /// The machine the unit registers with machined, for container units.
    pub machine: Option<String>,
    pub properties: Vec<(String, Prop)>,
    /// Short hash of the properties, stamped on the unit as `HIVE_PLAN=` so a later
    /// comparison does not depend on how systemd reformats what it was given.
    pub hash: String,
    /// Units created in the same `StartTransientUnit` call and not started by it, e.g.
    /// the service a socket unit activates. Their hashes are part of [`Self::hash`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aux: Vec<UnitPlan>,
}

impl UnitPlan {
    pub fn get(&self, name: &str) -> Option<&Prop> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Plans `hive-agent-<name>.service`: `systemd-nspawn --boot` of the spec's root as
/// machine `h-<name>`, with the agent's dirs bound in.
pub fn container_unit(spec: &AgentSpec, host: &Host) -> UnitPlan {
    let name = &spec.name;
    let properties = container_properties(spec, host, nspawn::argv(spec, host));
    // The container's hash also covers the harness unit it will carry, so a change to the
    // harness command alone is drift too, and reconcile can judge an agent from the host
    // unit without reaching into every container.
    let harness = harness_unit(spec, host);
    stamp(
        name.container_unit(),
        Some(name.machine()),
        properties,
        Some(&harness.hash),
    )
}

/// The container unit's properties around nspawn's command line `argv`.
fn container_properties(spec: &AgentSpec, host: &Host, argv: Vec<String>) -> Vec<(String, Prop)> {
    let name = &spec.name;
    let roots = &host.roots;
    let machine = name.machine();
    let path_env = format!("PATH={}", agent_path(spec, host));
    let agent_bounds = host.defaults.for_agent(spec);
    let exec_start = ExecCommand {
        path: host.nspawn.display().to_string(),
        argv: literal_args(argv),
        ignore_failure: false,
    };
    // After a crash machined keeps the dead machine registered and the restart fails with
    // "Machine already exists" (testhost.md); unregister it before systemd restarts.
    let exec_stop_post = ExecCommand {
        path: host.hive_c0re.display().to_string(),
        argv: vec![
            host.hive_c0re.display().to_string(),
            "unregister-machine".into(),
            machine.clone(),
        ],
        ignore_failure: true,
    };

    let mut properties: Vec<(String, Prop)> = vec![
        (
            "Description".into(),
            Prop::Str(format!("hyperhive agent {name} (container {machine})")),
        ),
        ("Slice".into(), Prop::Str(SLICE.into())),
        ("Type".into(), Prop::Str("notify".into())),
        ("NotifyAccess".into(), Prop::Str("all".into())),
        // SIGTERM to nspawn only (it shuts the container down cleanly), SIGKILL for stragglers.
        ("KillMode".into(), Prop::Str("mixed".into())),
        ("Delegate".into(), Prop::Bool(true)),
        (
            "Environment".into(),
            Prop::Strv(
                [path_env, fields::assign(fields::AGENT, name)]
                    .into_iter()
                    .chain(disk::container_env(host, agent_bounds.disk_max))
                    .collect(),
            ),
        ),
        (
            "RuntimeDirectory".into(),
            Prop::Strv(roots.runtime_directory_property(name)),
        ),
        // The socket and bus dirs are bind sources: they must survive restarts of this
        // unit and of the daemon (seed gotcha).
        ("RuntimeDirectoryPreserve".into(), Prop::Str("yes".into())),
        // Host users other than root have no business with an agent's socket.
        ("RuntimeDirectoryMode".into(), Prop::U32(0o700)),
        ("Restart".into(), Prop::Str("on-failure".into())),
        ("RestartUSec".into(), Prop::U64(RESTART_USEC)),
        ("ExecStart".into(), Prop::Exec(vec![exec_start])),
        ("ExecStopPost".into(), Prop::Exec(vec![exec_stop_post])),
        // So `journalctl HIVE_AGENT=<name>` shows the container unit's own lines too.
        (
            "LogExtraFields".into(),
            Prop::Bytes(vec![fields::assign(fields::AGENT, name).into_bytes()]),
        ),
    ];
    if spec.system.is_some() {
        // A reboot from inside is a restart, neither a failure nor the end.
        for key in ["RestartForceExitStatus", "SuccessExitStatus"] {
            properties.push((
                key.into(),
                Prop::ExitStatus(vec![system::REBOOT_EXIT_STATUS]),
            ));
        }
    }
    properties.extend(bounds::properties(&agent_bounds));
    properties.extend(disk::container_properties(host, name));

    properties
}

/// Hashes the properties (and the hash of a unit this one carries) and stamps the hash
/// into the unit's environment.
fn stamp(
    unit: String,
    machine: Option<String>,
    mut properties: Vec<(String, Prop)>,
    carries: Option<&str>,
) -> UnitPlan {
    let hash = hash_properties(&properties, carries);
    if let Some((_, Prop::Strv(env))) = properties.iter_mut().find(|(k, _)| k == "Environment") {
        env.push(fields::assign(fields::PLAN, &hash));
    }
    UnitPlan {
        unit,
        machine,
        properties,
        hash,
        aux: Vec::new(),
    }
}

/// systemd expands `$VAR` and `${VAR}` in command arguments; a path or value from a spec
/// must reach the program exactly as written (and as preflight checked it), so every `$`
/// is doubled. argv\[0\] is not expanded and stays as it is.
pub fn literal_args(argv: Vec<String>) -> Vec<String> {
    argv.into_iter()
        .enumerate()
        .map(|(i, a)| if i == 0 { a } else { a.replace('$', "$$") })
        .collect()
}

/// Marks a plan as the work of approval `id`: its units' log lines carry
/// `HIVE_APPROVAL_ID=`, so `journalctl HIVE_APPROVAL_ID=<id>` shows what it changed. Not
/// part of the plan hash: the same spec is the same plan, whoever asked for it.
pub fn stamp_approval(plan: &mut UnitPlan, id: i64) {
    for (key, value) in plan.properties.iter_mut() {
        match (key.as_str(), value) {
            ("LogExtraFields", Prop::Bytes(fields)) => {
                fields.push(fields::assign(fields::APPROVAL_ID, id).into_bytes())
            }
            ("Environment", Prop::Strv(env)) => env.push(fields::assign(fields::APPROVAL_ID, id)),
            _ => {}
        }
    }
}

/// The agent's PATH: its own entries first, then where the harness is bound, then the
/// host's base, without repeats. The same for the container unit and the harness.
pub fn agent_path(spec: &AgentSpec, host: &Host) -> String {
    let harness_dir = Path::new(HARNESS_IN_CONTAINER)
        .parent()
        .expect("absolute")
        .to_path_buf();
    let mut seen: Vec<&Path> = Vec::new();
    for p in spec
        .path
        .iter()
        .chain(std::iter::once(&harness_dir))
        .chain(host.base_path.iter())
    {
        if !seen.contains(&p.as_path()) {
            seen.push(p);
        }
    }
    seen.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// `--bind=SRC:DST[:idmap]` / `--bind-ro=…`, with nspawn's backslash escapes so that
/// paths containing `:` or `\` survive.
pub fn bind_arg(source: &Path, target: &Path, readonly: bool, idmap: bool) -> String {
    let esc = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', r"\\")
            .replace(':', r"\:")
    };
    let flag = if readonly { "--bind-ro" } else { "--bind" };
    let options = if idmap { ":idmap" } else { "" };
    format!("{flag}={}:{}{options}", esc(source), esc(target))
}

fn hash_properties(props: &[(String, Prop)], carries: Option<&str>) -> String {
    let canonical = serde_json::to_string(&(props, carries)).expect("properties serialize");
    let digest = Sha256::digest(canonical.as_bytes());
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests;

/// A host for the planner's tests: stock paths, no journal dir, shipped defaults on 8 GiB.
#[cfg(test)]
pub(crate) fn test_host() -> Host {
    Host {
        roots: crate::paths::Roots::default(),
        nspawn: "/usr/bin/systemd-nspawn".into(),
        hive_c0re: "/usr/bin/hive-c0re".into(),
        hive_harness: "/usr/bin/hive-harness".into(),
        base_path: vec!["/usr/bin".into()],
        journal: None,
        defaults: crate::spec::bounds::Defaults::shipped(8 << 30),
        disk_images: false,
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// `alice` on the host's `/`, volatile.
    pub fn volatile_spec() -> crate::spec::AgentSpec {
        let file =
            crate::spec::SpecFile::from_toml("root = \"/\"\nvolatile = \"yes\"\n", "test").unwrap();
        crate::spec::AgentSpec::validate(&crate::spec::AgentName::parse("alice").unwrap(), &file)
            .unwrap()
    }
}
