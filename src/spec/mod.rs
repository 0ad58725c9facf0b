//! Agent specs: parse (TOML or CLI flags, every field optional), merge the layers, then
//! validate once into an [`AgentSpec`] that can no longer be wrong. Pure: nothing here
//! touches the filesystem; checks that need the host (does the root exist?) live in
//! `hive::preflight`.

pub mod bind;
pub mod bounds;
pub mod claude;
mod diff;
pub mod egress;
mod error;
mod file;
pub mod message;
mod name;
pub mod request;
pub mod size;
mod system;
mod validate;
pub use diff::differences;
pub use system::{SYSTEM_IN_CONTAINER, SYSTEM_RESERVED_TARGETS};

pub use bind::Bind;
pub use claude::{ClaudeFile, ClaudeSpec};
pub use error::SpecError;
pub use file::SpecFile;
pub use name::AgentName;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The prefix of every name the product writes in a unit's environment and in the journal
/// (`journal::fields` names them all); a spec's own environment may not use it. Here,
/// with the rule that reserves it, so that `journal` (which names agents by `AgentName`)
/// and `spec` do not import each other.
pub const RESERVED_PREFIX: &str = "HIVE_";

/// Container targets hyperhive binds itself; a spec's own binds may not shadow them: the
/// agent's state, its credentials, its socket, its own bus, and the harness binary.
pub const RESERVED_TARGETS: [&str; 5] = [
    "/state",
    "/root/.claude",
    "/run/hyperhive",
    "/run/dbus",
    "/opt/hyperhive",
];

/// Capabilities systemd-nspawn would give a container that hyperhive takes away unless
/// the spec keeps them (`capabilities = [...]`); docs/units.md gives the reason for each
/// and for every one kept. On the host's network, these act on the host itself.
pub const DROPPED_CAPABILITIES: [&str; 5] = [
    // Raw and packet sockets: sniffing and forging traffic on the host's interfaces.
    "CAP_NET_RAW",
    // Broadcast and multicast listening on the host's network.
    "CAP_NET_BROADCAST",
    // chattr +i/+a: files in its binds the host's root could no longer remove.
    "CAP_LINUX_IMMUTABLE",
    // The host's audit rules.
    "CAP_AUDIT_CONTROL",
    // vhangup and the consoles: the container has none of its own.
    "CAP_SYS_TTY_CONFIG",
];

/// How nspawn treats the root: `--volatile=` verbatim.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    Default,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(
    serialize_all = "lowercase",
    parse_err_ty = SpecError,
    parse_err_fn = SpecError::volatile
)]
pub enum Volatile {
    #[default]
    No,
    Yes,
    State,
    Overlay,
}

impl Volatile {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The container's network. A private namespace with only `lo` is the default: an agent
/// on the host's network reaches the host's loopback services, its abstract unix sockets,
/// cloud metadata and every internal address (issue 23). `host` stays an admin's explicit
/// choice, never something an agent may request (spec/request.rs).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    Default,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(
    serialize_all = "lowercase",
    parse_err_ty = SpecError,
    parse_err_fn = SpecError::network
)]
pub enum Network {
    Host,
    #[default]
    Private,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A validated agent spec. Only [`AgentSpec::validate`] makes one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSpec {
    pub name: AgentName,
    /// The directory nspawn boots; `None` for a [`system`](Self::system) agent, whose root
    /// the daemon prepares under its state (`plan::system::root_dir`).
    pub root: Option<PathBuf>,
    /// The NixOS system booted from the store; its `init` is the container's PID 1.
    pub system: Option<PathBuf>,
    pub volatile: Volatile,
    pub path: Vec<PathBuf>,
    pub binds: Vec<Bind>,
    pub env: BTreeMap<String, String>,
    pub memory_max: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub tasks_max: Option<u64>,
    /// Bytes; `None`: the daemon's default (spec/bounds.rs).
    pub disk_max: Option<u64>,
    pub network: Network,
    /// Where the agent may connect through its host-side proxy (private network only),
    /// in the order given, without repeats. Not part of any unit's plan: the proxy reads
    /// it from a file, so a change applies without a restart.
    pub egress: Vec<egress::EgressEntry>,
    /// Ports on the agent's loopback published to the host as unix sockets (private
    /// network only), in the order given.
    pub ports: Vec<u16>,
    pub harness: Vec<String>,
    /// Not part of any unit: it decides whether reconcile creates the units at all.
    pub autostart: bool,
    pub private_users: bool,
    /// Sorted, each one of [`DROPPED_CAPABILITIES`].
    pub capabilities: Vec<String>,
    /// The turn loop's timeout per turn in seconds, if the harness runs in turns.
    pub turns: Option<u64>,
    /// Seconds of grace before an approved change restarts the container; `None`: the
    /// daemon's default.
    pub restart_grace: Option<u64>,
    /// A Claude Code agent: the harness runs `claude` each turn (spec/claude.rs).
    pub claude: Option<ClaudeSpec>,
}

/// Default of `turn_timeout`.
pub const DEFAULT_TURN_TIMEOUT: u64 = 600;
/// Longest `turn_timeout`: a day.
pub const MAX_TURN_TIMEOUT: u64 = 86_400;
/// Longest `restart_grace`: an admin's `hivectl approve` waits through it.
pub const MAX_RESTART_GRACE: u64 = 60;

impl AgentSpec {
    /// Validates a merged spec. The error is one line naming the agent and the field.
    pub fn validate(name: &AgentName, file: &SpecFile) -> Result<Self, SpecError> {
        Self::validate_inner(name, file).map_err(|e| e.for_agent(name))
    }

