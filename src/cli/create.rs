//! `hivectl create`: merge the spec file and flags, validate here (a bad value never
//! reaches the daemon), and let the daemon save, plan and start.

use std::path::PathBuf;

use anyhow::Result;

use super::{BadInput, Target};
use crate::hive::{Created, Outcome};
use crate::spec::{AgentName, AgentSpec, SpecFile};

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Agent name: a-z, 0-9 and '-', starting with a letter, at most 31 characters
    pub name: String,
    /// Spec file (TOML); the flags below override it
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// The container's root directory (absolute)
    #[arg(long, value_name = "DIR", conflicts_with = "system")]
    pub root: Option<PathBuf>,
    /// A NixOS system to boot from the store instead of a root: a toplevel in /nix/store,
    /// or any directory with an executable init
    #[arg(long, value_name = "DIR")]
    pub system: Option<PathBuf>,
    /// nspawn's --volatile mode; `--root / --volatile yes` boots an ephemeral copy of the host
    #[arg(long, value_parser = ["no", "yes", "state", "overlay"])]
    pub volatile: Option<String>,
    /// A directory to put first on the agent's PATH (repeatable)
    #[arg(long = "path", value_name = "DIR")]
    pub path: Vec<PathBuf>,
    /// An extra bind, nspawn style; escape ':' in a path as '\:' (repeatable)
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    pub bind: Vec<std::ffi::OsString>,
    /// An environment variable for the container (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit (MemoryMax=): bytes, or a number with K, M, G or T
    #[arg(long, value_name = "BYTES")]
    pub memory_max: Option<String>,
    /// CPU weight (CPUWeight=), 1-10000
    #[arg(long, value_name = "N")]
    pub cpu_weight: Option<u64>,
    /// Task limit (TasksMax=)
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<u64>,
    /// Disk bound over the agent's state, credentials and journal (the size of its disk
    /// image): bytes, or a number with K, M, G or T; at least 64M (default: hive.toml's,
    /// docs/persistence.md)
    #[arg(long, value_name = "SIZE")]
    pub disk_max: Option<String>,
    /// Network: a private namespace with only lo (default) or the host's (shares its
    /// loopback services, abstract sockets, addresses and DNS)
    #[arg(long, value_parser = ["host", "private"])]
    pub network: Option<String>,
    /// A destination the agent may reach through its egress proxy (repeatable):
    /// HOST[:PORT] (port 443 when none), *.DOMAIN[:PORT], IP[:PORT] or CIDR[:PORT]
    #[arg(long, value_name = "HOST[:PORT]")]
    pub egress: Vec<String>,
    /// A TCP port on the agent's own loopback that the host reaches on the unix socket
    /// /run/hyperhive/NAME/port-PORT.sock, e.g. its web UI (repeatable; private network)
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Whether hive-c0re brings the agent back by itself at its start, after a reboot and
    /// on reload (default yes)
    #[arg(
        long,
        value_name = "yes|no",
        value_parser = yes_no()
    )]
    pub autostart: Option<bool>,
    /// Whether the container gets its own user namespace, so its root is an unprivileged
    /// host UID range (default yes; `no` makes the agent real host root in its container)
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new(), value_name = "yes|no")]
    pub private_users: Option<bool>,
    /// A capability the agent keeps among those hyperhive drops (CAP_NET_RAW,
    /// CAP_NET_BROADCAST, CAP_LINUX_IMMUTABLE, CAP_AUDIT_CONTROL, CAP_SYS_TTY_CONFIG;
    /// repeatable)
    #[arg(long = "capability", value_name = "CAP")]
    pub capabilities: Vec<String>,
    /// Run the harness command once per turn, woken by decisions and `hivectl tell`
    /// (docs/agent-side.md)
    #[arg(long)]
    pub turns: bool,
    /// With --turns: seconds a turn may run before it is killed (default 600)
    #[arg(long, value_name = "SECS")]
    pub turn_timeout: Option<u64>,
    /// Seconds a listening agent is given to finish its turn before an approved change
    /// restarts its container (0 to 60; default 3)
    #[arg(long, value_name = "SECS")]
    pub restart_grace: Option<u64>,
    #[command(flatten)]
    pub claude: super::create_claude::ClaudeArgs,
    /// The harness command and its arguments; must come last
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
    pub harness: Option<Vec<String>>,
    /// Replace an existing agent's different spec with this one (restarting it); without
    /// it, create refuses and lists the differences
    #[arg(long)]
    pub replace: bool,
    /// Print nothing on success
    #[arg(long, short)]
    pub quiet: bool,
}

