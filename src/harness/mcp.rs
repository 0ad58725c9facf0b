//! `hive-harness mcp`: the agent's tools as an MCP server over stdio, for the agent's AI
//! (claude-code: `claude mcp add hive -- hive-harness mcp`). Every tool is one exchange on
//! the agent socket, so the daemon decides everything: who the agent is (the socket it
//! came in on), what it may ask for, the rate. Nothing here widens what the agent can do
//! with `hive-harness request-approval` or the raw socket. See docs/agent-side.md.
//!
//! Errors are MCP errors whose message is one line: `-32602` (invalid params) for an
//! unknown tool, arguments that do not fit the tool's schema, arguments too large, or a
//! request the daemon refused (its reason, verbatim); `-32603` when the daemon cannot be
//! reached.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorCode, ErrorData, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Client;
use crate::journal::fields;
use crate::socket::protocol::{self, Reply, Request};

/// Largest `arguments` of one call, as JSON: what fits one socket line with room for the
/// envelope. The daemon bounds each field far lower (4 KiB requests and event data).
pub const MAX_ARGUMENTS: usize = protocol::MAX_LINE - 1024;
/// Longest line the stdio transport buffers; longer ones are dropped unread.
const MAX_STDIO_LINE: usize = 1024 * 1024;

pub struct HiveTools {
    socket: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestApprovalArgs {
    #[serde(default = "spec_change")]
    kind: String,
    change: Value,
}

fn spec_change() -> String {
    crate::store::ApprovalKind::SpecChange.as_str().to_owned()
}

/// What claude sends its `--permission-prompt-tool` (it may add fields: not denied).
#[derive(Deserialize)]
struct PermissionArgs {
    tool_name: String,
    #[serde(default)]
    input: Value,
}

/// How long `permission_prompt` waits for an admin, unless `HIVE_PERMISSION_TIMEOUT`
/// (seconds; the harness sets it from the spec) says otherwise.
pub const DEFAULT_PERMISSION_TIMEOUT: u64 = 300;
/// How often it asks the daemon whether the admin decided (each ask counts against the
/// agent's request rate, like any query).
const PERMISSION_POLL: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    id: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventArgs {
    name: String,
    #[serde(default)]
    data: Value,
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(v.as_object().expect("a schema is an object").clone())
}

/// The tools, as listed to the AI.
pub fn tools() -> Vec<Tool> {
    let none =
        || schema(json!({"type": "object", "properties": {}, "additionalProperties": false}));
    vec![
        Tool::new(
            "request_approval",
            "Ask an admin for a change of your own spec. `change` holds spec fields to lay over \
             your spec: path (directories first on PATH), env, bind (\"/host:/target[:ro]\"), \
             memory_max, tasks_max, cpu_weight (limits may only go down), disk_max (more disk \
             for /state and /root/.claude: above your bound, at most 4 times it), egress (names you \
             may reach through your HTTPS_PROXY: \"api.example.com\", \"*.example.org:8443\"; \
             no addresses). Returns the approval's id; you are told when it is decided; an \
             approved egress change applies to your next connection, any other change \
             restarts your container after a short grace.",
            schema(json!({
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["spec_change"], "default": "spec_change"},
                    "change": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "array", "items": {"type": "string"}},
                            "env": {"type": "object", "additionalProperties": {"type": "string"}},
                            "bind": {"type": "array", "items": {"type": "string"}},
                            "memory_max": {"type": ["string", "integer"]},
                            "tasks_max": {"type": "integer"},
                            "cpu_weight": {"type": "integer"},
                            "disk_max": {"type": ["string", "integer"]},
                            "egress": {"type": "array", "items": {"type": "string"}, "maxItems": 8}
                        },
                        "additionalProperties": false
                    }
                },
                "required": ["change"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "approval_status",
            "One of your approvals: its status (pending, approved, denied, applied, failed), \
             the change, and the admin's note.",
            schema(json!({
                "type": "object",
                "properties": {"id": {"type": "integer"}},
                "required": ["id"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "my_approvals",
            "Your recent approvals, newest last.",
            none(),
        ),
        Tool::new(
            "emit_event",
            "Put an event in the host's journal (HIVE_AGENT_EVENT=<name>). name: 1-64 of \
             a-z, 0-9, _; data: any JSON up to 4 KiB.",
            schema(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                    "data": {}
                },
                "required": ["name"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "permission_prompt",
            "For Claude Code's --permission-prompt-tool: puts claude's wish to use a tool to an \
             admin as a tool_use approval and waits for the decision (bounded; no decision in \
             time is a refusal). Answers {\"behavior\": \"allow\", \"updatedInput\"} or \
             {\"behavior\": \"deny\", \"message\"}.",
            schema(json!({
                "type": "object",
                "properties": {
                    "tool_name": {"type": "string"},
                    "input": {"type": "object"},
                    "tool_use_id": {"type": "string"}
                },
                "required": ["tool_name", "input"]
            })),
        ),
        Tool::new(
            "whoami",
            "Who you are to the hive: your name, your PATH (and your own entries on it), \
             environment, binds, limits and pending approvals.",
            none(),
        ),
    ]
}

fn invalid(msg: impl Into<String>) -> ErrorData {
    ErrorData::new(
        ErrorCode::INVALID_PARAMS,
        Cow::Owned(crate::spec::one_line(&msg.into())),
        None,
    )
}

fn unreachable(e: &anyhow::Error) -> ErrorData {
    ErrorData::new(
        ErrorCode::INTERNAL_ERROR,
        Cow::Owned(crate::spec::one_line(&format!(
            "hive-c0re is not reachable, nothing was done; try again once it is back ({e:#})"
        ))),
        None,
    )
}

fn args<T: serde::de::DeserializeOwned>(tool: &str, raw: Value) -> Result<T, ErrorData> {
    serde_json::from_value(raw).map_err(|e| invalid(format!("{tool}: bad arguments: {e}")))
}

impl HiveTools {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// One request to the daemon on a connection of its own, so a call never sees another
    /// call's reply.
    async fn ask(&self, req: Request) -> Result<Reply, ErrorData> {
        let mut client = Client::connect(&self.socket)
            .await
            .map_err(|e| unreachable(&e))?;
        match client.ask(&req).await {
            Ok(Reply::Error { error }) => Err(invalid(error)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(unreachable(&e)),
        }
    }

    async fn data(&self, req: Request) -> Result<Value, ErrorData> {
        match self.ask(req).await? {
            Reply::Data { data } => Ok(data),
            other => Err(invalid(format!(
                "unexpected answer from hive-c0re: {other:?}"
            ))),
        }
    }

    /// Runs one tool; the result is the tool's JSON answer.
    pub async fn call(&self, tool: &str, raw: Value) -> Result<Value, ErrorData> {
        let size = raw.to_string().len();
        if size > MAX_ARGUMENTS {
            return Err(invalid(format!(
                "{tool}: arguments of {size} bytes, at most {MAX_ARGUMENTS}; nothing was done"
            )));
        }
        match tool {
            "request_approval" => {
                let a: RequestApprovalArgs = args(tool, raw)?;
                let change = a.change.clone();
                match self
                    .ask(Request::RequestApproval {
                        kind: a.kind.clone(),
                        payload: a.change,
                    })
                    .await?
                {
                    Reply::ApprovalPending { id } => Ok(json!({
                        "id": id,
                        "status": "pending",
                        "kind": a.kind,
                        "change": change,
                    })),
                    other => Err(invalid(format!(
                        "unexpected answer from hive-c0re: {other:?}"
                    ))),
                }
            }
            "approval_status" => {
                let a: IdArgs = args(tool, raw)?;
                self.data(Request::ApprovalStatus { id: a.id }).await
            }
            "my_approvals" => {
                let _: NoArgs = args(tool, raw)?;
                let list = self.data(Request::MyApprovals {}).await?;
                Ok(json!({ "approvals": list }))
            }
            "whoami" => {
                let _: NoArgs = args(tool, raw)?;
                let mut me = self.data(Request::Whoami {}).await?;
                // The whole PATH, as this process got it from the agent's unit (the daemon
                // knows the agent's own entries, not what the container adds).
                if let Some(obj) = me.as_object_mut() {
                    obj.insert(
                        "PATH".into(),
                        json!(std::env::var("PATH").unwrap_or_default()),
                    );
                }
                Ok(me)
            }
            "emit_event" => {
                let a: EventArgs = args(tool, raw)?;
                // The socket's own checks, before connecting: a bad name is refused here
                // with the same words.
                let req = Request::Event {
                    name: a.name.clone(),
                    data: a.data,
                };
                let line = protocol::encode(&req);
                protocol::parse_request(&line[..line.len() - 1]).map_err(invalid)?;
                match self.ask(req).await? {
                    Reply::Ok => Ok(json!({ "emitted": a.name })),
                    other => Err(invalid(format!(
                        "unexpected answer from hive-c0re: {other:?}"
                    ))),
                }
            }
            "permission_prompt" => {
                let a: PermissionArgs = args(tool, raw)?;
                Ok(self.permission(a).await)
            }
            other => {
                let names: Vec<String> = tools().iter().map(|t| t.name.to_string()).collect();
                Err(invalid(format!(
                    "unknown tool {} (tools: {})",
                    crate::spec::one_line(&format!("{other:?}")),
                    names.join(", ")
                )))
            }
        }
    }
}

impl HiveTools {
    /// claude's permission question, put to an admin. Every way it can end is an answer
    /// claude understands: a refusal says why (refused at the door, the daemon away, no
    /// decision in time, the admin's note).
    async fn permission(&self, a: PermissionArgs) -> Value {
        let deny = |message: String| json!({ "behavior": "deny", "message": message });
        let payload = json!({ "tool": a.tool_name, "input": a.input });
        let id = match self
            .ask(Request::RequestApproval {
                kind: crate::store::ApprovalKind::ToolUse.as_str().into(),
                payload,
            })
            .await
        {
            Ok(Reply::ApprovalPending { id }) => id,
            Ok(other) => return deny(format!("unexpected answer from hive-c0re: {other:?}")),
            Err(e) => return deny(format!("not put to an admin: {}", e.message)),
        };
        let timeout = std::env::var(fields::ENV_PERMISSION_TIMEOUT)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(DEFAULT_PERMISSION_TIMEOUT);
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
        loop {
            if let Ok(status) = self.data(Request::ApprovalStatus { id }).await {
                let note = status["note"].as_str().unwrap_or("").to_owned();
                match status["status"].as_str() {
                    Some("approved") | Some("applied") => {
                        return json!({ "behavior": "allow", "updatedInput": a.input })
                    }
                    Some("denied") | Some("failed") => {
                        return deny(if note.is_empty() {
                            format!("an admin denied it (approval {id})")
                        } else {
                            format!("an admin denied it (approval {id}): {note}")
                        })
                    }
                    _ => {}
                }
            }
            if tokio::time::Instant::now() >= until {
                return deny(format!(
                    "no admin decided within {timeout} s (approval {id}); refused, ask again later"
                ));
            }
            tokio::time::sleep(PERMISSION_POLL).await;
        }
    }
}

impl ServerHandler for HiveTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Tools of a hyperhive agent: ask an admin for changes of your own spec, follow \
             your approvals, put events in the host's journal, and see who you are.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let raw = Value::Object(request.arguments.unwrap_or_default());
        let out = self.call(&request.name, raw).await?;
        if request.name == "permission_prompt" {
            // Claude Code reads its permission tool's answer from exactly one text block.
            return Ok(
                CallToolResult::success(vec![rmcp::model::ContentBlock::text(out.to_string())])
                    .into(),
            );
        }
        Ok(CallToolResult::structured(out).into())
    }
}

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn serve(socket: PathBuf) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::io::stdio();
    let transport = rmcp::transport::async_rw::AsyncRwTransport::new(stdin, stdout)
        .with_max_line_length(MAX_STDIO_LINE);
    let running = HiveTools::new(socket)
        .serve(transport)
        .await
        .map_err(|e| anyhow::anyhow!("starting the MCP server: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("serving MCP: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let tools = tools();
        let names: Vec<_> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "request_approval",
                "approval_status",
                "my_approvals",
                "emit_event",
                "permission_prompt",
                "whoami"
            ]
        );
        for t in &tools {
            assert_eq!(t.input_schema["type"], "object", "{}", t.name);
            assert!(t.description.is_some());
        }
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_the_socket_is_touched() {
        // No daemon at this path: a refusal here never reached it.
        let t = HiveTools::new(PathBuf::from("/nonexistent/hive.sock"));
        for (tool, raw) in [
            ("nope", json!({})),
            ("approval_status", json!({"id": "seven"})),
            ("approval_status", json!({})),
            ("whoami", json!({"agent": "bob"})),
            ("request_approval", json!({"change": {}, "agent": "bob"})),
            ("emit_event", json!({"name": "Bad Name"})),
            (
                "emit_event",
                json!({"name": "big", "data": "x".repeat(MAX_ARGUMENTS)}),
            ),
        ] {
            let err = t.call(tool, raw).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{tool}: {err:?}");
            assert!(!err.message.contains('\n'));
        }
        let err = t.call("whoami", json!({})).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::INTERNAL_ERROR);
        assert!(err.message.contains("not reachable"), "{}", err.message);
    }
}
