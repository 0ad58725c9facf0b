//! A Claude Code agent on a real systemd, with the **real Claude Code CLI** (from the npm
//! registry; scripts/ensure-deps.sh installs it) inside the agent, against a scripted
//! stand-in for the Messages API (tests/claude/messages_api.py) that the test serves on
//! the test host's loopback. Everything is judged from what that server received, the
//! journal and systemd's own view.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const CLAUDE_CODE_VERSION: &str = "2.1.328";
/// The key the agent is given as a file; it must reach the API and nothing else.
const KEY: &str = "sk-ant-hive-test-7f3a9c";

/// The directory holding the platform package's `claude` binary.
fn claude_code() -> PathBuf {
    let dir = std::env::var_os("HYPERHIVE_CLAUDE_CODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "/var/cache/hyperhive-testhost/claude-code-{CLAUDE_CODE_VERSION}/node_modules/@anthropic-ai/claude-code-linux-x64"
            ))
        });
    assert!(
        dir.join("claude").is_file(),
        "the Claude Code CLI is not installed at {} (scripts/ensure-deps.sh installs it from npm)",
        dir.display()
    );
    dir
}

struct Standin {
    dir: tempfile::TempDir,
    port: u16,
    reach: Reach,
}

impl Standin {
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            // The last line may be one the stand-in is still writing.
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The request that used step `n`, once it came.
    fn wait_step(&self, h: &TestHost, n: u64) -> Value {
        let mut found = None;
        h.wait_for(
            &format!("the stand-in API's step {n}"),
            Duration::from_secs(90),
            || {
                found = self.requests().into_iter().find(|r| r["step"] == n);
                found.is_some()
            },
        );
        found.unwrap()
    }
}

/// The last user-role message of a request, as JSON text.
fn last_user(req: &Value) -> String {
    req["body"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()
        .to_string()
}

/// Where the stand-in API listens, and so how the agent reaches it.
#[derive(Clone, Copy, PartialEq)]
enum Reach {
    /// On the test host's loopback; the agent on the host's network (an admin's choice).
    HostNetwork,
    /// In a network namespace of the test's own, by name, through the agent's egress
    /// proxy from its default private network.
    Egress,
}

/// The stand-in's name in the test host's /etc/hosts, for [`Reach::Egress`].
const API_NAME: &str = "api.standin.test";
const API_PORT: u16 = 8443;

/// A test host with the CLI and a directory for the stand-in bound in, and the stand-in
/// API running in it as a transient unit.
fn host_with_standin(script: Value, reach: Reach) -> (TestHost, Standin) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    std::fs::write(dir.path().join("key"), format!("{KEY}\n")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/claude/messages_api.py"),
        dir.path().join("messages_api.py"),
    )
    .unwrap();
    let h = TestHost::boot(Options {
        bin_dir: Some(bin_dir()),
        units_dir: Some(units_dir()),
        start_daemon: true,
        extra_binds: vec![
            (dir.path().to_owned(), "/srv/standin".into()),
            (claude_code(), "/srv/claude-code".into()),
        ],
        ..Default::default()
    })
    .expect("booting the test host");
    let mut argv = vec![
        "python3",
        "/srv/standin/messages_api.py",
        "--script",
        "/srv/standin/script.json",
        "--log",
        "/srv/standin/requests.jsonl",
        "--port-file",
        "/srv/standin/port",
    ];
    let port = API_PORT.to_string();
    match reach {
        Reach::HostNetwork => {
            let mut full = vec!["systemd-run", "--unit=messages-api", "--quiet"];
            full.extend_from_slice(&argv);
            h.run_ok(&full);
        }
        Reach::Egress => {
            let ns = TestNetns::new(&h, API_NAME);
            let ip = ns.ip.clone();
            argv.extend_from_slice(&["--bind", &ip, "--port", &port]);
            ns.serve(&h, "messages-api", &argv);
        }
    }
    let port_file = dir.path().join("port");
    h.wait_for("the stand-in API's port", Duration::from_secs(30), || {
        port_file.exists()
    });
    let port = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (h, Standin { dir, port, reach })
}