/// `yes` or `no`, as the spec file's `autostart = true|false` reads to an admin.
fn yes_no() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["yes", "no"]).map(|v| v == "yes")
}

impl CreateArgs {
    /// The merged, validated spec; every error is bad input.
    pub fn spec(&self) -> Result<AgentSpec, BadInput> {
        let name = AgentName::parse(&self.name).map_err(|e| BadInput(e.to_string()))?;
        let base = match &self.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    BadInput(format!(
                        "spec file {}: {}",
                        path.display(),
                        crate::safe_fs::io_reason(&e)
                    ))
                })?;
                SpecFile::from_toml(&text, &path.display().to_string())
                    .map_err(|e| BadInput(e.to_string()))?
            }
            None => SpecFile::default(),
        };
        let mut flags = SpecFile {
            root: self.root.clone(),
            system: self.system.clone(),
            path: self.path.clone(),
            cpu_weight: self.cpu_weight,
            tasks_max: self.tasks_max,
            harness: self.harness.clone(),
            autostart: self.autostart,
            private_users: self.private_users,
            capabilities: self.capabilities.clone(),
            egress: self.egress.clone(),
            ports: self.ports.clone(),
            turns: self.turns.then_some(true),
            turn_timeout: self.turn_timeout,
            restart_grace: self.restart_grace,
            claude: self.claude.layer(),
            ..Default::default()
        };
        flags.volatile = self
            .volatile
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: crate::spec::SpecError| BadInput(e.to_string()))?;
        flags.network = self
            .network
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: crate::spec::SpecError| BadInput(e.to_string()))?;
        flags.memory_max = self.memory_max.clone().map(crate::spec::size::Size::Text);
        flags.disk_max = self.disk_max.clone().map(crate::spec::size::Size::Text);
        // Taken as raw bytes so that one not valid UTF-8 is a one-line refusal (exit 2).
        flags.bind = self
            .bind
            .iter()
            .map(|b| {
                b.to_str()
                    .map(|s| crate::spec::bind::BindEntry::Short(s.to_owned()))
                    .ok_or_else(|| BadInput(format!("--bind {b:?}: not valid UTF-8")))
            })
            .collect::<Result<_, _>>()?;
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| BadInput(format!("--env {kv:?}: use KEY=VALUE")))?;
            flags.env.insert(k.to_owned(), v.to_owned());
        }
        AgentSpec::validate(&name, &base.overlay(flags)).map_err(|e| BadInput(e.to_string()))
    }
}

/// The spec file (if any) is read here, on the machine hivectl runs on, also with -H.
pub async fn run(t: &Target, args: CreateArgs) -> Result<()> {
    let spec = args.spec()?;
    let manager = t.manager().await?;
    let toml = spec.to_file().to_toml();
    let outcome = if args.replace {
        manager.replace_agent(spec.name.as_str(), &toml).await?
    } else {
        manager.create_agent(spec.name.as_str(), &toml).await?
    };
    if !args.quiet {
        let name = &spec.name;
        let what = match Created::parse(&outcome) {
            Some(Created::Unchanged) => {
                "unchanged: it already has this spec, its running unit adopted as it is".into()
            }
            Some(Created::Done(Outcome::Adopted)) => "already running, adopted".into(),
            Some(Created::Done(Outcome::Replaced)) => "replaced with a new unit".into(),
            Some(Created::Done(Outcome::Switched)) => "switched to its new system in place".into(),
            Some(Created::Done(Outcome::Created)) => "created and running".into(),
            // A newer daemon's word: shown as it said it, not taken for another.
            None => format!("done: {outcome}"),
        };
        println!(
            "agent {name}: {what} ({}, machine {})",
            name.container_unit(),
            name.machine()
        );
    }
    Ok(())
}
