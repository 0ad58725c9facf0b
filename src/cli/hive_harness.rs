//! hive-harness's command line (in src/cli so man pages and completions cover it too).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::journal::fields;
use crate::socket::protocol::{Reply, Request};
use crate::socket::SOCKET_IN_CONTAINER;

#[derive(Debug, Parser)]
#[command(
    name = "hive-harness",
    version,
    about = "The hyperhive harness: connects an agent's container to hive-c0re and runs the agent's command",
    long_about = "The hyperhive harness, run inside each agent's container as hive-harness.service \
(Type=notify, created by hive-c0re). It connects to the agent socket, reports READY=1 once \
connected, feeds systemd's watchdog from its own loop (a daemon outage never kills it; it \
reconnects with backoff and queues events meanwhile), runs the agent's command (after \
--) and records events in /state/hyperhive-events.sqlite, among them the decisions on the \
agent's approvals that the daemon pushes. The request-approval subcommand lets the agent ask \
an admin for a change of its own spec; the mcp subcommand serves the same and more as MCP \
tools for the agent's AI.",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// The agent socket
    #[arg(long, env = fields::ENV_SOCKET, default_value = SOCKET_IN_CONTAINER, global = true)]
    pub socket: PathBuf,
    /// The agent's durable event log (SQLite)
    #[arg(long, default_value = "/state/hyperhive-events.sqlite")]
    pub events: PathBuf,
    /// Run the agent's command once per turn: at start and on each wake (a decision on one
    /// of its approvals, an admin's `hivectl tell`), with the wake on stdin (JSON) and in
    /// HIVE_TURN, HIVE_WAKE_REASON, HIVE_WAKE_MESSAGE (the spec's `turns`); see
    /// docs/agent-side.md
    #[arg(long)]
    pub turns: bool,
    /// With --turns: seconds a turn may run before it is killed and the loop goes on
    #[arg(long, value_name = "SECS", default_value_t = crate::spec::DEFAULT_TURN_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub turn_timeout: u64,
    /// With --turns: run the Claude Code CLI (`claude`, from PATH) each turn, with the
    /// hive's MCP server registered, the wake as a prompt, the session resumed (the spec's
    /// `[claude]`); see docs/agent-side.md
    #[arg(long, requires = "turns", conflicts_with = "command")]
    pub claude: bool,
    /// With --claude: the model
    #[arg(long, value_name = "MODEL", requires = "claude")]
    pub claude_model: Option<String>,
    /// With --claude: a tool claude may use unasked (repeatable)
    #[arg(long, value_name = "TOOL", requires = "claude")]
    pub claude_allowed_tool: Vec<String>,
    /// With --claude: who answers claude's permission questions
    #[arg(
        long,
        value_name = "WHO",
        default_value = "approvals",
        requires = "claude"
    )]
    pub claude_permission: crate::spec::claude::Permission,
    /// With --claude: seconds a permission question waits for an admin
    #[arg(long, value_name = "SECS", default_value_t = crate::spec::claude::DEFAULT_PERMISSION_TIMEOUT, requires = "claude")]
    pub claude_permission_timeout: u64,
    /// With --claude: dollars a day (UTC); past it, wakes wait
    #[arg(long, value_name = "USD", requires = "claude")]
    pub claude_budget_usd: Option<f64>,
    /// With --claude: text appended to the system prompt
    #[arg(long, value_name = "TEXT", requires = "claude")]
    pub claude_prompt: Option<String>,
    /// With --claude: the systemd credential holding an API key
    #[arg(long, value_name = "NAME", requires = "claude")]
    pub claude_api_key_credential: Option<String>,
    #[command(subcommand)]
    pub request: Option<HarnessCommand>,
    /// The agent's command and its arguments (none: just stay connected)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum HarnessCommand {
    /// Ask an admin for a change (prints the approval's id); e.g.
    /// `request-approval spec_change '{"path": ["/opt/x/bin"]}'`
    RequestApproval {
        /// What is asked for: spec_change
        kind: String,
        /// The request as JSON; for spec_change, spec fields to lay over the agent's spec
        payload: String,
    },
    /// Serve the agent's tools over MCP on stdin/stdout, for the agent's AI (e.g.
    /// `claude mcp add hive -- hive-harness mcp`): request_approval, approval_status,
    /// my_approvals, emit_event, whoami; each goes through the agent socket
    Mcp,
    /// Run `claude ARGS` from the agent's PATH with the agent's claude config dir
    /// (/root/.claude): hive-c0re runs it as hive-login.service for `hivectl login`
    ClaudeLogin {
        /// claude's arguments, e.g. `auth login`
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Forward the TCP socket systemd passes (LISTEN_FDS) to the agent's egress proxy
    /// socket (run by hive-c0re as hive-egress.service, started by hive-egress.socket on
    /// 127.0.0.1:3128, in a private-network container)
    EgressForward {
        /// The proxy's unix socket
        #[arg(long, default_value = "/run/hive-egress/proxy.sock")]
        to: PathBuf,
    },
}

pub async fn run(args: Args) -> Result<i32> {
    match args.request {
        None => {
            let opts = crate::harness::Options {
                socket: args.socket,
                events: args.events,
                turns: args
                    .turns
                    .then(|| std::time::Duration::from_secs(args.turn_timeout)),
                command: args.command,
                claude: args.claude.then(|| crate::harness::claude::Options {
                    model: args.claude_model,
                    allowed_tools: args.claude_allowed_tool,
                    permission: args.claude_permission,
                    permission_timeout: args.claude_permission_timeout,
                    budget_usd: args.claude_budget_usd,
                    prompt: args.claude_prompt,
                    api_key_credential: args.claude_api_key_credential,
                    session_file: crate::harness::claude::SESSION_FILE.into(),
                    spend_file: crate::harness::claude::SPEND_FILE.into(),
                }),
            };
            crate::harness::run(opts).await
        }
        Some(HarnessCommand::EgressForward { to }) => {
            crate::harness::egress_forward::run(to).await?;
            Ok(0)
        }
        Some(HarnessCommand::ClaudeLogin { args }) => Ok(crate::harness::claude::exec_login(&args)),
        Some(HarnessCommand::Mcp) => {
            crate::harness::mcp::serve(args.socket).await?;
            Ok(0)
        }
        Some(HarnessCommand::RequestApproval { kind, payload }) => {
            let payload: serde_json::Value = serde_json::from_str(&payload)
                .map_err(|e| super::BadInput(format!("payload is not JSON: {e}")))?;
            // Refused clearly while the daemon is away: the request was not made, and saying
            // so is the agent's cue to ask again later (the harness itself keeps running).
            let mut client = crate::harness::Client::connect(&args.socket)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "hive-c0re is not reachable, the approval was not requested; ask again once it is back ({e:#})"
                    )
                })?;
            match client
                .ask(&Request::RequestApproval { kind, payload })
                .await?
            {
                Reply::ApprovalPending { id } => {
                    println!("{id}");
                    Ok(0)
                }
                Reply::Error { error } => Err(super::BadInput(error).into()),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
    }
}