/// `hivectl create NAME --claude …` with the CLI on its PATH and the stand-in as its API.
fn create_claude(h: &TestHost, s: &Standin, name: &str, extra: &[&str]) {
    let (base, egress) = match s.reach {
        Reach::HostNetwork => (
            format!("ANTHROPIC_BASE_URL=http://127.0.0.1:{}", s.port),
            None,
        ),
        Reach::Egress => (
            format!("ANTHROPIC_BASE_URL=http://{API_NAME}:{}", s.port),
            Some(format!("{API_NAME}:{}", s.port)),
        ),
    };
    let mut args = vec![
        "--claude",
        "--claude-api-key-file",
        "/srv/standin/key",
        "--bind",
        "/srv/claude-code:/opt/claude-code:ro",
        "--path",
        "/opt/claude-code",
        "--env",
        &base,
        // Nothing may leave the machine: no telemetry, no update checks.
        "--env",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
        "--env",
        "DISABLE_AUTOUPDATER=1",
    ];
    match &egress {
        None => args.extend_from_slice(&["--network", "host"]),
        Some(e) => args.extend_from_slice(&["--egress", e]),
    }
    args.extend_from_slice(extra);
    h.create(name, &args);
}

fn turn_done(h: &TestHost, agent: &str) -> Vec<Value> {
    entries(
        h,
        &[
            "HIVE_EVENT=agent_turn",
            "HIVE_TURN_PHASE=done",
            &format!("HIVE_AGENT={agent}"),
        ],
    )
}