    fn validate_inner(name: &AgentName, file: &SpecFile) -> Result<Self, SpecError> {
        let (root, system) = system::root_or_system(file)?;
        let volatile = file.volatile.unwrap_or_default();
        if root.as_deref() == Some(Path::new("/")) && volatile == Volatile::No {
            return Err(SpecError::HostRootWritable);
        }

        let path = validate::clean_path(file)?;

        let binds = validate::clean_binds(file, system.is_some())?;

        for (key, value) in &file.env {
            check_env(key, value)?;
        }

        let (memory_max, disk_max) = validate::checked_bounds(file)?;

        let harness = file.harness.clone().unwrap_or_default();
        if let Some(first) = harness.first() {
            if first.is_empty() {
                return Err(SpecError::HarnessEmpty);
            }
        }
        if let Some(arg) = harness.iter().find(|a| a.contains('\0')) {
            return Err(SpecError::HarnessNul(arg.clone()));
        }

        let capabilities = validate::clean_capabilities(file)?;

        let claude = match &file.claude {
            Some(c) => Some(ClaudeSpec::validate(c)?),
            None => None,
        };
        let turns = validate::checked_turns(file, &harness, claude.as_ref())?;
        if let Some(grace) = file.restart_grace {
            if grace > MAX_RESTART_GRACE {
                return Err(SpecError::RestartGrace(grace));
            }
        }
        let network = file.network.unwrap_or_default();
        let egress = validate::egress_of(file, claude.as_ref(), network)?;
        Ok(Self {
            name: name.clone(),
            root,
            system,
            volatile,
            path,
            binds,
            env: file.env.clone(),
            memory_max,
            cpu_weight: file.cpu_weight,
            tasks_max: file.tasks_max,
            disk_max,
            network,
            egress,
            ports: check_ports(&file.ports, network)?,
            harness,
            autostart: file.autostart.unwrap_or(true),
            private_users: file.private_users.unwrap_or(true),
            capabilities,
            turns,
            restart_grace: file.restart_grace,
            claude,
        })
    }

    /// The spec with a requested change laid over it (a spec layer, e.g. from an approval
    /// request: `{"path": ["/opt/x/bin"]}`), validated as any spec is.
    pub fn with_change(&self, change: &SpecFile) -> Result<AgentSpec, SpecError> {
        AgentSpec::validate(&self.name, &self.to_file().overlay(change.clone()))
    }

    /// Parses a change requested as JSON: the same fields as a spec file.
    pub fn change_from_json(value: &serde_json::Value) -> Result<SpecFile, SpecError> {
        if !value.is_object() {
            return Err(SpecError::ChangeNotObject);
        }
        serde_json::from_value(value.clone()).map_err(|e| SpecError::ChangeInvalid(e.to_string()))
    }

