//! One layer of a spec as written: a spec file's TOML or `hivectl create`'s flags, every
//! field optional, merged before [`AgentSpec::validate`](super::AgentSpec::validate).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::*;

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
    /// One bound over everything the agent writes on the host: state, credentials and
    /// journal (docs/persistence.md). Default: hive.toml's `[agents] disk_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_max: Option<size::Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Allowlist of the agent's egress proxy: `HOST[:PORT]` (port 443 when none),
    /// `*.example.com`, an address or a CIDR (spec/egress.rs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// TCP ports on the agent's own loopback that the host reaches on unix sockets under
    /// the agent's runtime dir (private network only; an admin's choice, never an
    /// agent's request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
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
    /// Seconds a listening agent is given between being told an approved change restarts
    /// its container and the restart (docs/agent-side.md). Default: the daemon's (3 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_grace: Option<u64>,
    /// A Claude Code agent (spec/claude.rs). Kept last: TOML writes tables after values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claude: Option<ClaudeFile>,
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
        self.disk_max = over.disk_max.or(self.disk_max);
        self.network = over.network.or(self.network);
        // Entries laid over again are the same entries (an approval resumed converges).
        for e in over.egress {
            if !self.egress.contains(&e) {
                self.egress.push(e);
            }
        }
        for p in over.ports {
            if !self.ports.contains(&p) {
                self.ports.push(p);
            }
        }
        self.harness = over.harness.or(self.harness);
        self.autostart = over.autostart.or(self.autostart);
        self.private_users = over.private_users.or(self.private_users);
        self.turns = over.turns.or(self.turns);
        self.turn_timeout = over.turn_timeout.or(self.turn_timeout);
        self.restart_grace = over.restart_grace.or(self.restart_grace);
        self.claude = match (self.claude, over.claude) {
            (Some(mine), Some(theirs)) => Some(mine.overlay(theirs)),
            (mine, theirs) => theirs.or(mine),
        };
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
