//! `hivectl create --claude` and its flags: the spec's `[claude]` table from the command
//! line (spec/claude.rs).

use std::path::PathBuf;

use crate::spec::claude::Permission;
use crate::spec::ClaudeFile;

#[derive(Debug, Default, clap::Args)]
pub struct ClaudeArgs {
    /// A Claude Code agent: the harness runs `claude` (from the agent's PATH) each turn,
    /// with the hive's MCP tools, the wake as a prompt and the session kept
    /// (docs/agent-side.md); implies --turns. The --claude-* flags imply it
    #[arg(long)]
    pub claude: bool,
    /// With --claude: the model for every turn
    #[arg(long, value_name = "MODEL")]
    pub claude_model: Option<String>,
    /// With --claude: a tool claude may use without asking, e.g. 'Bash(git log:*)' (repeatable)
    #[arg(long, value_name = "TOOL")]
    pub claude_allowed_tool: Vec<String>,
    /// With --claude: who answers claude's permission questions: approvals (an admin,
    /// through `hivectl approve`; default) or deny (refused at once)
    #[arg(long, value_name = "WHO")]
    pub claude_permission: Option<Permission>,
    /// With --claude: seconds a permission question waits for an admin before it is
    /// refused (default 300; below --turn-timeout)
    #[arg(long, value_name = "SECS")]
    pub claude_permission_timeout: Option<u64>,
    /// With --claude: dollars the agent may spend a day (UTC); past it, wakes wait
    #[arg(long, value_name = "USD")]
    pub claude_budget_usd: Option<f64>,
    /// With --claude: a host file holding an Anthropic API key, handed to claude as a
    /// systemd credential (never on a command line or in the unit's environment)
    #[arg(long, value_name = "FILE")]
    pub claude_api_key_file: Option<PathBuf>,
    /// With --claude: text appended to the system prompt
    #[arg(long, value_name = "TEXT")]
    pub claude_prompt: Option<String>,
}

impl ClaudeArgs {
    /// The `[claude]` layer the flags make, if any was given.
    pub fn layer(&self) -> Option<ClaudeFile> {
        let any = self.claude
            || self.claude_model.is_some()
            || !self.claude_allowed_tool.is_empty()
            || self.claude_permission.is_some()
            || self.claude_permission_timeout.is_some()
            || self.claude_budget_usd.is_some()
            || self.claude_api_key_file.is_some()
            || self.claude_prompt.is_some();
        any.then(|| ClaudeFile {
            model: self.claude_model.clone(),
            allowed_tools: self.claude_allowed_tool.clone(),
            permission: self.claude_permission,
            permission_timeout: self.claude_permission_timeout,
            budget_usd_per_day: self.claude_budget_usd,
            prompt: self.claude_prompt.clone(),
            api_key_file: self.claude_api_key_file.clone(),
        })
    }
}