    /// The normalized spec as a file layer, for saving beside the agent's state.
    pub fn to_file(&self) -> SpecFile {
        SpecFile {
            root: self.root.clone(),
            system: self.system.clone(),
            volatile: Some(self.volatile),
            path: self.path.clone(),
            bind: self.binds.iter().map(bind::BindEntry::from).collect(),
            env: self.env.clone(),
            memory_max: self.memory_max.map(size::Size::Bytes),
            cpu_weight: self.cpu_weight,
            tasks_max: self.tasks_max,
            disk_max: self.disk_max.map(size::Size::Bytes),
            network: Some(self.network),
            egress: self.egress.iter().map(ToString::to_string).collect(),
            ports: self.ports.clone(),
            harness: (!self.harness.is_empty()).then(|| self.harness.clone()),
            autostart: Some(self.autostart),
            private_users: Some(self.private_users),
            capabilities: self.capabilities.clone(),
            turns: self.turns.map(|_| true),
            turn_timeout: self.turns,
            restart_grace: self.restart_grace,
            claude: self.claude.as_ref().map(ClaudeSpec::to_file),
        }
    }
}

/// Collapses line breaks and other control characters (which an error may echo from the
/// input) so that errors stay one line.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An absolute path with no `..`, no control characters, and `.`/trailing `/` removed.
pub(crate) fn clean_abs_path(what: &'static str, path: &Path) -> Result<PathBuf, SpecError> {
    let shown = path.display().to_string();
    if path.to_str().is_none() {
        return Err(SpecError::PathNotUtf8 {
            what,
            path: path.to_owned(),
        });
    }
    if shown.is_empty() {
        return Err(SpecError::PathEmpty { what });
    }
    if shown.chars().any(|c| c.is_control()) {
        return Err(SpecError::PathControl { what, path: shown });
    }
    if !path.is_absolute() {
        return Err(SpecError::PathRelative { what, path: shown });
    }
    let mut clean = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(SpecError::PathParent { what, path: shown }),
            Component::Normal(part) => clean.push(part),
            Component::Prefix(_) => return Err(SpecError::PathPrefix { what, path: shown }),
        }
    }
    Ok(clean)
}

/// Most egress entries one spec may hold: the proxy checks each connection against all.
pub const MAX_EGRESS: usize = 256;

fn egress_entries(raw: &[String], network: Network) -> Result<Vec<egress::EgressEntry>, SpecError> {
    if !raw.is_empty() && network == Network::Host {
        return Err(SpecError::Egress(
            "egress applies to a private network only; with network = \"host\" the agent reaches everything the host does".into(),
        ));
    }
    if raw.len() > MAX_EGRESS {
        return Err(SpecError::Egress(format!(
            "egress: {} entries, at most {MAX_EGRESS}",
            raw.len()
        )));
    }
    let mut out: Vec<egress::EgressEntry> = Vec::new();
    for entry in raw {
        let e: egress::EgressEntry = entry.parse().map_err(SpecError::Egress)?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Most ports one agent may publish.
pub const MAX_PORTS: usize = 16;

/// `ports`: 1..=65535, no repeats, at most [`MAX_PORTS`], and only from a private network
/// (on the host's network the agent's ports are the host's already).
pub fn check_ports(ports: &[u16], network: Network) -> Result<Vec<u16>, SpecError> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    if network == Network::Host {
        return Err(SpecError::Ports(
            "published from a private network only; with network = \"host\" the agent's ports are the host's".into(),
        ));
    }
    if ports.len() > MAX_PORTS {
        return Err(SpecError::Ports(format!(
            "{} ports, at most {MAX_PORTS}",
            ports.len()
        )));
    }
    let mut out = Vec::new();
    for &p in ports {
        if p == 0 {
            return Err(SpecError::Ports("port 0 is no port".into()));
        }
        if out.contains(&p) {
            return Err(SpecError::Ports(format!("port {p} given twice")));
        }
        out.push(p);
    }
    Ok(out)
}

fn check_env(key: &str, value: &str) -> Result<(), SpecError> {
    let valid_key = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        return Err(SpecError::EnvName(key.to_owned()));
    }
    if key == "PATH" {
        return Err(SpecError::EnvPath);
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(SpecError::EnvReserved(key.to_owned()));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(SpecError::EnvControl(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
