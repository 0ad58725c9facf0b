//! The turn loop for a Claude Code agent (`hive-harness --turns --claude`): each turn runs
//! the `claude` CLI from the agent's PATH in print mode, with the hive's MCP server
//! registered, the wake rendered as a readable prompt on stdin, the agent's session
//! resumed, and its stream-json output read for what the turn cost. docs/agent-side.md.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::turns::{TurnInput, Wake};
use crate::plan::HARNESS_IN_CONTAINER;
use crate::spec::claude::Permission;

/// Where the harness keeps the id of the agent's claude session, between turns and
/// across restarts of its container.
pub const SESSION_FILE: &str = "/state/hyperhive-claude-session";
/// Where it keeps what the agent spent today (UTC), for the budget.
pub const SPEND_FILE: &str = "/state/hyperhive-claude-spend.json";
/// The MCP tool claude asks when it wants to use a tool it may not use unasked.
pub const PERMISSION_TOOL: &str = "mcp__hive__permission_prompt";

/// The harness's `--claude…` flags.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub model: Option<String>,
    pub allowed_tools: Vec<String>,
    pub permission: Permission,
    pub permission_timeout: u64,
    pub budget_usd: Option<f64>,
    pub prompt: Option<String>,
    /// The name of the systemd credential holding an API key, if one was given.
    pub api_key_credential: Option<String>,
    pub session_file: PathBuf,
    pub spend_file: PathBuf,
}

/// What hyperhive tells every Claude Code agent about its place in the hive, before the
/// admin's own `prompt`.
pub fn system_prompt(agent: &str, extra: Option<&str>) -> String {
    let mut p = format!(
        "You are agent {agent} of a hyperhive: you run in a container of your own, woken \
         turn by turn. Each turn's prompt says why you were woken (your start, a message \
         from an admin, a decision on one of your approvals).\n\
         /state is yours and survives restarts and rebuilds: keep your notes there (e.g. \
         /state/NOTES.md) and read them at the start of a turn.\n\
         Your hive tools (MCP server \"hive\"): whoami shows your PATH, binds, limits and \
         network; request_approval asks an admin for more (a package directory on your \
         PATH, a bind, an environment variable, lower limits) and the decision wakes you; \
         approval_status and my_approvals tell where your requests stand; emit_event \
         writes to the host's journal. Tools you may not use unasked are put to an admin \
         as approvals; a refusal comes back with the admin's note."
    );
    if let Some(extra) = extra {
        p.push_str("\n\n");
        p.push_str(extra);
    }
    p
}

/// A turn's prompt: why it runs, each wake in order, in words.
pub fn prompt(input: &TurnInput) -> String {
    let mut p = format!("hyperhive turn {}.", input.turn);
    if input.dropped > 0 {
        p.push_str(&format!(
            " {} older wakes were dropped (too many came during one turn).",
            input.dropped
        ));
    }
    for (i, wake) in input.wakes.iter().enumerate() {
        p.push_str(&format!("\n\n[{}] ", i + 1));
        p.push_str(&wake_text(wake));
    }
    p.push('\n');
    p
}

fn wake_text(wake: &Wake) -> String {
    match wake.reason.as_str() {
        "start" => "Your harness started (the container booted or was rebuilt). Read your \
                    notes in /state and carry on with your work."
            .to_owned(),
        "tell" => format!("An admin says:\n{}", wake.message),
        crate::hive::agent_side::TELL_NEW_SESSION => format!(
            "An admin starts a new conversation with you (your earlier ones are in your notes, \
             not in this context) and says:\n{}",
            wake.message
        ),
        "approval_decided" => {
            let d = &wake.data;
            let id = d["id"]
                .as_u64()
                .map(|i| i.to_string())
                .unwrap_or("?".into());
            let kind = d["kind"].as_str().unwrap_or("request");
            let status = d["status"].as_str().unwrap_or("decided");
            let mut t = format!("Your approval {id} ({kind}) is now {status}.");
            match d["note"].as_str() {
                Some(note) if !note.is_empty() => t.push_str(&format!(" Note: {note}")),
                _ => {}
            }
            t
        }
        other => {
            let mut t = format!("Woken: {other}.");
            if !wake.message.is_empty() {
                t.push_str(&format!(" {}", wake.message));
            }
            t
        }
    }
}

/// `hive-harness claude-login ARGS`: becomes `claude ARGS`, found on the agent's PATH,
/// in /state, with claude's config where the agent's turns keep it. Returns only when
/// claude could not be run (its exit code: 127 when it is not on the PATH).
pub fn exec_login(args: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("claude");
    cmd.args(args);
    if Path::new("/state").is_dir() {
        cmd.current_dir("/state");
    }
    // As for the turns (turns.rs): the agent's own config dir, unless the spec says
    // otherwise.
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", "/root");
    }
    if std::env::var_os("CLAUDE_CONFIG_DIR").is_none() {
        cmd.env("CLAUDE_CONFIG_DIR", "/root/.claude");
    }
    let err = cmd.exec();
    let path = std::env::var("PATH").unwrap_or_default();
    eprintln!("hive-harness: running claude (from PATH {path}): {err}");
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The MCP configuration handed to claude on its command line: the hive's own server,
/// and nothing the agent must write.
pub fn mcp_config() -> String {
    json!({ "mcpServers": { "hive": { "command": HARNESS_IN_CONTAINER, "args": ["mcp"] } } })
        .to_string()
}

