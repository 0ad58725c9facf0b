//! Why a spec, a spec change or an agent name was refused. Each variant carries the
//! offending field and value; its text is the one line an admin (or an agent, for a
//! request) is shown, so the wording is part of the interface: tests match on it.

use std::path::{Path, PathBuf};

use super::name::MAX_LEN;
use super::request::ALLOWED_FIELDS;
use super::{AgentName, DROPPED_CAPABILITIES};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// An error about one agent's spec, named so the admin knows which.
    #[error("agent {agent}: {error}")]
    Agent {
        agent: AgentName,
        error: Box<SpecError>,
    },
    /// An error in the value of `field` (e.g. a size that does not parse).
    #[error("{field}: {error}")]
    Field {
        field: &'static str,
        error: Box<SpecError>,
    },

    #[error("agent name is empty")]
    NameEmpty,
    #[error("invalid agent name \"{}\": must start with a lowercase letter a-z", .0.escape_debug())]
    NameStart(String),
    #[error("invalid agent name \"{}\": longer than {MAX_LEN} characters", .0.escape_debug())]
    NameTooLong(String),
    #[error("invalid agent name \"{}\": character {bad:?} not allowed (use a-z, 0-9 and -)", .name.escape_debug())]
    NameChar { name: String, bad: char },

    #[error("invalid volatile mode \"{}\": use no, yes, state or overlay", .0.escape_debug())]
    Volatile(String),
    #[error("invalid network \"{}\": use host or private", .0.escape_debug())]
    Network(String),
    /// A bad `egress` entry, or egress asked for where it cannot apply (spec/egress.rs).
    #[error("{0}")]
    Egress(String),
    /// A bad `ports` list (spec/mod.rs, [`super::check_ports`]).
    #[error("ports: {0}")]
    Ports(String),

    /// A spec file that is not valid TOML or has a field of the wrong type.
    #[error("{}", toml_text(.origin, *.line, .field.as_deref(), .message))]
    Toml {
        /// Names the file (or flags, or request) the text came from.
        origin: String,
        line: Option<usize>,
        field: Option<String>,
        message: String,
    },

    #[error("no root directory and no system: pass --root DIR, or set root or system in the spec")]
    NoRoot,
    #[error(
        "root and system are both set: a system agent's root is prepared by hyperhive; set one"
    )]
    RootAndSystem,
    #[error("system /: must be a NixOS system's directory")]
    SystemIsHostRoot,
    #[error("volatile: a system agent boots its own root from the store; volatile must be no")]
    SystemVolatile,
    #[error("bind target {}: {reserved} is bound by hyperhive for a system agent", .target.display())]
    SystemBindReserved {
        target: PathBuf,
        reserved: &'static str,
    },
    #[error("root / with volatile no would boot the host's own root writable: use --volatile yes, state or overlay")]
    HostRootWritable,
    #[error("path entry {}: contains ':', the PATH separator", .0.display())]
    PathEntryColon(PathBuf),

    #[error("{what} {path:?}: not valid UTF-8")]
    PathNotUtf8 { what: &'static str, path: PathBuf },
    #[error("{what}: empty path")]
    PathEmpty { what: &'static str },
    #[error("{what} {}: contains a control character", .path.escape_debug())]
    PathControl { what: &'static str, path: String },
    #[error("{what} {path}: must be an absolute path")]
    PathRelative { what: &'static str, path: String },
    #[error("{what} {path}: must not contain ..")]
    PathParent { what: &'static str, path: String },
    #[error("{what} {path}: not a Unix path")]
    PathPrefix { what: &'static str, path: String },

    #[error("bind {0:?}: a backslash may only escape ':' or '\\'")]
    BindEscape(String),
    #[error(
        "bind {bind:?}: unknown option {option:?} (use ro or rw; escape a colon in a path as \\:)"
    )]
    BindOption { bind: String, option: String },
    #[error("bind {0:?}: too many ':' (use SRC:DST[:ro]; escape a colon in a path as \\:)")]
    BindColons(String),
    #[error("bind target {}: {reserved} is bound by hyperhive itself", .target.display())]
    BindReserved {
        target: PathBuf,
        reserved: &'static str,
    },
    #[error("bind target /: cannot bind over the container's root")]
    BindOverRoot,
    #[error("bind target {}: bound twice", .0.display())]
    BoundTwice(PathBuf),

    #[error(
        "env {0:?}: not a valid variable name (letters, digits, _; not starting with a digit)"
    )]
    EnvName(String),
    #[error("env PATH: set PATH entries with --path (the PATH is built by hyperhive)")]
    EnvPath,
    #[error("env {0}: the HIVE_ prefix is reserved for hyperhive")]
    EnvReserved(String),
    #[error("env {0}: value contains a control character")]
    EnvControl(String),

    #[error("invalid size {0:?}: use bytes or a number with K, M, G or T")]
    Size(String),
    #[error("invalid size {0:?}: too large")]
    SizeTooLarge(String),
    #[error("memory_max: must be more than 0 bytes")]
    MemoryZero,
    /// A limit above what a spec can hold (TOML integers are i64).
    #[error("{field}: must be at most {max}{unit}")]
    LimitTooLarge {
        field: &'static str,
        max: u64,
        /// `" bytes"` or nothing.
        unit: &'static str,
    },
    #[error("cpu_weight {0}: must be within 1..=10000")]
    CpuWeight(u64),
    #[error("tasks_max: must be at least 1")]
    TasksZero,
    #[error("disk_max: {0}")]
    DiskMax(String),

    #[error("harness: the command is empty")]
    HarnessEmpty,
    #[error("harness: argument {0:?} contains a NUL byte")]
    HarnessNul(String),
    #[error("turn_timeout is set but turns is not")]
    TurnTimeoutWithoutTurns,
    #[error("turn_timeout {0}: use 1 to {max} seconds", max = super::MAX_TURN_TIMEOUT)]
    TurnTimeout(u64),
    #[error("turns needs a harness command to run in each turn")]
    TurnsWithoutHarness,
    #[error("claude and harness are exclusive: a Claude Code agent's harness runs claude itself")]
    ClaudeWithHarness,
    #[error("claude needs turns: claude runs once per turn")]
    ClaudeWithoutTurns,
    #[error("claude.model {0:?}: use letters, digits and ._:-[] (at most 100)")]
    ClaudeModel(String),
    #[error("claude.allowed_tools: {0}")]
    ClaudeTools(String),
    #[error("claude.budget_usd_per_day {0}: use more than 0 and at most {max}", max = super::claude::MAX_BUDGET_USD)]
    ClaudeBudget(String),
    #[error("claude.permission_timeout {0}: use 1 to {max} seconds", max = super::claude::MAX_PERMISSION_TIMEOUT)]
    ClaudePermissionTimeout(u64),
    #[error("claude.permission_timeout {wait} is not below turn_timeout {turn}: the turn would be killed while claude waits for an admin")]
    ClaudePermissionPastTurn { wait: u64, turn: u64 },
    #[error("claude.prompt: at most {max} bytes, no NUL", max = super::claude::MAX_PROMPT_LEN)]
    ClaudePrompt,
    #[error("restart_grace {0}: use 0 to {max} seconds", max = super::MAX_RESTART_GRACE)]
    RestartGrace(u64),
    #[error("capabilities: {:?} is not one hyperhive drops; keepable: {}", .0, DROPPED_CAPABILITIES.join(", "))]
    Capability(String),

    #[error("a spec change must be a JSON object of spec fields")]
    ChangeNotObject,
    /// A spec change whose fields do not deserialize; the message is serde's.
    #[error("invalid spec change: {0}")]
    ChangeInvalid(String),
    #[error("a spec change must ask for something")]
    ChangeEmpty,
    /// `field` is shown escaped and cut short: an agent chose it.
    #[error("field {field} may not be requested by an agent (allowed: {})", ALLOWED_FIELDS.join(", "))]
    FieldNotAllowed { field: String },
    #[error("bind source {}: an agent may not bind {}", .path.display(), protected_text(.path, .protected))]
    ProtectedSource { path: PathBuf, protected: PathBuf },
    #[error("bind target {}: it would hide {reserved}, which hyperhive binds", .target.display())]
    HidesReserved {
        target: PathBuf,
        reserved: &'static str,
    },
    #[error("{field} {asked}: an agent may only lower its limits (now {now})")]
    RaisesLimit {
        field: &'static str,
        asked: u64,
        now: u64,
    },
    /// `text` is shown escaped and cut short.
    #[error("text {text} contains U+{:04X}, an invisible or control character", *.bad as u32)]
    InvisibleText { text: String, bad: char },
}

impl SpecError {
    /// This error, said about `agent`.
    pub fn for_agent(self, agent: &AgentName) -> SpecError {
        SpecError::Agent {
            agent: agent.clone(),
            error: Box::new(self),
        }
    }

    /// A `--volatile` value that is none of nspawn's modes.
    pub(super) fn volatile(s: &str) -> SpecError {
        SpecError::Volatile(s.to_owned())
    }

    /// A `--network` value that is neither host nor private.
    pub(super) fn network(s: &str) -> SpecError {
        SpecError::Network(s.to_owned())
    }

    /// This error, said about the value of `field`.
    pub fn in_field(self, field: &'static str) -> SpecError {
        SpecError::Field {
            field,
            error: Box::new(self),
        }
    }
}

/// Where the refusal crosses into code that carries errors as text (the wire's
/// InvalidArgument, a request's stored note).
impl From<SpecError> for String {
    fn from(e: SpecError) -> String {
        e.to_string()
    }
}

fn toml_text(origin: &str, line: Option<usize>, field: Option<&str>, message: &str) -> String {
    match (line, field) {
        (Some(line), Some(field)) => format!("{origin}: line {line}: {field}: {message}"),
        (Some(line), None) => format!("{origin}: line {line}: {message}"),
        (None, _) => format!("{origin}: {message}"),
    }
}

/// What an agent may not bind, said of the protected path `p` its source hits.
fn protected_text(source: &Path, p: &Path) -> String {
    if p == Path::new("/") || p == source {
        p.display().to_string()
    } else if source.starts_with(p) {
        format!("anything under {}", p.display())
    } else {
        format!("a directory holding {}", p.display())
    }
}