#[test]
fn a_claude_agent_uses_its_hive_tools_remembers_its_session_and_reports_its_cost() {
    let where_alice = "You are agent alice";
    let script = json!([
        // Turn 1 (its start): find the hive's tools, then call whoami.
        {"match": "hyperhive turn 1.", "where": where_alice,
         "reply": [{"type": "tool_use", "name": "ToolSearch",
                    "input": {"query": "select:mcp__hive__whoami", "max_results": 5}}]},
        {"match": "toolu_s0_", "reply": [{"type": "tool_use", "name": "mcp__hive__whoami", "input": {}}]},
        {"match": "toolu_s1_", "reply": [{"type": "text", "text": "I am alice; noted in my notes."}]},
        // Turn 2 (an admin's tell): an allowed command.
        {"match": "please say hello", "where": where_alice,
         "reply": [{"type": "tool_use", "name": "Bash",
                    "input": {"command": "echo hello", "description": "say hello"}}]},
        {"match": "toolu_s3_", "reply": [{"type": "text", "text": "said hello"}]},
        // Turn 3: a command outside allowed_tools, put to an admin, who approves.
        {"match": "please mark the day", "where": where_alice,
         "reply": [{"type": "tool_use", "name": "Bash",
                    "input": {"command": "touch /state/marked-by-claude", "description": "mark"}}]},
        {"match": "toolu_s5_", "reply": [{"type": "text", "text": "marked"}]},
        // Turn 4: another, which the admin denies.
        {"match": "please clean up", "where": where_alice,
         "reply": [{"type": "tool_use", "name": "Bash",
                    "input": {"command": "rm -rf /state/notes", "description": "clean"}}]},
        {"match": "toolu_s7_", "reply": [{"type": "text", "text": "not cleaned"}]},
        // `tell --new-session`, then a session that can no longer be resumed.
        {"match": "start afresh", "where": where_alice, "reply": [{"type": "text", "text": "fresh"}]},
        {"match": "after the loss", "where": where_alice, "reply": [{"type": "text", "text": "recovered"}]},
    ]);
    let (h, s) = host_with_standin(script, Reach::HostNetwork);
    create_claude(
        &h,
        &s,
        "alice",
        &["--claude-allowed-tool", "Bash(echo hello:*)"],
    );

    // The hive's tools were offered: whoami by name, found through ToolSearch, and called.
    let first = s.wait_step(&h, 0);
    assert!(
        first["body"].to_string().contains("mcp__hive__whoami"),
        "the hive's MCP tools are offered to the model"
    );
    assert!(
        last_user(&first).contains("Your harness started"),
        "the start wake is words, not JSON: {}",
        last_user(&first)
    );
    let system = first["body"]["system"].to_string();
    assert!(system.contains("You are agent alice") && system.contains("/state"));
    let after_whoami = s.wait_step(&h, 2);
    let result = last_user(&after_whoami);
    assert!(
        result.contains("alice") && result.contains("PATH"),
        "whoami answered through the hive socket: {result}"
    );
    let turn1 = {
        let mut t = Vec::new();
        h.wait_for("turn 1 done", Duration::from_secs(60), || {
            t = turn_done(&h, "alice");
            !t.is_empty()
        });
        t.remove(0)
    };
    let session = turn1["HIVE_SESSION_ID"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let cost: f64 = turn1["HIVE_COST_USD"].as_str().unwrap().parse().unwrap();
    assert!(cost > 0.0, "the turn's cost is journaled: {turn1}");
    assert_eq!(
        turn1["HIVE_TOKENS_IN"], "300",
        "three model calls of 100 input tokens"
    );
    assert_eq!(turn1["HIVE_TOKENS_OUT"], "60");
    let model_turns: u64 = turn1["HIVE_MODEL_TURNS"].as_str().unwrap().parse().unwrap();
    assert!(model_turns >= 1, "{turn1}");

    // Turn 2, woken by an admin: the message as text, in the same conversation.
    h.hivectl_ok(&["tell", "alice", "please say hello"]);
    let second = s.wait_step(&h, 3);
    let told = last_user(&second);
    assert!(
        told.contains("An admin says:") && told.contains("please say hello"),
        "{told}"
    );
    assert!(
        second["body"]["messages"]
            .to_string()
            .contains("I am alice; noted in my notes."),
        "turn 2 continues turn 1's conversation"
    );
    let echoed = s.wait_step(&h, 4);
    assert!(
        last_user(&echoed).contains("hello"),
        "the allowed command ran"
    );
    h.wait_for("turn 2 done", Duration::from_secs(60), || {
        turn_done(&h, "alice").len() == 2
    });
    let turn2 = turn_done(&h, "alice").pop().unwrap();
    assert_eq!(
        turn2["HIVE_SESSION_ID"],
        session.as_str(),
        "one session across turns"
    );

    // Turn 3: claude's permission question becomes a tool_use approval showing the exact
    // command; approved, the command runs inside the agent.
    h.hivectl_ok(&["tell", "alice", "please mark the day"]);
    let id = wait_tool_use(&h, "touch /state/marked-by-claude");
    let shown = h.hivectl_ok(&["approvals", "--show", &id.to_string()]);
    assert!(
        shown.contains("claude asks to use Bash:")
            && shown.contains("  $ touch /state/marked-by-claude")
            && shown.contains("the spec does not change"),
        "{shown}"
    );
    let container = h.invocation("alice");
    h.hivectl_ok(&["approve", &id.to_string()]);
    let ran = s.wait_step(&h, 6);
    assert!(
        !last_user(&ran).contains("is_error\":true"),
        "{}",
        last_user(&ran)
    );
    assert_eq!(
        h.run(&[
            "test",
            "-e",
            "/var/lib/hyperhive/agents/alice/state/marked-by-claude"
        ])
        .status
        .code(),
        Some(0),
        "the approved command ran inside the agent"
    );
    assert_eq!(
        h.invocation("alice"),
        container,
        "a tool_use approval restarts nothing"
    );
    let all: Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
    let approved = all
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(approved["status"], "applied");

    // Turn 4: denied; claude is told no, with the admin's note, and nothing ran.
    h.run_ok(&["mkdir", "-p", "/var/lib/hyperhive/agents/alice/state/notes"]);
    h.hivectl_ok(&["tell", "alice", "please clean up"]);
    let id = wait_tool_use(&h, "rm -rf /state/notes");
    h.hivectl_ok(&["deny", &id.to_string(), "--note", "keep your notes"]);
    let refused = s.wait_step(&h, 8);
    assert!(
        last_user(&refused).contains("keep your notes"),
        "{}",
        last_user(&refused)
    );
    assert_eq!(
        h.run(&["test", "-d", "/var/lib/hyperhive/agents/alice/state/notes"])
            .status
            .code(),
        Some(0),
        "the denied command did not run"
    );

    // A new conversation when an admin asks for one.
    h.hivectl_ok(&["tell", "alice", "--new-session", "start afresh"]);
    let fresh = s.wait_step(&h, 9);
    assert!(
        last_user(&fresh).contains("starts a new conversation"),
        "{}",
        last_user(&fresh)
    );
    assert!(
        !fresh["body"]["messages"]
            .to_string()
            .contains("I am alice; noted"),
        "the new session does not carry the old conversation"
    );
    let fresh_turn = || {
        turn_done(&h, "alice").into_iter().find(|e| {
            e["HIVE_DATA"]
                .as_str()
                .unwrap_or("")
                .contains("tell_new_session")
        })
    };
    h.wait_for("the fresh turn done", Duration::from_secs(60), || {
        fresh_turn().is_some()
    });
    let fresh_session = fresh_turn().unwrap()["HIVE_SESSION_ID"].clone();
    assert_ne!(fresh_session, session.as_str(), "a new session id");

    // A session claude no longer has: the turn says so and its wake runs again, anew.
    h.run_ok(&[
        "sh",
        "-c",
        "echo 11111111-2222-3333-4444-555555555555 > /var/lib/hyperhive/agents/alice/state/hyperhive-claude-session",
    ]);
    h.hivectl_ok(&["tell", "alice", "after the loss"]);
    let recovered = s.wait_step(&h, 10);
    assert!(last_user(&recovered).contains("after the loss"));
    let reset = entries(
        &h,
        &[
            "HIVE_EVENT=agent_turn",
            "HIVE_AGENT=alice",
            "HIVE_TURN_PHASE=done",
        ],
    )
    .into_iter()
    .find(|e| {
        e["HIVE_DATA"]
            .as_str()
            .unwrap_or("")
            .contains("\"session_reset\":true")
    });
    assert!(
        reset.is_some(),
        "the lost session is said in the turn's record"
    );

    // hivectl status: the last turn's cost and today's spend.
    // (once the turn under way, the recovered one, is done)
    let mut status = String::new();
    h.wait_for("the last turn done", Duration::from_secs(60), || {
        status = h.hivectl_ok(&["status", "alice"]);
        status.contains(" out tokens)")
    });
    assert!(status.contains(" Last turn: #"), "{status}");
    assert!(status.contains("     Spent: $"), "{status}");

    // The key reached the API in every request, and no systemctl show prints it.
    for r in s.requests() {
        assert_eq!(r["headers"]["x-api-key"], KEY, "{}", r["path"]);
    }
    let shown = [
        h.run_ok(&["systemctl", "show", "hive-agent-alice.service"]),
        h.run_ok(&["systemctl", "-M", "h-alice", "show", "hive-harness.service"]),
    ];
    for out in &shown {
        assert!(!out.contains(KEY), "the key is in systemctl show");
    }
    // systemctl prints this property as "[unprintable]"; busctl shows it.
    let cred = h.run_ok(&[
        "busctl",
        "-M",
        "h-alice",
        "get-property",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1/unit/hive_2dharness_2eservice",
        "org.freedesktop.systemd1.Service",
        "LoadCredential",
    ]);
    assert_eq!(
        cred, r#"a(ss) 1 "anthropic-api-key" "anthropic-api-key""#,
        "the harness imports the container's credential"
    );
}

/// The id of the pending tool_use approval whose input holds `command`, once it is there.
fn wait_tool_use(h: &TestHost, command: &str) -> i64 {
    let mut id = 0;
    h.wait_for("a tool_use approval", Duration::from_secs(90), || {
        let pending: Value = serde_json::from_str(&h.hivectl_ok(&["approvals", "--json"])).unwrap();
        if let Some(a) = pending
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "tool_use" && a["payload"]["input"]["command"] == command)
        {
            id = a["id"].as_i64().unwrap();
        }
        id > 0
    });
    id
}