/// claude's arguments for one turn (the prompt comes on stdin).
pub fn argv(opts: &Options, agent: &str, resume: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--strict-mcp-config",
        "--mcp-config",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(mcp_config());
    a.push("--append-system-prompt".into());
    a.push(system_prompt(agent, opts.prompt.as_deref()));
    if let Some(model) = &opts.model {
        a.push("--model".into());
        a.push(model.clone());
    }
    // The hive's read-only tools need no admin; everything else is the spec's to allow.
    let mut allowed = vec![
        "mcp__hive__whoami".to_string(),
        "mcp__hive__approval_status".to_string(),
        "mcp__hive__my_approvals".to_string(),
        "mcp__hive__request_approval".to_string(),
        "mcp__hive__emit_event".to_string(),
    ];
    allowed.extend(opts.allowed_tools.iter().cloned());
    a.push("--allowedTools".into());
    a.push(allowed.join(","));
    if opts.permission == Permission::Approvals {
        a.push("--permission-prompt-tool".into());
        a.push(PERMISSION_TOOL.into());
    }
    if let Some(id) = resume {
        a.push("--resume".into());
        a.push(id.to_owned());
    }
    a
}

/// Whether the turn starts a new conversation (`hivectl tell --new-session`).
pub fn wants_new_session(input: &TurnInput) -> bool {
    input
        .wakes
        .iter()
        .any(|w| w.reason == crate::hive::agent_side::TELL_NEW_SESSION)
}

/// The session to resume: the id kept in `file`, if it looks like one of claude's.
pub fn saved_session(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let id = text.trim();
    let ok = (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then(|| id.to_owned())
}

pub fn save_session(file: &Path, id: &str) {
    if let Err(e) = std::fs::write(file, format!("{id}\n")) {
        log::warn!("keeping the claude session id in {}: {e}", file.display());
    }
}

pub fn forget_session(file: &Path) {
    let _ = std::fs::remove_file(file);
}

/// What one run of claude reported, read from its stream-json output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub session_id: Option<String>,
    pub cost_usd: Option<f64>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub model_turns: Option<u64>,
    pub is_error: bool,
    /// The `result` record's subtype (`success`, `error_during_execution`, …).
    pub result: Option<String>,
    /// claude said the session to resume does not exist (any more).
    pub no_such_session: bool,
}

impl Outcome {
    /// Reads one line of claude's stdout; returns a one-line summary worth logging.
    pub fn read_line(&mut self, line: &str) -> Option<String> {
        let v: Value = serde_json::from_str(line).ok()?;
        if let Some(id) = v["session_id"].as_str() {
            self.session_id = Some(id.to_owned());
        }
        match v["type"].as_str()? {
            "assistant" => {
                let mut said = Vec::new();
                for block in v["message"]["content"].as_array()? {
                    match block["type"].as_str() {
                        Some("text") => said.push(format!(
                            "says: {}",
                            cut(block["text"].as_str().unwrap_or(""), 300)
                        )),
                        Some("tool_use") => said.push(format!(
                            "uses {}: {}",
                            block["name"].as_str().unwrap_or("?"),
                            cut(&block["input"].to_string(), 200)
                        )),
                        _ => {}
                    }
                }
                (!said.is_empty()).then(|| format!("claude {}", said.join("; ")))
            }
            "result" => {
                self.result = v["subtype"].as_str().map(str::to_owned);
                self.is_error = v["is_error"].as_bool().unwrap_or(false);
                self.cost_usd = v["total_cost_usd"].as_f64();
                self.model_turns = v["num_turns"].as_u64();
                let u = &v["usage"];
                let n = |k: &str| u[k].as_u64().unwrap_or(0);
                if u.is_object() {
                    self.tokens_in = Some(
                        n("input_tokens")
                            + n("cache_creation_input_tokens")
                            + n("cache_read_input_tokens"),
                    );
                    self.tokens_out = Some(n("output_tokens"));
                }
                Some(format!(
                    "claude finished: {} after {} model turns, ${:.4}",
                    self.result.as_deref().unwrap_or("?"),
                    self.model_turns.unwrap_or(0),
                    self.cost_usd.unwrap_or(0.0)
                ))
            }
            _ => None,
        }
    }

    /// Reads a line of claude's stderr.
    pub fn read_err_line(&mut self, line: &str) {
        if line.contains("No conversation found") {
            self.no_such_session = true;
        }
    }

