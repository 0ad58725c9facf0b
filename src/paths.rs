//! Where hyperhive keeps things (docs/persistence.md, docs/units.md); every root can be moved by a
//! flag or environment variable so tests and odd hosts can point elsewhere.

use std::path::{Path, PathBuf};

use crate::spec::AgentName;

/// Where the agent socket appears inside the container (`HIVE_SOCKET`).
pub const SOCKET_IN_CONTAINER: &str = "/run/hyperhive/hive.sock";

/// The egress proxy's socket in its directory (the proxy listens on it, the container
/// binds it; defined with the paths both read).
pub const EGRESS_SOCKET_FILE: &str = "proxy.sock";

pub const DEFAULT_STATE_ROOT: &str = "/var/lib/hyperhive";
pub const DEFAULT_RUN_ROOT: &str = "/run/hyperhive";
pub const DEFAULT_CONFIG_ROOT: &str = "/etc/hyperhive";

/// The three roots. `run` must live under `/run`, because agent units name their runtime
/// directory relative to it (`RuntimeDirectory=hyperhive/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub state: PathBuf,
    pub run: PathBuf,
    pub config: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            state: DEFAULT_STATE_ROOT.into(),
            run: DEFAULT_RUN_ROOT.into(),
            config: DEFAULT_CONFIG_ROOT.into(),
        }
    }
}

impl Roots {
    /// Host paths an agent may never bind, nor any path under them, nor a directory
    /// holding one (binding `/var/lib` would hand over `/var/lib/hyperhive`): the kernel's
    /// and systemd's trees and hyperhive's own roots, wherever they are configured.
    pub fn protected(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = ["/proc", "/sys", "/dev", "/run"]
            .iter()
            .map(PathBuf::from)
            .collect();
        for p in [
            self.state.as_path(),
            self.run.as_path(),
            self.config.as_path(),
            Path::new(DEFAULT_STATE_ROOT),
            Path::new(DEFAULT_CONFIG_ROOT),
        ] {
            if !out.iter().any(|o| o == p) {
                out.push(p.to_owned());
            }
        }
        out
    }

    /// Checks the roots once so later path joins can be trusted.
    pub fn validate(self) -> Result<Self, String> {
        for (what, p) in [
            ("state root", &self.state),
            ("run root", &self.run),
            ("config root", &self.config),
        ] {
            if !p.is_absolute() {
                return Err(format!("{what} {}: must be an absolute path", p.display()));
            }
        }
        match self.run.strip_prefix("/run") {
            Ok(rel) if !rel.as_os_str().is_empty() => Ok(self),
            _ => Err(format!(
                "run root {}: must be a directory below /run (systemd's RuntimeDirectory= is relative to /run)",
                self.run.display()
            )),
        }
    }

    /// The approvals store (SQLite, WAL).
    pub fn store(&self) -> PathBuf {
        self.state.join("hive.sqlite")
    }

    /// `<state>/agents`: one directory per agent ever created.
    pub fn agents_dir(&self) -> PathBuf {
        self.state.join("agents")
    }

    /// `<state>/agents/<name>`: survives destroy; only `--purge` removes it.
    pub fn agent_dir(&self, name: &AgentName) -> PathBuf {
        self.agents_dir().join(name.as_str())
    }

    /// Bound read-write at `/state` inside the container.
    pub fn state_dir(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("state")
    }

    /// Bound read-write at `/root/.claude`; one per agent because OAuth refresh tokens
    /// rotate and a shared directory would log every sibling out (seed gotcha).
    pub fn claude_dir(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("claude")
    }

    /// The agent's filesystem image, where the host bounds disks with them: it holds
    /// everything the agent writes on the host (docs/persistence.md, "Disk"). Kept by
    /// destroy; only `--purge` deletes it.
    pub fn disk_image(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("disk.img")
    }

    /// Where the agent's image is mounted; its `state/` and `claude/` are the bind sources
    /// then, instead of [`Self::state_dir`] and [`Self::claude_dir`].
    pub fn disk_dir(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("disk")
    }

    /// The spec `hivectl create` saved; present while the agent exists.
    pub fn saved_spec(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("spec.toml")
    }

    /// Where an agent's spec may be, in the order it is looked for: the one `create` saved
    /// wins over a declared one.
    pub fn spec_paths(&self, name: &AgentName) -> [PathBuf; 2] {
        [self.saved_spec(name), self.declared_spec(name)]
    }

    /// A declared spec, e.g. rendered by the NixOS module.
    pub fn declared_spec(&self, name: &AgentName) -> PathBuf {
        self.config.join("agents").join(format!("{name}.toml"))
    }

    /// `/run/hyperhive/.stopped/<name>`: `hivectl stop` was run for the agent since the host
    /// booted, so reconcile leaves it down. In /run because a reboot should bring autostart
    /// agents back whatever was stopped before it; the leading `.` keeps it from ever being
    /// an agent's name.
    pub fn stopped_marker(&self, name: &AgentName) -> PathBuf {
        self.run.join(".stopped").join(name.as_str())
    }

    /// `/run/hyperhive/<name>`, bound at `/run/hyperhive` inside; holds the agent socket.
    pub fn runtime_dir(&self, name: &AgentName) -> PathBuf {
        self.run.join(name.as_str())
    }

    /// The runtime dir as systemd's `RuntimeDirectory=` wants it: relative to /run.
    pub fn runtime_directory_property(&self, name: &AgentName) -> Vec<String> {
        let rel = self
            .run
            .strip_prefix("/run")
            .unwrap_or(Path::new("hyperhive"));
        vec![rel.join(name.as_str()).to_string_lossy().into_owned()]
    }
}
