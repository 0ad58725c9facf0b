//! hive-c0re's command line.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

use super::RootArgs;
use crate::plan::{Host, DEFAULT_BASE_PATH};
use crate::systemd::Systemd;

/// Where systemd-nspawn is looked for when --nspawn is not given (NixOS first).
const NSPAWN_CANDIDATES: [&str; 3] = [
    "/run/current-system/sw/bin/systemd-nspawn",
    "/usr/bin/systemd-nspawn",
    "/bin/systemd-nspawn",
];

#[derive(Debug, Parser)]
#[command(
    name = "hive-c0re",
    version,
    about = "The hyperhive daemon: runs each agent as transient systemd units over D-Bus",
    long_about = "The hyperhive daemon. Runs as hive-c0re.service (Type=notify). Creates each \
agent's container as a transient unit hive-agent-<name>.service through systemd's D-Bus API, \
serves the admin API org.hyperhive.Hive1 on the system bus, and writes events to journald. \
Restarting it never stops an agent."
)]
pub struct Args {
    #[command(flatten)]
    pub opts: DaemonOpts,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Args)]
pub struct DaemonOpts {
    #[command(flatten)]
    pub roots: RootArgs,
    /// The systemd-nspawn binary agents' containers run (default: the first of
    /// /run/current-system/sw/bin, /usr/bin, /bin that has it)
    #[arg(long, env = "HYPERHIVE_NSPAWN", value_name = "PATH")]
    pub nspawn: Option<PathBuf>,
    /// The hive-harness binary bound into every container (default: beside hive-c0re)
    #[arg(long, env = "HYPERHIVE_HARNESS", value_name = "PATH")]
    pub harness: Option<PathBuf>,
    /// The host's git binary; its directory goes on every agent's PATH
    #[arg(long, env = "HYPERHIVE_GIT", value_name = "PATH")]
    pub git: Option<PathBuf>,
    /// PATH entries after each agent's own, ':'-separated
    /// (default: /run/current-system/sw/bin and the FHS bin directories)
    #[arg(long, env = "HYPERHIVE_BASE_PATH", value_name = "DIRS")]
    pub base_path: Option<String>,
    /// Bus to serve on and to reach systemd through (default: the system bus)
    #[arg(
        long,
        env = "HYPERHIVE_BUS_ADDRESS",
        value_name = "ADDRESS",
        hide = true
    )]
    pub bus_address: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one agent's egress proxy on the socket systemd passes it (run as
    /// hive-egress-<name>.service, started by hive-egress-<name>.socket)
    EgressProxy {
        /// The agent whose allowlist it enforces
        #[arg(long)]
        agent: String,
        /// The directory that holds its allowlist file
        #[arg(long)]
        dir: PathBuf,
    },
    /// Publish an agent's ports on unix sockets (run by hive-c0re as
    /// hive-ports-<name>.service)
    PortForward {
        /// The agent whose ports it publishes
        #[arg(long)]
        agent: String,
        /// Its machine, h-<agent>
        #[arg(long)]
        machine: String,
        /// Where the sockets go: its runtime directory
        #[arg(long)]
        dir: PathBuf,
        /// A port on the agent's loopback (repeatable)
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
    /// Forget a dead agent machine in machined (run by agent units' ExecStopPost=)
    UnregisterMachine {
        /// Machine name, h-<agent>
        machine: String,
    },
}