#[test]
fn over_its_budget_a_claude_agents_wakes_wait_and_it_is_said_once() {
    // On its default private network, reaching the API only through its egress proxy.
    let (h, s) = host_with_standin(json!([]), Reach::Egress);
    // The first turn (one model call, 100 in / 20 out) costs more than this.
    create_claude(&h, &s, "bob", &["--claude-budget-usd", "0.00001"]);
    h.wait_for("turn 1 done", Duration::from_secs(90), || {
        !turn_done(&h, "bob").is_empty()
    });
    assert!(
        s.requests()
            .iter()
            .any(|r| last_user(r).contains("Your harness started")),
        "claude reached the API from bob's private network"
    );
    // Through bob's proxy, as its journal says: the agent has no other way out.
    let allowed = wait_entry(
        &h,
        "the proxy's egress_allowed",
        &[
            "HIVE_EVENT=egress_allowed",
            "HIVE_AGENT=bob",
            &format!("HIVE_DEST_HOST={API_NAME}"),
        ],
    );
    assert_eq!(allowed["HIVE_DEST_PORT"], s.port.to_string());
    h.hivectl_ok(&["tell", "bob", "are you there"]);
    let over = wait_entry(
        &h,
        "agent_over_budget",
        &["HIVE_EVENT=agent_over_budget", "HIVE_AGENT=bob"],
    );
    assert!(
        over["MESSAGE"].as_str().unwrap().contains("wakes wait"),
        "{over}"
    );
    // The tell is kept, not run: no second turn, and the wake is in the events db.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(turn_done(&h, "bob").len(), 1, "no turn past the budget");
    assert!(
        !s.requests()
            .iter()
            .any(|r| last_user(r).contains("are you there")),
        "the waiting tell never reached the API"
    );
    let wakes = h.run_ok(&[
        "sqlite3",
        "/var/lib/hyperhive/agents/bob/state/hyperhive-events.sqlite",
        "SELECT count(*) FROM events WHERE kind = 'wake'",
    ]);
    assert_eq!(wakes, "1");
    h.hivectl_ok(&["tell", "bob", "still there?"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        entries(&h, &["HIVE_EVENT=agent_over_budget", "HIVE_AGENT=bob"]).len(),
        1,
        "said once a day"
    );
}

/// Attacks from inside agents on the tool_use kind: it is a Claude Code agent's only,
/// bounded like every request, and approving one changes no spec and restarts nothing.
#[test]
fn tool_use_requests_are_bounded_and_change_nothing() {
    let (h, s) = host_with_standin(json!([]), Reach::HostNetwork);
    create_claude(&h, &s, "bob", &[]);
    h.create("carol", &["--harness", "sleep", "infinity"]);
    let ask = |agent: &str, payload: &str| {
        h.in_agent(
            agent,
            &[
                "/opt/hyperhive/bin/hive-harness",
                "request-approval",
                "tool_use",
                payload,
            ],
        )
    };
    let big = format!(
        r#"{{"tool":"Bash","input":{{"command":"{}"}}}}"#,
        "x".repeat(5000)
    );
    for (agent, payload, why) in [
        (
            "carol",
            r#"{"tool":"Bash","input":{"command":"id"}}"#,
            "tool_use approvals are for Claude Code agents",
        ),
        (
            "bob",
            r#"{"tool":"Ba\nsh","input":{}}"#,
            "no spaces or control characters",
        ),
        (
            "bob",
            r#"{"tool":"Bash","input":{},"bind":["/:/host"]}"#,
            "unknown field",
        ),
        (
            "bob",
            r#"{"tool":"Bash","input":"id"}"#,
            "must be the tool's input",
        ),
        ("bob", big.as_str(), "at most 4096 bytes"),
    ] {
        let out = ask(agent, payload);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{agent}: {err}");
        assert!(err.contains(why), "{agent}: {err}");
    }
    let all: Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        0,
        "nothing refused was stored"
    );
    assert_eq!(
        entries(
            &h,
            &[
                "HIVE_EVENT=approval_refused",
                "HIVE_APPROVAL_KIND=\"tool_use\""
            ]
        )
        .len(),
        5,
        "each refusal is journaled"
    );

    // A valid one, approved: recorded applied; the spec and the units are as they were.
    let spec = h.run_ok(&["cat", "/var/lib/hyperhive/agents/bob/spec.toml"]);
    let (container, harness) = (h.invocation("bob"), harness_invocation(&h, "bob"));
    let out = ask("bob", r#"{"tool":"Bash","input":{"command":"id"}}"#);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    h.hivectl_ok(&["approve", &id]);
    assert_eq!(
        h.run_ok(&["cat", "/var/lib/hyperhive/agents/bob/spec.toml"]),
        spec
    );
    assert_eq!(h.invocation("bob"), container);
    assert_eq!(harness_invocation(&h, "bob"), harness);
    let second = h.hivectl(&["approve", &id]);
    assert_bad_input(&second, "a second approve");
}

/// Runs `argv` on a pseudo terminal in the test host, as an admin at a terminal, through
/// tests/claude/pty_drive.py with its `steps`; returns its record (output, status).
fn at_a_terminal(h: &TestHost, s: &Standin, steps: Value, argv: &[&str]) -> Value {
    let driver = s.dir.path().join("pty_drive.py");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/claude/pty_drive.py"),
        &driver,
    )
    .unwrap();
    let out = s.dir.path().join("pty.json");
    let _ = std::fs::remove_file(&out);
    let steps = steps.to_string();
    let mut full = vec![
        "python3",
        "/srv/standin/pty_drive.py",
        &steps,
        "/srv/standin/pty.json",
        "--",
    ];
    full.extend_from_slice(argv);
    h.run_ok(&full);
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn hivectl_login_runs_claudes_own_login_in_the_agent_on_the_admins_terminal() {
    let (h, s) = host_with_standin(
        json!([{"match": "hyperhive turn", "reply": [{"type": "text", "text": "ok"}]}]),
        Reach::Egress,
    );
    create_claude(&h, &s, "alice", &[]);
    h.wait_active("alice");
    let container = h.invocation("alice");

    // `auth status` through the relay: claude's own answer, from the agent's config dir.
    let status = at_a_terminal(
        &h,
        &s,
        json!([]),
        &[HIVECTL, "login", "alice", "--", "auth", "status"],
    );
    let text = status["output"].as_str().unwrap();
    // claude lays its JSON out with cursor moves, not spaces.
    assert!(
        text.contains("\"loggedIn\":")
            && text.contains("false,")
            && text.contains("\"configDirectory\":")
            && text.contains("\"/root/.claude\","),
        "claude ran in the agent with its own config dir: {status}"
    );
    assert_eq!(status["status"], 0, "the session ended by itself: {status}");

    // The login flow: claude's sign-in link and its prompt reach the admin's terminal; a
    // code typed there reaches claude, which tries to redeem it through the agent's own
    // egress proxy (its private network has no other way out), and is refused there.
    let login = at_a_terminal(
        &h,
        &s,
        json!([
            {"expect": "Paste code here", "timeout": 90},
            {"send": "not-a-real-code#not-a-real-state\r"},
            {"sleep": 3},
            {"send": "\u{1d}\u{1d}\u{1d}"}
        ]),
        &[HIVECTL, "login", "alice"],
    );
    let text = login["output"].as_str().unwrap();
    assert_eq!(login["failed_step"], Value::Null, "{login}");
    assert!(
        text.contains("oauth/authorize"),
        "claude's sign-in link is on the admin's terminal: {text}"
    );
    assert_eq!(login["status"], 0, "^] three times leaves: {login}");
    let refused = entries(&h, &["HIVE_EVENT=egress_refused", "HIVE_AGENT=alice"]);
    eprintln!(
        "figures: the login's token exchange went to {:?}",
        refused
            .iter()
            .map(|e| format!(
                "{}:{}",
                e["HIVE_DEST_HOST"].as_str().unwrap_or("?"),
                e["HIVE_DEST_PORT"].as_str().unwrap_or("?")
            ))
            .collect::<Vec<_>>()
    );
    let logins = entries(&h, &["HIVE_EVENT=agent_login", "HIVE_AGENT=alice"]);
    assert_eq!(logins.len(), 2, "each login is journaled: {logins:?}");
    assert_eq!(logins[1]["HIVE_LOGIN_ARGS"], "auth login");
    // The unit ran in the container, not on the host, and is gone once the session is.
    assert!(
        h.run(&["systemctl", "cat", "hive-login.service"])
            .status
            .code()
            != Some(0),
        "no login unit on the host"
    );
    h.wait_for(
        "hive-login.service gone in the container",
        Duration::from_secs(30),
        || {
            let out = h.run(&[
                "systemctl",
                "-M",
                "h-alice",
                "show",
                "-P",
                "LoadState",
                "hive-login.service",
            ]);
            String::from_utf8_lossy(&out.stdout).trim() == "not-found"
        },
    );
    assert_eq!(
        h.invocation("alice"),
        container,
        "the agent was not restarted"
    );

    // Bad input and the wrong agent: one line each, nothing started.
    h.create("bob", &[]);
    let out = h.hivectl(&["login", "bob"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bob is not a Claude Code agent"), "{err}");
    let out = h.hivectl(&["login", "alice", "--", "auth", "lo\u{1b}gin"]);
    assert_eq!(out.status.code(), Some(2));
    let out = h.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        HIVECTL,
        "login",
        "alice",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access denied") && err.contains("needs root"),
        "{err}"
    );
    assert_eq!(
        entries(&h, &["HIVE_EVENT=agent_login"]).len(),
        2,
        "refused logins started nothing"
    );
}

#[test]
fn an_agent_squatting_its_login_unit_only_blocks_its_own_login() {
    let (h, s) = host_with_standin(json!([]), Reach::Egress);
    create_claude(&h, &s, "alice", &[]);
    h.wait_active("alice");
    // From inside the agent (its root runs its own systemd): a unit of the login's name
    // that holds a terminal of its own.
    let out = h.in_agent(
        "alice",
        &[
            "systemd-run",
            "--unit=hive-login",
            "--quiet",
            "sleep",
            "600",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let started = std::time::Instant::now();
    let out = h.hivectl(&["login", "alice"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("a login is already running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    eprintln!("figures: refused in {:?}", started.elapsed());
    assert!(entries(&h, &["HIVE_EVENT=agent_login"]).is_empty());
    // The daemon and the agent are unaffected.
    h.hivectl_ok(&["status", "alice"]);
    h.wait_active("alice");
}

/// docs/operations.md's Claude Code recipes (`sh cookbook claude`, `console claude`), run
/// where they are true: alice a Claude Code agent with a key file, one turn done, a second
/// waiting on claude's request to run a command outside her allowed tools (approval 1).
#[test]
fn the_cookbooks_claude_recipes_run_and_show_what_they_print() {
    let (h, _s, id) = waiting_on_a_command("touch /state/marked-by-claude", Reach::Egress, &[]);
    assert_eq!(id, 1);
    crate::cookbook::check_situation(&h, "claude");
}

/// A Claude Code agent alice, her first turn done and her second (a tell) waiting on an
/// admin for `command`, a Bash call outside her allowed tools; its approval's id.
fn waiting_on_a_command(command: &str, reach: Reach, extra: &[&str]) -> (TestHost, Standin, i64) {
    let script = json!([
        {"match": "hyperhive turn 1.", "reply": [{"type": "text", "text": "notes read"}]},
        {"match": "please mark the day",
         "reply": [{"type": "tool_use", "name": "Bash",
                    "input": {"command": command, "description": "mark"}}]},
        {"match": "toolu_s1_", "reply": [{"type": "text", "text": "after the mark"}]},
    ]);
    let (h, s) = host_with_standin(script, reach);
    create_claude(&h, &s, "alice", extra);
    h.wait_for("turn 1 done", Duration::from_secs(90), || {
        !turn_done(&h, "alice").is_empty()
    });
    h.hivectl_ok(&["tell", "alice", "please mark the day"]);
    let id = wait_tool_use(&h, command);
    (h, s, id)
}

/// claude waits for an admin only up to `permission_timeout`; the approval left pending
/// past it is closed by the daemon as denied, so it neither counts against the agent's
/// pending requests nor offers an admin a decision that no longer reaches claude.
#[test]
fn a_tool_use_no_admin_decides_is_closed_at_its_timeout() {
    let (h, s, id) = waiting_on_a_command(
        "touch /state/marked-late",
        Reach::HostNetwork,
        &["--claude-permission-timeout", "2"],
    );
    let id = id.to_string();
    // claude got its refusal at the timeout and went on.
    let after = s.wait_step(&h, 2);
    assert!(
        last_user(&after).contains("no admin decided within 2 s"),
        "{}",
        last_user(&after)
    );
    // The daemon closes the approval: 2 s, a 5 s grace, a 10 s sweep at most.
    let denied = wait_entry(
        &h,
        "the expired approval closed",
        &[
            "HIVE_EVENT=approval_denied",
            &format!("HIVE_APPROVAL_ID={id}"),
        ],
    );
    assert_eq!(denied["HIVE_DECIDED_BY"], "hive-c0re (timeout)");
    let a: Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--show", &id, "--json"])).unwrap();
    assert_eq!(a["approval"]["status"], "denied", "{a}");
    assert!(
        a["approval"]["note"]
            .as_str()
            .unwrap_or("")
            .contains("within 2 s"),
        "{a}"
    );
    // A late approve changes nothing and says so.
    let out = h.hivectl(&["approve", &id]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("already denied"), "{}", stderr(&out));
    assert!(
        !h.run(&[
            "test",
            "-e",
            "/var/lib/hyperhive/agents/alice/state/marked-late"
        ])
        .status
        .success(),
        "the command never ran"
    );
}
