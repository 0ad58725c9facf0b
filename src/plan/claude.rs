//! What a Claude Code agent (`[claude]`) adds to its units: the harness's claude flags,
//! and the API key as a systemd credential passed from the host through nspawn to the
//! harness unit — never a command-line argument or an `Environment=` that
//! `systemctl show` prints.

use super::Prop;
use crate::spec::ClaudeSpec;

/// The credential's name, on the container unit (nspawn) and on the harness unit.
pub const API_KEY_CREDENTIAL: &str = "anthropic-api-key";

/// hive-harness's flags for a Claude Code agent.
pub fn harness_args(claude: &ClaudeSpec) -> Vec<String> {
    let mut argv = vec![
        "--claude".to_string(),
        format!("--claude-permission={}", claude.permission.as_str()),
        format!("--claude-permission-timeout={}", claude.permission_timeout),
    ];
    if let Some(model) = &claude.model {
        argv.push(format!("--claude-model={model}"));
    }
    for tool in &claude.allowed_tools {
        argv.push(format!("--claude-allowed-tool={tool}"));
    }
    if let Some(budget) = claude.budget_usd_per_day {
        argv.push(format!("--claude-budget-usd={budget}"));
    }
    if let Some(prompt) = &claude.prompt {
        argv.push(format!("--claude-prompt={prompt}"));
    }
    if claude.api_key_file.is_some() {
        argv.push(format!("--claude-api-key-credential={API_KEY_CREDENTIAL}"));
    }
    argv
}

/// nspawn's argument that hands the key file to the container's systemd as a system
/// credential (read by nspawn as the host's root; the container never sees the path).
pub fn nspawn_args(claude: &ClaudeSpec) -> Vec<String> {
    match &claude.api_key_file {
        Some(file) => vec![format!(
            "--load-credential={API_KEY_CREDENTIAL}:{}",
            file.display()
        )],
        None => Vec::new(),
    }
}

/// The harness unit imports the container's system credential: a relative "path" that is
/// a credential name means the one the service manager itself received.
pub fn harness_properties(claude: &ClaudeSpec) -> Vec<(String, Prop)> {
    match &claude.api_key_file {
        Some(_) => vec![(
            "LoadCredential".into(),
            Prop::Pairs(vec![(API_KEY_CREDENTIAL.into(), API_KEY_CREDENTIAL.into())]),
        )],
        None => Vec::new(),
    }
}
