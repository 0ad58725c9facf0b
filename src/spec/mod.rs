//! Agent specs: parse (TOML or CLI flags, every field optional), merge the layers, then
//! validate once into an [`AgentSpec`] that can no longer be wrong. Pure: nothing here
//! touches the filesystem; checks that need the host (does the root exist?) live in
//! `daemon::preflight`.

pub mod bind;
mod diff;
mod error;
mod name;
pub mod request;
pub mod size;
mod system;
pub use diff::differences;
pub use system::{SYSTEM_IN_CONTAINER, SYSTEM_RESERVED_TARGETS};

pub use bind::Bind;
pub use error::SpecError;
pub use name::AgentName;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// The container's network. Host networking is the default because the predecessor's
/// silent switch to a private netns hid every agent's web UI (seed gotcha).
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
    #[default]
    Host,
    Private,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One layer of an agent spec: a spec file, or the flags of `hivectl create`.
/// Every field is optional so layers can be merged before validation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// A NixOS system (a toplevel in /nix/store, or any directory with an executable
    /// `init`) booted from the store instead of a root directory (spec/system.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volatile: Option<Volatile>,
    /// Extra directories put first on the agent's PATH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bind: Vec<bind::BindEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<size::Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harness: Option<Vec<String>>,
    /// Whether the daemon brings the agent up by itself (at its start, after a reboot, and
    /// on reload). Default: yes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// Whether the container gets its own user namespace (`--private-users=pick`), so its
    /// root is an unprivileged host UID range. Default: yes. Only an admin may turn it
    /// off; it is never part of what an agent may request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_users: Option<bool>,
    /// Capabilities the agent keeps among those hyperhive drops by default
    /// ([`DROPPED_CAPABILITIES`]), e.g. `CAP_NET_RAW` for ping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Whether the harness runs its command once per turn (docs/agent-side.md). Default:
    /// no. Not among what an agent may request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turns: Option<bool>,
    /// With `turns`: seconds a turn may run before it is killed. Default 600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_timeout: Option<u64>,
}

impl SpecFile {
    /// Parses a spec file's text; `origin` names it in the error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| {
            let message = one_line(e.message().trim());
            let line = e
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1);
            // serde's "invalid type: …, expected u64" does not say which field; the text
            // around the error does.
            let field = e
                .span()
                .and_then(|span| field_at(text, span.start))
                .filter(|field| !message.contains(&format!("`{field}`")));
            SpecError::Toml {
                origin: origin.to_owned(),
                line,
                field,
                message,
            }
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec always serializes")
    }

    /// Lays `over` on top of `self`: its scalars win, its PATH entries and binds are
    /// added after ours, its environment overrides ours key by key.
    pub fn overlay(mut self, over: SpecFile) -> SpecFile {
        // A layer names what the agent boots, a root or a system; one replaces the other.
        if over.root.is_some() || over.system.is_some() {
            self.root = over.root;
            self.system = over.system;
        }
        self.volatile = over.volatile.or(self.volatile);
        self.path.extend(over.path);
        // An identical bind laid over again is the same bind, so applying a change twice
        // (an approval resumed after a crash) converges instead of failing "bound twice".
        for b in over.bind {
            if !self.bind.contains(&b) {
                self.bind.push(b);
            }
        }
        self.env.extend(over.env);
        self.memory_max = over.memory_max.or(self.memory_max);
        self.cpu_weight = over.cpu_weight.or(self.cpu_weight);
        self.tasks_max = over.tasks_max.or(self.tasks_max);
        self.network = over.network.or(self.network);
        self.harness = over.harness.or(self.harness);
        self.autostart = over.autostart.or(self.autostart);
        self.private_users = over.private_users.or(self.private_users);
        self.turns = over.turns.or(self.turns);
        self.turn_timeout = over.turn_timeout.or(self.turn_timeout);
        for c in over.capabilities {
            if !self.capabilities.contains(&c) {
                self.capabilities.push(c);
            }
        }
        self
    }
}

/// The key whose value holds byte `offset` of a TOML text: the nearest `key =` at or
/// before it (a value may span lines, as an array does), under its `[table]` if any.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let mut key = None;
    for line in before.lines().rev() {
        let t = line.trim_start();
        if let Some(header) = t.strip_prefix('[') {
            let table = header.split(']').next()?.trim().trim_matches('[');
            return Some(match key {
                Some(k) => format!("{table}.{k}"),
                None => table.to_owned(),
            });
        }
        if key.is_none() {
            if let Some((k, _)) = t.split_once('=') {
                let k = k.trim().trim_matches('"');
                if !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    key = Some(k.to_owned());
                }
            }
        }
    }
    key
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
    pub network: Network,
    pub harness: Vec<String>,
    /// Not part of any unit: it decides whether reconcile creates the units at all.
    pub autostart: bool,
    pub private_users: bool,
    /// Sorted, each one of [`DROPPED_CAPABILITIES`].
    pub capabilities: Vec<String>,
    /// The turn loop's timeout per turn in seconds, if the harness runs in turns.
    pub turns: Option<u64>,
}

