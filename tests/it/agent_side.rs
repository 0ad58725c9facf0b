//! The agent's side on a real systemd: a stand-in AI in the turn loop asks for a PATH
//! entry over MCP (`hive-harness mcp`), an admin approves, the agent is told before its
//! container restarts, and its next turn sees the new PATH and the decision; `hivectl
//! tell` wakes turns, wakes during a long turn are coalesced, a hung turn is ended by its
//! timeout; journald and the agent's events db are the record. The MCP assertions drive
//! `hive-harness mcp` inside the container with rmcp's own client, as an AI would.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::common::*;
use rmcp::model::CallToolRequestParams;
use rmcp::service::ServiceError;
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Value};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"stand-in","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const ASK: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"request_approval","arguments":{"change":{"path":["/opt/approved/bin"]}}}}"#;

/// The stand-in AI: one run per turn. It notes what woke it (env and stdin), asks for
/// /opt/approved/bin over MCP on its first start without it, and sleeps when told
/// "sleep N" (a long turn).
fn standin() -> String {
    format!(
        r#"n=$HIVE_TURN
cat > /state/turn-input
cat /state/turn-input >> /state/inputs
echo "$n|$HIVE_WAKE_REASON|$HIVE_WAKE_MESSAGE|$PATH" >> /state/turns.log
case ":$PATH:" in
  *:/opt/approved/bin:*) ;;
  *) if [ ! -e /state/asked ]; then
       touch /state/asked
       {{ printf '%s\n' '{INIT}' '{INITIALIZED}' '{ASK}'; sleep 3; }} | hive-harness mcp > /state/mcp.out
     fi ;;
esac
case "$HIVE_WAKE_MESSAGE" in
  sleep*) sleep ${{HIVE_WAKE_MESSAGE#sleep }} ;;
esac
exit 0"#
    )
}

fn turns_log(h: &TestHost, agent: &str) -> Vec<Vec<String>> {
    state_file(h, agent, "turns.log")
        .lines()
        .map(|l| l.splitn(4, '|').map(str::to_owned).collect())
        .collect()
}

fn events_db(h: &TestHost, agent: &str, sql: &str) -> String {
    h.run_ok(&[
        "sqlite3",
        &format!("/var/lib/hyperhive/agents/{agent}/state/hyperhive-events.sqlite"),
        sql,
    ])
}

fn approvals_all(h: &TestHost) -> Vec<Value> {
    let v: Value = serde_json::from_str(&h.hivectl_ok(&["approvals", "--json", "--all"])).unwrap();
    v.as_array().unwrap().clone()
}

