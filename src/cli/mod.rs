//! Command-line definitions (clap) and one module per group of verbs. The same
//! definitions generate the man pages and shell completions.

pub mod approvals;
pub mod bounds;
pub mod crash;
pub mod create;
pub mod create_claude;
pub mod daemon;
pub mod daemon_call;
pub mod hive_harness;
pub mod lifecycle;
pub mod list;
pub mod login;
pub mod logs;
pub mod network_status;
pub mod plan_reload;
pub mod remote;
pub mod render;
pub mod status;
pub mod status_text;
pub mod tell;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::paths::{Roots, DEFAULT_CONFIG_ROOT, DEFAULT_RUN_ROOT, DEFAULT_STATE_ROOT};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for an operation that was tried and failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or bad input; nothing was touched.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Bad input found before anything was asked of the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

#[derive(Debug, Clone, clap::Args)]
pub struct RootArgs {
    /// Root of agents' persistent state and the store
    #[arg(long, env = "HYPERHIVE_STATE_ROOT", value_name = "DIR", default_value = DEFAULT_STATE_ROOT)]
    pub state_root: PathBuf,
    /// Root of agents' runtime directories (below /run)
    #[arg(long, env = "HYPERHIVE_RUN_ROOT", value_name = "DIR", default_value = DEFAULT_RUN_ROOT)]
    pub run_root: PathBuf,
    /// Root of declared configuration (agents/<name>.toml)
    #[arg(long, env = "HYPERHIVE_CONFIG_ROOT", value_name = "DIR", default_value = DEFAULT_CONFIG_ROOT)]
    pub config_root: PathBuf,
}

impl RootArgs {
    pub fn roots(&self) -> Result<Roots> {
        Roots {
            state: self.state_root.clone(),
            run: self.run_root.clone(),
            config: self.config_root.clone(),
        }
        .validate()
        .map_err(|e| BadInput(e).into())
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "hivectl",
    version,
    about = "Control the hyperhive daemon and its agents",
    long_about = "Control the hyperhive daemon (hive-c0re) and its agents. Verbs that change \
something go through the daemon's D-Bus API (org.hyperhive.Hive1); list and status read unit \
state from systemd directly, so they work while the daemon is down. With -H [USER@]HOST \
the same verbs reach another host's daemon and systemd over ssh, as systemctl -H does.\n\n\
Exit status: 0 done, 1 failed, 2 bad usage or bad input (nothing was touched).",
    after_help = "Every agent is a transient unit hive-agent-<name>.service in hive.slice: \
systemctl, journalctl and machinectl (machine h-<name>) see it as they see any unit."
)]
pub struct Args {
    #[command(flatten)]
    pub roots: RootArgs,
    /// Operate on a remote host, like systemctl -H: over `ssh -xT [USER@]HOST
    /// systemd-stdio-bridge` ($SYSTEMD_SSH overrides ssh); logs runs journalctl there
    #[arg(
        short = 'H',
        long = "host",
        global = true,
        value_name = "[USER@]HOST[:PORT]"
    )]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where hivectl's calls go: this host's system bus, or another host's over ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local,
    Remote(remote::Host),
}

impl Target {
    /// From `-H`; a bad value is bad input (exit 2) before anything is run.
    pub fn from_arg(host: Option<&str>) -> Result<Target, BadInput> {
        match host {
            None => Ok(Target::Local),
            Some(h) => remote::Host::parse(h).map(Target::Remote),
        }
    }

    /// The system bus of the target host.
    pub async fn connect(&self) -> Result<zbus::Connection> {
        match self {
            Target::Local => connect(None).await,
            Target::Remote(h) => h.connect().await,
        }
    }