/// Default of `turn_timeout`.
pub const DEFAULT_TURN_TIMEOUT: u64 = 600;
/// Longest `turn_timeout`: a day.
pub const MAX_TURN_TIMEOUT: u64 = 86_400;

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

        let mut path = Vec::new();
        for dir in &file.path {
            let dir = clean_abs_path("path entry", dir)?;
            if dir.to_string_lossy().contains(':') {
                return Err(SpecError::PathEntryColon(dir));
            }
            if !path.contains(&dir) {
                path.push(dir);
            }
        }

        let mut binds: Vec<Bind> = Vec::new();
        for entry in &file.bind {
            let bind = entry.to_bind()?;
            for reserved in RESERVED_TARGETS {
                if bind.target.starts_with(reserved) {
                    return Err(SpecError::BindReserved {
                        target: bind.target,
                        reserved,
                    });
                }
            }
            if bind.target == Path::new("/") {
                return Err(SpecError::BindOverRoot);
            }
            if system.is_some() {
                system::check_bind_target(&bind.target)?;
            }
            if binds.iter().any(|b| b.target == bind.target) {
                return Err(SpecError::BoundTwice(bind.target));
            }
            binds.push(bind);
        }

        for (key, value) in &file.env {
            check_env(key, value)?;
        }

        let memory_max = match &file.memory_max {
            Some(size) => Some(size.bytes().map_err(|e| e.in_field("memory_max"))?),
            None => None,
        };
        if memory_max == Some(0) {
            return Err(SpecError::MemoryZero);
        }
        // Specs are saved as TOML, whose integers are i64; systemd has no use for more.
        const LIMIT: u64 = i64::MAX as u64;
        if memory_max.is_some_and(|m| m > LIMIT) {
            return Err(SpecError::LimitTooLarge {
                field: "memory_max",
                max: LIMIT,
                unit: " bytes",
            });
        }
        if file.tasks_max.is_some_and(|t| t > LIMIT) {
            return Err(SpecError::LimitTooLarge {
                field: "tasks_max",
                max: LIMIT,
                unit: "",
            });
        }
        if let Some(w) = file.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return Err(SpecError::CpuWeight(w));
            }
        }
        if file.tasks_max == Some(0) {
            return Err(SpecError::TasksZero);
        }

        let harness = file.harness.clone().unwrap_or_default();
        if let Some(first) = harness.first() {
            if first.is_empty() {
                return Err(SpecError::HarnessEmpty);
            }
        }
        if let Some(arg) = harness.iter().find(|a| a.contains('\0')) {
            return Err(SpecError::HarnessNul(arg.clone()));
        }

        let mut capabilities = Vec::new();
        for cap in &file.capabilities {
            if !DROPPED_CAPABILITIES.contains(&cap.as_str()) {
                return Err(SpecError::Capability(cap.clone()));
            }
            if !capabilities.contains(cap) {
                capabilities.push(cap.clone());
            }
        }
        capabilities.sort();

        let turns = match (file.turns.unwrap_or(false), file.turn_timeout) {
            (false, None) => None,
            (false, Some(_)) => return Err(SpecError::TurnTimeoutWithoutTurns),
            (true, timeout) => {
                let timeout = timeout.unwrap_or(DEFAULT_TURN_TIMEOUT);
                if !(1..=MAX_TURN_TIMEOUT).contains(&timeout) {
                    return Err(SpecError::TurnTimeout(timeout));
                }
                if harness.is_empty() {
                    return Err(SpecError::TurnsWithoutHarness);
                }
                Some(timeout)
            }
        };
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
            network: file.network.unwrap_or_default(),
            harness,
            autostart: file.autostart.unwrap_or(true),
            private_users: file.private_users.unwrap_or(true),
            capabilities,
            turns,
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
            network: Some(self.network),
            harness: (!self.harness.is_empty()).then(|| self.harness.clone()),
            autostart: Some(self.autostart),
            private_users: Some(self.private_users),
            capabilities: self.capabilities.clone(),
            turns: self.turns.map(|_| true),
            turn_timeout: self.turns,
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
    if key.starts_with("HIVE_") {
        return Err(SpecError::EnvReserved(key.to_owned()));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(SpecError::EnvControl(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