impl DaemonOpts {
    /// The host facts plans are made from. The inherited PATH is never consulted.
    pub fn host(&self) -> Result<Host> {
        let roots = self.roots.roots()?;
        let nspawn = match &self.nspawn {
            Some(p) => p.clone(),
            None => NSPAWN_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from(NSPAWN_CANDIDATES[1])),
        };
        let hive_c0re = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .map_err(|e| anyhow::anyhow!("locating the hive-c0re binary: {e}"))?;
        // A missing harness is reported by preflight when an agent is created, not here:
        // the daemon must still start so that admins can list and stop agents.
        let hive_harness = match &self.harness {
            Some(p) => p.clone(),
            None => hive_c0re.with_file_name("hive-harness"),
        };
        let mut base_path: Vec<PathBuf> = Vec::new();
        if let Some(git_dir) = self.git.as_ref().and_then(|g| g.parent()) {
            base_path.push(git_dir.to_path_buf());
        }
        match &self.base_path {
            Some(dirs) => {
                base_path.extend(dirs.split(':').filter(|d| !d.is_empty()).map(PathBuf::from))
            }
            None => base_path.extend(DEFAULT_BASE_PATH.iter().map(PathBuf::from)),
        }
        if let Some(bad) = base_path.iter().find(|p| !p.is_absolute()) {
            anyhow::bail!("base PATH entry {}: must be absolute", bad.display());
        }
        let defaults = crate::hive::bounds::load_defaults(&roots.config)?;
        // Never silently unbounded: said at every start either way.
        let disk_images = match crate::disk::images_available() {
            Ok(()) => {
                log::info!(
                    "disk bounds (disk_max) enforced: each agent's state and credentials live \
                     in its own filesystem image, mounted from a loop device"
                );
                true
            }
            Err(reason) => {
                log::warn!("{}", crate::disk::not_enforced(&reason));
                false
            }
        };
        Ok(Host {
            roots,
            nspawn,
            hive_c0re,
            hive_harness,
            base_path,
            journal: crate::plan::persistent_journal(),
            defaults,
            disk_images,
        })
    }
}

pub async fn serve(opts: DaemonOpts) -> Result<()> {
    let host = opts.host()?;
    crate::serve::run(host, opts.bus_address).await
}

pub async fn unregister_machine(machine: &str, bus_address: Option<String>) -> Result<()> {
    // Only ever one of ours: the name becomes part of a path below.
    let agent = machine
        .strip_prefix("h-")
        .and_then(|n| crate::spec::AgentName::parse(n).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("{machine:?} is not a hyperhive machine name (h-<agent>)")
        })?;
    let conn = super::connect(bus_address.as_deref()).await?;
    let unregistered = Systemd::reader(&conn)
        .await?
        .unregister_machine(machine)
        .await;
    // systemd-nspawn 256 and later export sockets through this directory and remove it
    // when they exit; a killed nspawn leaves it, and the restart then refuses to start
    // ("Mount point ... exists already"). The agent could write into it, so it goes
    // without following anything inside.
    let export = Path::new(NSPAWN_UNIX_EXPORT).join(agent.machine());
    // A tmpfs nspawn mounted there; detached, not followed if something else is there.
    match rustix::mount::unmount(
        &export,
        rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
    ) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(e) => log::warn!("unmounting {}: {e}", export.display()),
    }
    let removed = crate::safe_fs::remove_tree(&export);
    unregistered?;
    removed
}

/// Where systemd-nspawn (256+) keeps each container's exported-sockets directory.
const NSPAWN_UNIX_EXPORT: &str = "/run/systemd/nspawn/unix-export";

/// `hive-c0re port-forward`: one agent's published ports, on a single-threaded runtime,
/// under the journal identifier hive-ports.
pub fn port_forward(
    agent: &str,
    machine: &str,
    dir: &std::path::Path,
    ports: &[u16],
) -> std::process::ExitCode {
    crate::logging::init("hive-ports", log::LevelFilter::Info);
    let agent = match crate::spec::AgentName::parse(agent) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("ports of {agent}: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run = crate::ports::run(
        agent.clone(),
        machine.to_owned(),
        dir.to_path_buf(),
        ports.to_vec(),
    );
    match rt.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("ports of {agent}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `hive-c0re egress-proxy`: one agent's proxy on a single-threaded runtime (a few MiB per
/// agent), its own journal identifier so its entries are told from the daemon's.
pub fn egress_proxy(agent: &str, dir: &std::path::Path) -> std::process::ExitCode {
    crate::logging::init("hive-egress", log::LevelFilter::Info);
    let agent = match crate::spec::AgentName::parse(agent) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("egress proxy of {agent}: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Taken before any thread starts: the crate reads and clears the environment.
    let listener = match listenfd::ListenFd::from_env().take_unix_listener(0) {
        Ok(Some(l)) => l,
        Ok(None) => {
            log::error!(
                "egress proxy of {agent}: no socket from systemd (LISTEN_FDS): it runs as hive-egress-{agent}.service, started by its .socket"
            );
            return std::process::ExitCode::from(2);
        }
        Err(e) => {
            log::error!("egress proxy of {agent}: the socket from systemd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(crate::egress::run(
        agent.clone(),
        dir.to_path_buf(),
        listener,
    )) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("egress proxy of {agent}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