/// `hive-harness mcp` inside the agent's container, through systemd-run --pipe, as the
/// child process of rmcp's client.
fn mcp_command(h: &TestHost, agent: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.args(["-t", &h.leader().to_string(), "-a"])
        .args([
            "systemd-run",
            "-M",
            &format!("h-{agent}"),
            "--pipe",
            "--quiet",
            "--wait",
            "--",
        ])
        .args(["/opt/hyperhive/bin/hive-harness", "mcp"])
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

fn call(name: &'static str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name).with_arguments(args.as_object().unwrap().clone())
}

fn mcp_error(r: Result<rmcp::model::CallToolResult, ServiceError>) -> rmcp::ErrorData {
    match r {
        Err(ServiceError::McpError(e)) => e,
        other => panic!("expected an MCP error, got {other:?}"),
    }
}

#[test]
fn an_agent_asks_over_mcp_is_told_before_the_restart_and_turns_follow_wakes() {
    let h = hive();
    let script = standin();
    h.create(
        "alice",
        &[
            "--turns",
            "--turn-timeout",
            "6",
            // Not the default 3 s: the spec's grace is the one given.
            "--restart-grace",
            "4",
            "--harness",
            "sh",
            "-c",
            &script,
        ],
    );

    // The first turn (woken by the start) asked over MCP; the answer is the id.
    let mut id = 0i64;
    h.wait_for(
        "the stand-in's MCP request",
        Duration::from_secs(30),
        || {
            let out = state_file(&h, "alice", "mcp.out");
            if let Some(line) = out.lines().find(|l| l.contains("\"id\":2")) {
                let v: Value = serde_json::from_str(line).unwrap();
                id = v["result"]["structuredContent"]["id"].as_i64().unwrap_or(0);
            }
            id > 0
        },
    );
    let first = turns_log(&h, "alice");
    assert_eq!(first[0][0], "1");
    assert_eq!(first[0][1], "start");
    let input: Value =
        serde_json::from_str(state_file(&h, "alice", "inputs").lines().next().unwrap()).unwrap();
    assert_eq!(input["wakes"][0]["reason"], "start");

    // The test's own MCP client, from inside the container.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = approvals_all(&h);
    rt.block_on(async {
        let client =
            ().serve(TokioChildProcess::new(mcp_command(&h, "alice")).unwrap())
                .await
                .expect("MCP handshake with hive-harness mcp");
        let tools = client.list_all_tools().await.unwrap();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        for want in [
            "request_approval",
            "approval_status",
            "my_approvals",
            "emit_event",
            "whoami",
        ] {
            assert!(names.contains(&want.to_string()), "{names:?}");
        }
        let me = client.call_tool(call("whoami", json!({}))).await.unwrap();
        let me = me.structured_content.unwrap();
        assert_eq!(me["agent"], "alice");
        assert_eq!(me["pending_approvals"], json!([id]));
        // systemd-run's PATH here; a turn's own MCP server gets the unit's.
        assert!(
            me["PATH"].as_str().is_some_and(|p| p.contains("/usr/bin")),
            "{me}"
        );
        let st = client
            .call_tool(call("approval_status", json!({"id": id})))
            .await
            .unwrap()
            .structured_content
            .unwrap();
        assert_eq!(st["status"], "pending");
        assert_eq!(st["payload"]["path"][0], "/opt/approved/bin");
        let mine = client
            .call_tool(call("my_approvals", json!({})))
            .await
            .unwrap();
        assert_eq!(mine.structured_content.unwrap()["approvals"][0]["id"], id);
        let ev = client
            .call_tool(call(
                "emit_event",
                json!({"name": "standin_hello", "data": {"n": 1}}),
            ))
            .await
            .unwrap();
        assert_eq!(ev.structured_content.unwrap()["emitted"], "standin_hello");

        // Bad input: MCP errors with one line, and nothing changes.
        for (req, want) in [
            (call("approve_myself", json!({"id": id})), "unknown tool"),
            (
                call("approval_status", json!({"id": "one"})),
                "bad arguments",
            ),
            (call("whoami", json!({"agent": "bob"})), "unknown field"),
            (
                call("request_approval", json!({"change": {"root": "/"}})),
                "may not be requested",
            ),
            (
                call(
                    "request_approval",
                    json!({"change": {"path": ["/x"]}, "agent": "bob"}),
                ),
                "unknown field",
            ),
            (
                call(
                    "emit_event",
                    json!({"name": "x", "data": "y".repeat(100_000)}),
                ),
                "at most",
            ),
            (
                call("emit_event", json!({"name": "x", "data": "y".repeat(5000)})),
                "at most 4096",
            ),
            (
                call("approval_status", json!({"id": 999_999})),
                "no approval 999999 of yours",
            ),
        ] {
            let tool = req.name.to_string();
            let e = mcp_error(client.call_tool(req).await);
            assert!(e.message.contains(want), "{tool}: {e:?}");
            assert!(!e.message.contains('\n'), "{tool}: {e:?}");
        }
        client.cancel().await.unwrap();
    });
    assert_eq!(approvals_all(&h), before, "bad MCP input changed nothing");
    assert_eq!(
        entries(
            &h,
            &[
                "HIVE_EVENT=agent_event",
                "HIVE_AGENT_EVENT=standin_hello",
                "HIVE_AGENT=alice"
            ]
        )
        .len(),
        1
    );

    // An admin approves: the agent is told, given the grace, then restarted.
    let t0 = Instant::now();
    let out = h.hivectl_ok(&["approve", &id.to_string()]);
    let approve_took = t0.elapsed();
    assert!(out.contains("applied"), "{out}");
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "the grace was given"
    );
    let kinds = events_db(
        &h,
        "alice",
        "SELECT id || ' ' || kind || ' ' || data FROM events ORDER BY id",
    );
    let pos = |what: &str| {
        kinds
            .lines()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what} not in the events db:\n{kinds}"))
    };
    let told = pos(&format!("restart_pending {{\"grace_secs\":4,\"id\":{id}}}"));
    assert!(pos(&format!("approval_decided {{\"id\":{id},\"kind\":\"spec_change\",\"note\":\"\",\"status\":\"approved\"}}")) < told);
    assert!(
        told < pos("stopping"),
        "told before the old harness was stopped:\n{kinds}"
    );

    // The new container's turns see the new PATH, and the decision wakes one.
    h.wait_for(
        "a turn woken by the applied decision",
        Duration::from_secs(30),
        || {
            turns_log(&h, "alice").iter().any(|t| {
                t[1].contains("approval_decided")
                    && t[2] == format!("approval {id} applied")
                    && t[3].starts_with("/opt/approved/bin:")
            })
        },
    );
    assert_eq!(
        events_db(&h, "alice", &format!("SELECT count(*) FROM events WHERE kind = 'approval_decided' AND data LIKE '%\"id\":{id},%\"status\":\"applied\"%'")),
        "1",
        "a decision sent again on every subscribe is recorded once"
    );

    // hivectl tell wakes a turn whose input has the message.
    let n = turns_log(&h, "alice").len();
    let t_tell = Instant::now();
    h.hivectl_ok(&["tell", "alice", "hello there"]);
    h.wait_for("the told turn", Duration::from_secs(15), || {
        turns_log(&h, "alice")
            .iter()
            .skip(n)
            .any(|t| t[1] == "tell" && t[2] == "hello there")
    });
    let tell_to_turn = t_tell.elapsed();
    let told = entries(&h, &["HIVE_EVENT=agent_told", "HIVE_AGENT=alice"]);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["HIVE_TOLD_BY"], "uid 0");
    assert_eq!(told[0]["HIVE_MESSAGE_TEXT"], "hello there");
    assert!(state_file(&h, "alice", "inputs").contains("\"message\":\"hello there\""));

    // Wakes during a long turn are coalesced into one turn.
    h.hivectl_ok(&["tell", "alice", "sleep 3"]);
    h.wait_for("the long turn", Duration::from_secs(15), || {
        turns_log(&h, "alice").iter().any(|t| t[2] == "sleep 3")
    });
    for m in ["one", "two", "three"] {
        h.hivectl_ok(&["tell", "alice", m]);
    }
    h.wait_for("the coalesced turn", Duration::from_secs(20), || {
        turns_log(&h, "alice").iter().any(|t| t[2] == "three")
    });
    let log = turns_log(&h, "alice");
    let after_long: Vec<_> = log
        .iter()
        .skip_while(|t| t[2] != "sleep 3")
        .skip(1)
        .collect();
    assert_eq!(after_long.len(), 1, "one turn for three wakes: {log:?}");
    let last_input: Value = serde_json::from_str(
        state_file(&h, "alice", "turn-input")
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let messages: Vec<_> = last_input["wakes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["one", "two", "three"]);

    // A hung turn is ended by the timeout (6 s), recorded, and the loop goes on.
    h.hivectl_ok(&["tell", "alice", "sleep 600"]);
    let mut killed = None;
    h.wait_for("the timed-out turn", Duration::from_secs(30), || {
        killed = entries(
            &h,
            &[
                "HIVE_EVENT=agent_turn",
                "HIVE_AGENT=alice",
                "HIVE_TURN_PHASE=done",
            ],
        )
        .into_iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.ends_with("killed at its timeout)"))
        });
        killed.is_some()
    });
    let killed = killed.unwrap();
    let data: Value = serde_json::from_str(killed["HIVE_DATA"].as_str().unwrap()).unwrap();
    assert_eq!(data["timed_out"], true);
    assert!(data["secs"].as_f64().unwrap() < 10.0, "{data}");
    assert!(
        !h.in_agent("alice", &["pgrep", "-f", "sleep 600"])
            .status
            .success(),
        "the hung turn's processes are gone"
    );
    h.hivectl_ok(&["tell", "alice", "after the timeout"]);
    h.wait_for("a turn after the timeout", Duration::from_secs(15), || {
        turns_log(&h, "alice")
            .iter()
            .any(|t| t[2] == "after the timeout")
    });

    // The record: journald has every turn, the events db too, and status the last one.
    let turns = entries(&h, &["HIVE_EVENT=agent_turn", "HIVE_AGENT=alice"]);
    let done = turns
        .iter()
        .filter(|e| e["HIVE_TURN_PHASE"] == "done")
        .count();
    assert!(done >= 6, "{done} turns done in journald");
    let db_done: usize = events_db(
        &h,
        "alice",
        "SELECT count(*) FROM events WHERE kind = 'turn_done'",
    )
    .parse()
    .unwrap();
    assert!(db_done >= done, "{db_done} in the db, {done} in journald");
    h.wait_for(
        "status shows the last turn",
        Duration::from_secs(10),
        || {
            h.hivectl_ok(&["status", "alice"])
                .contains("(woken by tell)")
        },
    );
    let st: Value = serde_json::from_str(&h.hivectl_ok(&["status", "alice", "--json"])).unwrap();
    assert_eq!(st["last_turn"]["phase"], "done");
    assert_eq!(st["last_turn"]["reason"], "tell");
    // The watchdog watched the harness loop, not the turns: one harness all along since
    // the rebuild, through a 600 s turn and a 10 s watchdog.
    assert_eq!(harness_show(&h, "alice", "NRestarts"), "0");
    println!(
        "figures: approve with a listening agent {approve_took:?} (grace 3 s + rebuild); \
         hivectl tell to the turn's line in /state {tell_to_turn:?} (polled); \
         hung turn killed after {}s (timeout 6 s)",
        data["secs"]
    );
}