    /// The daemon's manager object on the target host.
    pub async fn manager(&self) -> Result<crate::api::client::ManagerProxy<'static>> {
        let conn = self.connect().await?;
        Ok(crate::api::client::ManagerProxy::new(&conn).await?)
    }

    pub fn remote(&self) -> Option<&remote::Host> {
        match self {
            Target::Local => None,
            Target::Remote(h) => Some(h),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an agent and start its container (the same spec again changes nothing; another spec needs --replace)
    Create(Box<create::CreateArgs>),
    /// Start an agent's container from its spec
    Start(lifecycle::NameArg),
    /// Stop an agent's container; its state and spec stay
    Stop(lifecycle::NameArg),
    /// Restart an agent's container as it is
    Restart(lifecycle::NameArg),
    /// Recreate an agent's units from its current spec
    Rebuild(lifecycle::NameArg),
    /// Tell an agent something: wakes its turn loop with the message (root, hive-admin)
    Tell(tell::TellArgs),
    /// Run Claude Code's own login flow (`claude auth login`) in a Claude Code agent's
    /// container, on this terminal; its credentials stay the agent's own (root)
    Login(login::LoginArgs),
    /// Stop an agent and remove its spec; state and credentials stay unless --purge
    Destroy(lifecycle::DestroyArgs),
    /// List agents with their unit states, read from systemd
    List(list::ListArgs),
    /// Show one agent's units, state and paths, read from systemd
    Status(status::StatusArgs),
    /// Show the agent's journal: daemon events, its container and its harness
    Logs(logs::LogsArgs),
    /// List approvals agents asked for (pending ones unless --all), or show what approving
    /// one would do (--show ID)
    Approvals(approvals::ListArgs),
    /// Approve a pending request and apply it (rebuilds the agent)
    Approve(approvals::DecideArgs),
    /// Deny a pending request
    Deny(approvals::DecideArgs),
    /// Show what reload would do (create, rebuild, keep, stop), the host checks, the units
    /// and their diff against the live ones; touches nothing
    Plan(plan_reload::PlanArgs),
    /// Bring every agent to its spec now, as hive-c0re does at its start (also on SIGHUP
    /// and systemctl reload hive-c0re)
    Reload(plan_reload::ReloadArgs),
}

pub async fn run(args: Args) -> Result<()> {
    let t = &Target::from_arg(args.host.as_deref())?;
    match args.command {
        Command::Create(a) => create::run(t, *a).await,
        Command::Start(a) => lifecycle::start(t, a).await,
        Command::Stop(a) => lifecycle::stop(t, a).await,
        Command::Restart(a) => lifecycle::restart(t, a).await,
        Command::Rebuild(a) => lifecycle::rebuild(t, a).await,
        Command::Tell(a) => tell::run(t, a).await,
        Command::Login(a) => login::run(t, a).await,
        Command::Destroy(a) => lifecycle::destroy(t, &args.roots, a).await,
        Command::List(a) => list::list(t, &args.roots, a).await,
        Command::Status(a) => status::status(t, &args.roots, a).await,
        Command::Logs(a) => logs::run(t, &args.roots, a),
        Command::Approvals(a) => approvals::list(t, a).await,
        Command::Approve(a) => approvals::approve(t, a).await,
        Command::Deny(a) => approvals::deny(t, a).await,
        Command::Plan(a) => plan_reload::plan(t, a).await,
        Command::Reload(a) => plan_reload::reload(t, a).await,
    }
}

/// Connects to the system bus, or to `address` (tests, remote bridges).
pub async fn connect(address: Option<&str>) -> Result<zbus::Connection> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a)?,
        None => zbus::connection::Builder::system()?,
    };
    builder
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the system bus: {e} (is D-Bus running?)"))
}

/// Maps an error to hivectl's exit code and a one-line message.
/// clap's usage error as hivectl's one line (without `hivectl: `): its message, and the
/// possible values when clap lists them; the `tip:`/`Usage:`/`For more information` lines
/// are left to `--help`.
pub fn clap_one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    // The first paragraph: the message and what clap indents under it (the missing
    // arguments, the possible values).
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let first = first.join(" ");
    let first = first.trim_start_matches("error: ").trim_end_matches(':');
    if first.is_empty() {
        "bad usage; see --help".into()
    } else {
        format!("{first}; see --help")
    }
}

