//! Every `HIVE_*` name the product writes or reads, defined once: the journal fields of
//! its events (docs/events.md, a contract admins and tools query with
//! `journalctl HIVE_AGENT=alice`), and the environment variables it sets in the units it
//! plans. Some names are both: `HIVE_AGENT` and `HIVE_APPROVAL_ID` are stamped into a
//! unit's environment and its `LogExtraFields=`, `HIVE_PLAN` is in the environment and
//! in events. Tests spell the names as literals: they are the contract's side.

/// The prefix of all of them; a spec's own environment may not use it (the rule is the
/// spec's, and so the constant).
pub use crate::spec::RESERVED_PREFIX as PREFIX;

/// `key=value`, as a unit's `Environment=` and `LogExtraFields=` take it.
pub fn assign(key: &str, value: impl std::fmt::Display) -> String {
    format!("{key}={value}")
}

// The fields every event has.
pub const EVENT: &str = "HIVE_EVENT";
pub const AGENT: &str = "HIVE_AGENT";
pub const UNIT: &str = "HIVE_UNIT";

// Lifecycle, reconcile and unit watches.
pub const OUTCOME: &str = "HIVE_OUTCOME";
pub const PLAN: &str = "HIVE_PLAN";
pub const LIVE_PLAN: &str = "HIVE_LIVE_PLAN";
pub const PURGE: &str = "HIVE_PURGE";
pub const TRIGGER: &str = "HIVE_TRIGGER";
pub const PRUNE: &str = "HIVE_PRUNE";
pub const CREATED: &str = "HIVE_CREATED";
pub const REBUILT: &str = "HIVE_REBUILT";
pub const KEPT: &str = "HIVE_KEPT";
pub const STOPPED: &str = "HIVE_STOPPED";
pub const FAILED: &str = "HIVE_FAILED";
pub const SUMMARY: &str = "HIVE_SUMMARY";
pub const DURATION_MS: &str = "HIVE_DURATION_MS";
pub const ACTION: &str = "HIVE_ACTION";
pub const ERROR: &str = "HIVE_ERROR";
pub const REASON: &str = "HIVE_REASON";
pub const RESULT: &str = "HIVE_RESULT";
pub const EXEC_MAIN_CODE: &str = "HIVE_EXEC_MAIN_CODE";
pub const EXEC_MAIN_STATUS: &str = "HIVE_EXEC_MAIN_STATUS";
pub const N_RESTARTS: &str = "HIVE_N_RESTARTS";
pub const INVOCATION_ID: &str = "HIVE_INVOCATION_ID";
pub const OOM_KILLS: &str = "HIVE_OOM_KILLS";
pub const MEMORY_MAX: &str = "HIVE_MEMORY_MAX";
pub const LOGIN_ARGS: &str = "HIVE_LOGIN_ARGS";

// Approvals.
pub const APPROVAL_ID: &str = "HIVE_APPROVAL_ID";
pub const APPROVAL_KIND: &str = "HIVE_APPROVAL_KIND";
pub const DECIDED_BY: &str = "HIVE_DECIDED_BY";
pub const PAYLOAD: &str = "HIVE_PAYLOAD";

// What agents report through their socket, and what admins tell them.
pub const AGENT_EVENT: &str = "HIVE_AGENT_EVENT";
pub const DATA: &str = "HIVE_DATA";
pub const LIMIT: &str = "HIVE_LIMIT";
pub const TURN: &str = "HIVE_TURN";
pub const TURN_PHASE: &str = "HIVE_TURN_PHASE";
pub const COST_USD: &str = "HIVE_COST_USD";
pub const TOKENS_IN: &str = "HIVE_TOKENS_IN";
pub const TOKENS_OUT: &str = "HIVE_TOKENS_OUT";
pub const MODEL_TURNS: &str = "HIVE_MODEL_TURNS";
pub const SESSION_ID: &str = "HIVE_SESSION_ID";
pub const TOLD_BY: &str = "HIVE_TOLD_BY";
pub const MESSAGE_TEXT: &str = "HIVE_MESSAGE_TEXT";
pub const NEW_SESSION: &str = "HIVE_NEW_SESSION";

// The egress proxy.
pub const DEST_HOST: &str = "HIVE_DEST_HOST";
pub const DEST_PORT: &str = "HIVE_DEST_PORT";
pub const BYTES_OUT: &str = "HIVE_BYTES_OUT";
pub const BYTES_IN: &str = "HIVE_BYTES_IN";
pub const ALLOWED: &str = "HIVE_ALLOWED";
pub const REFUSED: &str = "HIVE_REFUSED";

// Environment variables only (never journal fields).
/// The agent socket's path inside the container, for `hive-harness`.
pub const ENV_SOCKET: &str = "HIVE_SOCKET";
/// The disk bound in a container's environment (drift when it changes).
pub const ENV_DISK_MAX: &str = "HIVE_DISK_MAX";
/// How long claude's permission question waits for an admin (harness → MCP server).
pub const ENV_PERMISSION_TIMEOUT: &str = "HIVE_PERMISSION_TIMEOUT";
/// The wake a turn runs for (harness → the agent's command).
pub const ENV_WAKE_REASON: &str = "HIVE_WAKE_REASON";
pub const ENV_WAKE_MESSAGE: &str = "HIVE_WAKE_MESSAGE";

/// The value of `key` in a `key=value` entry, `None` when the entry is another key's.
pub fn value_of<'a>(entry: &'a str, key: &str) -> Option<&'a str> {
    entry.strip_prefix(key)?.strip_prefix('=')
}