/// One line each way on the agent's socket, as the agent would (identity: the socket).
fn ask(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &str) -> Value {
    stream.write_all(line.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

fn connect(h: &TestHost, agent: &str) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(socket_path(h, agent)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

#[test]
fn an_agent_cannot_tell_approve_or_see_others_and_a_deaf_one_stalls_nothing() {
    let h = hive();
    for a in ["alice", "bob"] {
        h.create(
            a,
            &[
                "--turns",
                "--harness",
                "sh",
                "-c",
                "cat > /state/last-input; echo x >> /state/turns",
            ],
        );
    }
    h.wait_for("both harnesses connected", Duration::from_secs(30), || {
        connections(&h, "alice") == 1 && connections(&h, "bob") == 1
    });
    // alice asks for something; bob may not see it, decide it, or tell anyone.
    let (mut a, mut ar) = connect(&h, "alice");
    assert_eq!(
        ask(&mut a, &mut ar, r#"{"type":"hello","version":1}"#)["agent"],
        "alice"
    );
    let id = ask(
        &mut a,
        &mut ar,
        r#"{"type":"request_approval","kind":"spec_change","payload":{"path":["/opt/x"]}}"#,
    )["id"]
        .as_i64()
        .unwrap();
    let (mut b, mut br) = connect(&h, "bob");
    ask(&mut b, &mut br, r#"{"type":"hello","version":1}"#);
    let refused = [
        format!(r#"{{"type":"approval_status","id":{id}}}"#),
        r#"{"type":"wake","reason":"tell","message":"hi"}"#.to_string(),
        r#"{"type":"tell","agent":"alice","message":"hi"}"#.to_string(),
        format!(r#"{{"type":"approve","id":{id}}}"#),
        format!(
            r#"{{"type":"approval_decided","id":{id},"kind":"spec_change","status":"approved"}}"#
        ),
        r#"{"type":"subscribe","agent":"alice"}"#.to_string(),
        r#"{"type":"whoami","agent":"alice"}"#.to_string(),
    ];
    for line in &refused {
        let v = ask(&mut b, &mut br, line);
        assert_eq!(v["type"], "error", "{line}: {v}");
    }
    let v = ask(&mut b, &mut br, r#"{"type":"my_approvals"}"#);
    assert_eq!(v["data"], json!([]), "bob sees none of alice's");
    let v = ask(&mut b, &mut br, r#"{"type":"whoami"}"#);
    assert_eq!(v["data"]["agent"], "bob");
    let all = approvals_all(&h);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "pending", "nothing decided it");

    // Telling is for root and hive-admin, as deciding is: a member of hive-admin may, a
    // user who is not may not, and is told who may.
    h.run_ok(&[
        "sh",
        "-c",
        "echo 'hiveadm:x:1001:1001::/:/usr/sbin/nologin' >> /etc/passwd && \
         echo 'hiveadm:x:1001:' >> /etc/group && \
         sed -i 's/^hive-admin:x:\\([0-9]*\\):$/hive-admin:x:\\1:hiveadm/' /etc/group && \
         grep -q '^hive-admin:.*:hiveadm$' /etc/group && \
         busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig",
    ]);
    let as_user = |user: &str, gid: &str, args: &[&str]| {
        let mut argv = vec![
            "setpriv",
            "--reuid",
            user,
            "--regid",
            gid,
            "--init-groups",
            HIVECTL,
        ];
        argv.extend_from_slice(args);
        h.run(&argv)
    };
    let out = as_user("nobody", "65534", &["tell", "alice", "from nobody"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("telling an agent needs root or membership in group hive-admin"),
        "{}",
        stderr(&out)
    );
    let out = as_user("hiveadm", "1001", &["tell", "alice", "from an admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    h.wait_for("the admin's message", Duration::from_secs(15), || {
        state_file(&h, "alice", "last-input").contains("from an admin")
    });
    assert_eq!(
        events_db(
            &h,
            "alice",
            "SELECT count(*) FROM events WHERE kind = 'wake' AND data LIKE '%from nobody%'"
        ),
        "0"
    );
    // Bad messages are refused before anything is sent, in one line.
    assert_bad_input(
        &h.hivectl(&["tell", "alice", "bell\u{7}"]),
        "control character",
    );
    assert_bad_input(
        &h.hivectl(&["tell", "alice", &"x".repeat(5000)]),
        "too long",
    );
    assert_bad_input(&h.hivectl(&["tell", "Not A Name", "hi"]), "bad name");
    let out = h.hivectl(&["tell", "nobody-here", "hi"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // bob subscribes on four connections and never reads them; an admin floods bob with
    // 4 KiB messages. Each tell returns at once; alice, the daemon and bob's own harness
    // are unaffected; bob's deaf connections are closed.
    let deaf: Vec<_> = (0..4)
        .map(|_| {
            let (mut s, mut r) = connect(&h, "bob");
            ask(&mut s, &mut r, r#"{"type":"hello","version":1}"#);
            assert_eq!(
                ask(&mut s, &mut r, r#"{"type":"subscribe"}"#)["type"],
                "subscribed"
            );
            (s, r)
        })
        .collect();
    let big = "m".repeat(4000);
    let mut slowest = Duration::ZERO;
    for _ in 0..150 {
        let t = Instant::now();
        let _ = h.hivectl(&["tell", "bob", &big]);
        slowest = slowest.max(t.elapsed());
    }
    assert!(slowest < Duration::from_secs(2), "a tell took {slowest:?}");
    let t = Instant::now();
    h.hivectl_ok(&["tell", "alice", "still here"]);
    h.hivectl_ok(&["list"]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    h.wait_for("alice's turn", Duration::from_secs(15), || {
        state_file(&h, "alice", "last-input").contains("still here")
    });
    h.wait_for(
        "bob's deaf connections closed",
        Duration::from_secs(30),
        || connections(&h, "bob") == 2,
    );
    // bob's harness (one connection, its subscription on it; a fifth subscription may
    // have replaced it, and it came back by itself) hears the next tell, and the same
    // harness runs: nothing was restarted.
    h.wait_for(
        "bob's harness subscribed again",
        Duration::from_secs(15),
        || {
            h.hivectl(&["tell", "bob", "after the flood"])
                .status
                .success()
        },
    );
    h.wait_for(
        "bob's turn after the flood",
        Duration::from_secs(15),
        || state_file(&h, "bob", "last-input").contains("after the flood"),
    );
    assert_eq!(harness_show(&h, "bob", "NRestarts"), "0");
    // bob's connection that never subscribed (as a harness that predates pushes) saw none
    // of the 150 tells: its next answer is the answer.
    assert_eq!(ask(&mut b, &mut br, r#"{"type":"ping"}"#)["type"], "pong");
    drop(deaf);
    println!("figures: 150 tells of 4 KiB to a deaf agent, slowest {slowest:?}");
}