    /// The turn record's fields for this run.
    pub fn fields(&self) -> Value {
        json!({
            "cost_usd": self.cost_usd,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "model_turns": self.model_turns,
            "session_id": self.session_id,
            "result": self.result,
        })
    }
}

fn cut(s: &str, max: usize) -> String {
    let one = crate::spec::one_line(s);
    match one.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

/// What the agent spent on one UTC day.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spend {
    pub day: String,
    pub usd: f64,
    /// Whether `agent_over_budget` was said for this day.
    #[serde(default)]
    pub announced: bool,
}

impl Spend {
    pub fn load(file: &Path, today: &str) -> Spend {
        std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Spend>(&b).ok())
            .filter(|s| s.day == today && s.usd.is_finite() && s.usd >= 0.0)
            .unwrap_or_else(|| Spend {
                day: today.to_owned(),
                ..Default::default()
            })
    }

    pub fn save(&self, file: &Path) {
        let text = serde_json::to_vec(self).expect("serializes");
        if let Err(e) = std::fs::write(file, text) {
            log::warn!("keeping today's spend in {}: {e}", file.display());
        }
    }
}

/// Today, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake(reason: &str, message: &str, data: Value) -> Wake {
        Wake {
            reason: reason.into(),
            message: message.into(),
            data,
        }
    }

    #[test]
    fn the_prompt_says_why_in_words_in_order() {
        let input = TurnInput {
            turn: 3,
            dropped: 0,
            wakes: vec![
                wake("tell", "the docs moved to /srv/docs", Value::Null),
                wake(
                    "approval_decided",
                    "approval 4 denied",
                    json!({"id": 4, "kind": "spec_change", "status": "denied", "note": "not now"}),
                ),
            ],
        };
        assert_eq!(
            prompt(&input),
            "hyperhive turn 3.\n\n[1] An admin says:\nthe docs moved to /srv/docs\n\n\
             [2] Your approval 4 (spec_change) is now denied. Note: not now\n"
        );
        let first = TurnInput {
            turn: 1,
            dropped: 2,
            wakes: vec![wake("start", "", Value::Null)],
        };
        let p = prompt(&first);
        assert!(p.contains("2 older wakes were dropped"), "{p}");
        assert!(p.contains("Read your notes in /state"), "{p}");
    }

    #[test]
    fn the_command_line_registers_the_hive_and_resumes() {
        let opts = Options {
            model: Some("claude-sonnet-4-5".into()),
            allowed_tools: vec!["Bash(ls:*)".into()],
            ..Default::default()
        };
        let a = argv(&opts, "alice", Some("3f6c70e8-65a2"));
        let at = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
        let mcp: Value = serde_json::from_str(&at("--mcp-config")).unwrap();
        assert_eq!(mcp["mcpServers"]["hive"]["args"][0], "mcp");
        assert_eq!(at("--model"), "claude-sonnet-4-5");
        assert!(at("--allowedTools").ends_with(",Bash(ls:*)"));
        assert_eq!(at("--permission-prompt-tool"), PERMISSION_TOOL);
        assert_eq!(at("--resume"), "3f6c70e8-65a2");
        assert!(at("--append-system-prompt").contains("agent alice"));
        let deny = Options {
            permission: Permission::Deny,
            ..Default::default()
        };
        let a = argv(&deny, "alice", None);
        assert!(!a
            .iter()
            .any(|x| x == "--permission-prompt-tool" || x == "--resume"));
    }

    #[test]
    fn the_result_record_gives_cost_tokens_and_session() {
        let mut o = Outcome::default();
        o.read_line(r#"{"type":"system","subtype":"init","session_id":"s-1"}"#);
        let said = o
            .read_line(r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi\nthere"},{"type":"tool_use","name":"Bash","input":{"command":"ls"}}]},"session_id":"s-1"}"#)
            .unwrap();
        assert_eq!(
            said,
            r#"claude says: hi there; uses Bash: {"command":"ls"}"#
        );
        o.read_line(r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"session_id":"s-1","total_cost_usd":0.0125,"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":1,"output_tokens":7}}"#);
        assert_eq!(o.session_id.as_deref(), Some("s-1"));
        assert_eq!(o.cost_usd, Some(0.0125));
        assert_eq!(
            (o.tokens_in, o.tokens_out, o.model_turns),
            (Some(16), Some(7), Some(2))
        );
        assert!(o.read_line("not json").is_none());
        o.read_err_line("No conversation found with session ID: s-0");
        assert!(o.no_such_session);
    }

    #[test]
    fn a_session_id_is_only_taken_if_it_looks_like_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        save_session(&f, "3f6c70e8-65a2-422e-9ef8-3e31c3d33517");
        assert_eq!(
            saved_session(&f).as_deref(),
            Some("3f6c70e8-65a2-422e-9ef8-3e31c3d33517")
        );
        std::fs::write(&f, "--dangerously-skip-permissions").unwrap();
        assert_eq!(saved_session(&f), None);
        forget_session(&f);
        assert_eq!(saved_session(&f), None);
    }
}
