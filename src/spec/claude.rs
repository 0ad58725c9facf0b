//! A Claude Code agent: the spec's `[claude]` table (`hivectl create --claude`). The
//! harness runs the `claude` CLI itself each turn, with the hive's MCP server registered;
//! docs/agent-side.md. Only an admin sets any of it: it is not among the fields an agent
//! may request.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{clean_abs_path, SpecError};

/// How many `allowed_tools` entries, and how long each may be.
pub const MAX_ALLOWED_TOOLS: usize = 64;
pub const MAX_TOOL_LEN: usize = 200;
/// The longest extra system prompt an admin may append.
pub const MAX_PROMPT_LEN: usize = 4096;
/// The largest daily budget: past this a budget is no bound at all.
pub const MAX_BUDGET_USD: f64 = 10_000.0;

/// The `[claude]` table as written: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaudeFile {
    /// `--model` for every turn; none: claude's own default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `--allowedTools`: tools claude may use without asking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// Who answers claude's permission questions: `approvals` (an admin, through the
    /// hive's approvals; the default) or `deny` (nobody: refused at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<Permission>,
    /// Seconds claude's permission question waits for an admin before it is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_timeout: Option<u64>,
    /// Dollars the agent may spend a day (UTC); once reached, wakes wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_usd_per_day: Option<f64>,
    /// Text appended to the system prompt after hyperhive's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A file on the host holding an Anthropic API key, handed to claude as a systemd
    /// credential: never on a command line, in an `Environment=` or in the spec itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Permission {
    #[default]
    Approvals,
    Deny,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A validated `[claude]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaudeSpec {
    pub model: Option<String>,
    pub allowed_tools: Vec<String>,
    pub permission: Permission,
    pub permission_timeout: u64,
    pub budget_usd_per_day: Option<f64>,
    pub prompt: Option<String>,
    pub api_key_file: Option<PathBuf>,
}

/// The egress a Claude Code agent on a private network gets when its spec names none:
/// the Messages API, by name, port 443.
pub const DEFAULT_EGRESS: &str = "api.anthropic.com";
/// ... and, for an agent without an API key file (it signs in with `hivectl login`),
/// where claude redeems its sign-in code and renews its token.
pub const LOGIN_EGRESS: &str = "platform.claude.com";

impl ClaudeSpec {
    /// The egress entries this agent gets when its spec names none.
    pub fn default_egress(&self) -> Vec<String> {
        let mut e = vec![DEFAULT_EGRESS.to_owned()];
        if self.api_key_file.is_none() {
            e.push(LOGIN_EGRESS.to_owned());
        }
        e
    }
}

/// Default of `permission_timeout`: a few minutes for an admin to look.
pub const DEFAULT_PERMISSION_TIMEOUT: u64 = 300;
/// Longest `permission_timeout`: an hour (a turn waits through it).
pub const MAX_PERMISSION_TIMEOUT: u64 = 3600;

impl ClaudeSpec {
    pub fn validate(file: &ClaudeFile) -> Result<ClaudeSpec, SpecError> {
        if let Some(model) = &file.model {
            let ok = !model.is_empty()
                && model.len() <= 100
                && model
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-[]".contains(&b));
            if !ok {
                return Err(SpecError::ClaudeModel(model.clone()));
            }
        }
        if file.allowed_tools.len() > MAX_ALLOWED_TOOLS {
            return Err(SpecError::ClaudeTools(format!(
                "at most {MAX_ALLOWED_TOOLS} entries"
            )));
        }
        let mut allowed_tools = Vec::new();
        for tool in &file.allowed_tools {
            let ok = !tool.trim().is_empty()
                && tool.len() <= MAX_TOOL_LEN
                && !tool.chars().any(char::is_control)
                // One entry per tool: claude splits its argument on commas and spaces
                // outside parentheses, so a comma would smuggle in a second entry.
                && !tool.contains(',');
            if !ok {
                return Err(SpecError::ClaudeTools(format!(
                    "{tool:?}: one tool or rule per entry, 1 to {MAX_TOOL_LEN} characters, no comma or control character"
                )));
            }
            if !allowed_tools.contains(tool) {
                allowed_tools.push(tool.clone());
            }
        }
        if let Some(b) = file.budget_usd_per_day {
            if !(b.is_finite() && b > 0.0 && b <= MAX_BUDGET_USD) {
                return Err(SpecError::ClaudeBudget(b.to_string()));
            }
        }
        if let Some(p) = &file.prompt {
            if p.len() > MAX_PROMPT_LEN || p.contains('\0') {
                return Err(SpecError::ClaudePrompt);
            }
        }
        let permission_timeout = file
            .permission_timeout
            .unwrap_or(DEFAULT_PERMISSION_TIMEOUT);
        if !(1..=MAX_PERMISSION_TIMEOUT).contains(&permission_timeout) {
            return Err(SpecError::ClaudePermissionTimeout(permission_timeout));
        }
        let api_key_file = match &file.api_key_file {
            Some(p) => Some(clean_abs_path("api_key_file", p)?),
            None => None,
        };
        Ok(ClaudeSpec {
            model: file.model.clone(),
            allowed_tools,
            permission: file.permission.unwrap_or_default(),
            permission_timeout,
            budget_usd_per_day: file.budget_usd_per_day,
            prompt: file.prompt.clone(),
            api_key_file,
        })
    }

    pub fn to_file(&self) -> ClaudeFile {
        ClaudeFile {
            model: self.model.clone(),
            allowed_tools: self.allowed_tools.clone(),
            permission: Some(self.permission),
            permission_timeout: Some(self.permission_timeout),
            budget_usd_per_day: self.budget_usd_per_day,
            prompt: self.prompt.clone(),
            api_key_file: self.api_key_file.clone(),
        }
    }
}

impl ClaudeFile {
    /// `over`'s fields win where it sets them; allowed tools are added.
    pub fn overlay(mut self, over: ClaudeFile) -> ClaudeFile {
        self.model = over.model.or(self.model);
        for t in over.allowed_tools {
            if !self.allowed_tools.contains(&t) {
                self.allowed_tools.push(t);
            }
        }
        self.permission = over.permission.or(self.permission);
        self.permission_timeout = over.permission_timeout.or(self.permission_timeout);
        self.budget_usd_per_day = over.budget_usd_per_day.or(self.budget_usd_per_day);
        self.prompt = over.prompt.or(self.prompt);
        self.api_key_file = over.api_key_file.or(self.api_key_file);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ask_admins_and_set_nothing_else() {
        let c = ClaudeSpec::validate(&ClaudeFile::default()).unwrap();
        assert_eq!(c.permission, Permission::Approvals);
        assert_eq!(c.model, None);
        assert!(c.allowed_tools.is_empty());
        assert_eq!(ClaudeSpec::validate(&c.to_file()).unwrap(), c);
    }

    #[test]
    fn a_claude_agent_reaches_the_api_by_default_and_nothing_else() {
        let name = super::super::AgentName::parse("alice").unwrap();
        let spec = |toml: &str| {
            let file = super::super::SpecFile::from_toml(toml, "t").unwrap();
            super::super::AgentSpec::validate(&name, &file).unwrap()
        };
        let c = spec("root = \"/\"\nvolatile = \"yes\"\n[claude]\n");
        let egress: Vec<String> = c.egress.iter().map(ToString::to_string).collect();
        assert_eq!(egress.len(), 2);
        assert!(egress[0].starts_with(DEFAULT_EGRESS), "{egress:?}");
        assert!(egress[1].starts_with(LOGIN_EGRESS), "{egress:?}");
        // With an API key there is no sign-in: the Messages API alone.
        let keyed =
            spec("root = \"/\"\nvolatile = \"yes\"\n[claude]\napi_key_file = \"/etc/keys/a\"\n");
        assert_eq!(keyed.egress.len(), 1);
        assert!(keyed.egress[0].to_string().starts_with(DEFAULT_EGRESS));
        // Saved, it reads back the same: the default is written out.
        assert_eq!(
            super::super::AgentSpec::validate(&name, &c.to_file()).unwrap(),
            c
        );
        let own =
            spec("root = \"/\"\nvolatile = \"yes\"\negress = [\"llm.example.com\"]\n[claude]\n");
        assert_eq!(own.egress.len(), 1);
        assert!(own.egress[0].to_string().starts_with("llm.example.com"));
        let plain = spec("root = \"/\"\nvolatile = \"yes\"\n");
        assert!(plain.egress.is_empty(), "only a Claude Code agent gets it");
        let host = spec("root = \"/\"\nvolatile = \"yes\"\nnetwork = \"host\"\n[claude]\n");
        assert!(host.egress.is_empty());
    }

    #[test]
    fn bad_values_are_refused_in_one_line() {
        let bad = |f: ClaudeFile| ClaudeSpec::validate(&f).unwrap_err().to_string();
        let e = bad(ClaudeFile {
            model: Some("opus; rm -rf /".into()),
            ..Default::default()
        });
        assert!(e.contains("claude.model"), "{e}");
        let e = bad(ClaudeFile {
            allowed_tools: vec!["Bash(ls),Edit".into()],
            ..Default::default()
        });
        assert!(e.contains("no comma"), "{e}");
        for b in [0.0, -1.0, f64::NAN, 1e9] {
            let e = bad(ClaudeFile {
                budget_usd_per_day: Some(b),
                ..Default::default()
            });
            assert!(e.contains("budget_usd_per_day"), "{e}");
        }
        assert!(!e.contains('\n'));
    }
}