/// What the bus policy's refusal means for the admin: which verb it was (dbus-daemon
/// names the member in its message) and who may call it.
fn denied(detail: &str) -> String {
    let member = detail
        .split("member=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    let policy = "D-Bus policy org.hyperhive.Hive1.conf";
    match member {
        "ListApprovals" | "ListApprovalsPage" | "LastApprovalId" | "GetApproval"
        | "ShowApproval" => format!(
            "access denied: reading approvals needs root or membership in group hive-admin ({policy})"
        ),
        "Approve" | "Deny" => format!(
            "access denied: deciding approvals needs root or membership in group hive-admin ({policy})"
        ),
        "LoginAgent" => format!(
            "access denied: logging in an agent needs root: it runs a program in the agent's container ({policy})"
        ),
        "TellAgent" => format!(
            "access denied: telling an agent needs root or membership in group hive-admin ({policy})"
        ),
        "Plan" => format!(
            "access denied: plan needs root, though it changes nothing: it shows the agents' whole \
             units, their environment included ({policy}); list and status work for anyone"
        ),
        _ => format!("access denied: only root may change agents ({policy})"),
    }
}

pub fn classify(err: &anyhow::Error) -> (u8, String) {
    let msg = crate::spec::one_line(&format!("{err:#}"));
    if err.chain().any(|e| e.is::<BadInput>()) {
        return (EXIT_BAD_INPUT, msg);
    }
    if let Some(exit) = err
        .chain()
        .find_map(|e| e.downcast_ref::<plan_reload::Exit>())
    {
        return (exit.code, msg);
    }
    for e in err.chain() {
        if let Some(zerr @ zbus::Error::MethodError(name, detail, _)) =
            e.downcast_ref::<zbus::Error>()
        {
            let detail = crate::spec::one_line(&detail.clone().unwrap_or_default());
            return match name.as_str() {
                // No one owns the name and the bus cannot start the daemon (no activation
                // file installed: units/dbus-1/system-services).
                "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                    (EXIT_FAILED, "hive-c0re is not running (systemctl start hive-c0re)".into())
                }
                // D-Bus activation was tried and systemd refused or failed it (masked, start
                // limit hit, the daemon failed to start), or the daemon did not take its name
                // within the bus's bound.
                "org.freedesktop.systemd1.UnitMasked" => (
                    EXIT_FAILED,
                    "hive-c0re is not running and hive-c0re.service is masked, so the bus may not \
                     start it (systemctl unmask hive-c0re)"
                        .into(),
                ),
                n if n.starts_with("org.freedesktop.systemd1.")
                    || n.starts_with("org.freedesktop.DBus.Error.Spawn")
                    || n == "org.freedesktop.DBus.Error.TimedOut" =>
                {
                    (
                        EXIT_FAILED,
                        format!("hive-c0re is not running and could not be started: {detail} (see systemctl status hive-c0re)"),
                    )
                }
                // The daemon went away mid-call (crashed, killed by its watchdog, restarted):
                // the bus answers for it. What it was doing may or may not have happened.
                "org.freedesktop.DBus.Error.NoReply" => (
                    EXIT_FAILED,
                    "hive-c0re stopped before answering (crashed or restarted?): see systemctl status hive-c0re; \
                     the operation may have been done in part — hivectl status or plan shows where the agent is"
                        .into(),
                ),
                // The bus policy refused the call before the daemon saw it.
                "org.freedesktop.DBus.Error.AccessDenied" => (EXIT_FAILED, denied(&detail)),
                // The daemon's own errors, decoded into the type it sent them as.
                _ => match crate::api::Error::from(zerr.clone()) {
                    crate::api::Error::InvalidArgument(_)
                    | crate::api::Error::NoSuchAgent(_)
                    | crate::api::Error::NoSuchApproval(_)
                    | crate::api::Error::AlreadyDecided(_) => (EXIT_BAD_INPUT, detail),
                    crate::api::Error::AccessDenied(_) => {
                        (EXIT_FAILED, format!("access denied: {detail}"))
                    }
                    crate::api::Error::Failed(_) | crate::api::Error::ZBus(_) => {
                        (EXIT_FAILED, detail)
                    }
                },
            };
        }
    }
    (EXIT_FAILED, msg)
}

#[cfg(test)]
mod usage_tests {
    use clap::Parser;

    #[test]
    fn a_bad_value_is_one_line_with_the_possible_values() {
        let err =
            super::Args::try_parse_from(["hivectl", "logs", "alice", "-o", "fancy"]).unwrap_err();
        let line = super::clap_one_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("invalid value 'fancy' for '--output <MODE>'"),
            "{line}"
        );
        assert!(line.contains("[possible values: short,"), "{line}");
    }

    #[test]
    fn a_denial_says_who_may_call_that_verb() {
        let msg = |m: &str| {
            super::denied(&format!(
                "Rejected send message, 1 matched rules; type=\"method_call\", sender=\":1.9\" \
                 (uid=1001 pid=7 comm=\"hivectl\") interface=\"org.hyperhive.Hive1.Manager\" \
                 member=\"{m}\" error name=\"(unset)\""
            ))
        };
        for m in [
            "ListApprovals",
            "ListApprovalsPage",
            "LastApprovalId",
            "ShowApproval",
        ] {
            assert!(
                msg(m).contains("reading approvals needs root or membership in group hive-admin")
            );
        }
        assert!(msg("Approve").contains("deciding approvals"));
        assert!(msg("Plan").contains("plan needs root, though it changes nothing"));
        assert!(msg("StopAgent").contains("only root may change agents"));
        assert!(super::denied("").contains("only root may change agents"));
    }

    #[test]
    fn a_missing_argument_is_named() {
        let err = super::Args::try_parse_from(["hivectl", "stop"]).unwrap_err();
        let line = super::clap_one_line(&err);
        assert!(line.contains("not provided: <NAME>"), "{line}");
    }

    #[test]
    fn autostart_takes_yes_or_no() {
        let ok = super::Args::try_parse_from([
            "hivectl",
            "create",
            "a",
            "--root",
            "/",
            "--autostart",
            "no",
        ]);
        assert!(ok.is_ok());
        let err = super::Args::try_parse_from([
            "hivectl",
            "create",
            "a",
            "--root",
            "/",
            "--autostart",
            "true",
        ])
        .unwrap_err();
        assert!(super::clap_one_line(&err).contains("[possible values: yes, no]"));
    }
}
