//! Approvals end to end on a real systemd: agents ask through their socket, admins decide
//! with hivectl, the daemon applies by rebuilding; journald and systemd are the oracle.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// A stand-in for claude that asks for /opt/approved/bin on its PATH until it has it.
const ASKING: &str = r#"echo "$PATH" > /state/path
case ":$PATH:" in
  *:/opt/approved/bin:*) ;;
  *) hive-harness request-approval spec_change '{"path":["/opt/approved/bin"]}' > /state/requested ;;
esac
exec sleep infinity"#;

/// Creates `agent` with the asking stand-in and returns the id of its request.
fn asking_agent(h: &TestHost, agent: &str) -> i64 {
    h.create(agent, &["--harness", "sh", "-c", ASKING]);
    let mut id = String::new();
    h.wait_for("the agent's request", Duration::from_secs(15), || {
        id = state_file(h, agent, "requested");
        !id.is_empty()
    });
    id.parse().expect("request-approval prints the id")
}

fn approvals(h: &TestHost, all: bool) -> Vec<Value> {
    let mut args = vec!["approvals", "--json"];
    if all {
        args.push("--all");
    }
    let v: Value = serde_json::from_str(&h.hivectl_ok(&args)).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn an_agent_asks_for_a_path_an_admin_approves_and_the_harness_gets_it() {
    let h = hive();
    let id = asking_agent(&h, "alice");
    assert!(!state_file(&h, "alice", "path").contains("/opt/approved/bin"));

    let status = h.hivectl_ok(&["status", "alice"]);
    assert!(status.contains(&format!("Approvals: #{id}")), "{status}");
    let pending = approvals(&h, false);
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["id"], id);
    assert_eq!(pending[0]["agent"], "alice");
    assert_eq!(pending[0]["kind"], "spec_change");
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(pending[0]["payload"]["path"][0], "/opt/approved/bin");
    assert!(h.hivectl_ok(&["approvals"]).contains("spec_change"));

    let out = h.hivectl_ok(&["approve", &id.to_string(), "--note", "ok for alice"]);
    assert!(out.contains("applied"), "{out}");

    // The rebuilt harness runs with the new PATH, and asks no more.
    h.wait_for(
        "the approved PATH reached the agent",
        Duration::from_secs(15),
        || state_file(&h, "alice", "path").starts_with("/opt/approved/bin:"),
    );
    assert!(h
        .unit_show("alice", "Environment")
        .contains(&format!("HIVE_APPROVAL_ID={id}")));
    assert!(approvals(&h, false).is_empty());
    let all = approvals(&h, true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "applied");
    assert_eq!(all[0]["decided_by"], "uid 0");
    assert_eq!(all[0]["note"], "ok for alice");

    // journalctl HIVE_APPROVAL_ID=N tells what it did: the decision, the rebuild, and the
    // rebuilt harness's own lines.
    let story = entries(&h, &[&format!("HIVE_APPROVAL_ID={id}")]);
    let events: Vec<&str> = story
        .iter()
        .filter_map(|e| e["HIVE_EVENT"].as_str())
        .collect();
    for want in [
        "approval_requested",
        "approval_approved",
        "rebuild_started",
        "rebuild_finished",
        "approval_applied",
    ] {
        assert!(events.contains(&want), "{want} missing from {events:?}");
    }
    assert!(
        story
            .iter()
            .any(|e| e["SYSLOG_IDENTIFIER"] == "hive-harness"),
        "the rebuilt harness's own lines carry the approval id"
    );
}

#[test]
fn deny_changes_nothing_and_a_second_decision_is_refused() {
    let h = hive();
    let id = asking_agent(&h, "alice").to_string();
    let spec_before = h.run_ok(&["cat", "/var/lib/hyperhive/agents/alice/spec.toml"]);
    let invocation = h.invocation("alice");

    let out = h.hivectl_ok(&["deny", &id, "--note", "not today"]);
    assert!(out.contains("denied"), "{out}");
    assert_eq!(
        h.run_ok(&["cat", "/var/lib/hyperhive/agents/alice/spec.toml"]),
        spec_before
    );
    assert_eq!(h.invocation("alice"), invocation, "nothing was rebuilt");
    assert_eq!(
        entries(
            &h,
            &[
                "HIVE_EVENT=approval_denied",
                &format!("HIVE_APPROVAL_ID={id}")
            ]
        )
        .len(),
        1
    );

    for verb in ["approve", "deny"] {
        let out = h.hivectl(&[verb, &id]);
        assert_bad_input(&out, &format!("second {verb}"));
        assert!(stderr(&out).contains("already denied"), "{}", stderr(&out));
    }
    assert_bad_input(&h.hivectl(&["approve", "9999"]), "unknown id");
    assert_eq!(approvals(&h, true)[0]["status"], "denied");
}

#[test]
fn an_orphan_is_marked_failed_and_kept() {
    let h = hive();
    let id = asking_agent(&h, "alice");
    h.run_ok(&["rm", "-rf", "/var/lib/hyperhive/agents/alice/state"]);
    assert!(approvals(&h, false).is_empty(), "no longer pending");
    let all = approvals(&h, true);
    assert_eq!(all.len(), 1, "kept for audit");
    assert_eq!(all[0]["status"], "failed");
    assert_eq!(all[0]["note"], "agent state dir missing");
    assert_eq!(
        entries(
            &h,
            &[
                "HIVE_EVENT=approval_failed",
                &format!("HIVE_APPROVAL_ID={id}")
            ]
        )
        .len(),
        1
    );
    assert_bad_input(
        &h.hivectl(&["approve", &id.to_string()]),
        "approve an orphan",
    );
}

#[test]
fn eight_concurrent_approvals_end_with_exactly_one_decision() {
    let h = hive();
    let id = asking_agent(&h, "alice");
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do ({} approve {id} >/dev/null 2>&1; echo $? > /run/rc$i) & done; wait; cat /run/rc*",
        HIVECTL
    );
    let codes = h.run_ok(&["sh", "-c", &script]);
    let mut codes: Vec<&str> = codes.lines().collect();
    codes.sort();
    assert_eq!(codes, vec!["0", "2", "2", "2", "2", "2", "2", "2"]);
    let all = approvals(&h, true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "applied");
    assert_eq!(
        entries(
            &h,
            &[
                "HIVE_EVENT=approval_approved",
                &format!("HIVE_APPROVAL_ID={id}")
            ]
        )
        .len(),
        1
    );
}

#[test]
fn only_root_and_hive_admin_may_see_and_decide() {
    let h = hive();
    let id = asking_agent(&h, "alice").to_string();
    // A real admin user in the hive-admin group (created by units/sysusers.d at boot).
    h.run_ok(&[
        "sh",
        "-c",
        "echo 'hiveadm:x:1001:1001::/:/usr/sbin/nologin' >> /etc/passwd && \
         echo 'hiveadm:x:1001:' >> /etc/group && \
         sed -i 's/^hive-admin:x:\\([0-9]*\\):$/hive-admin:x:\\1:hiveadm/' /etc/group && \
         grep -q '^hive-admin:.*:hiveadm$' /etc/group && \
         busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig",
    ]);
    // Numeric gids: Debian's nobody has no group of its own name.
    let as_user = |user: &str, args: &[&str]| {
        let gid = if user == "nobody" { "65534" } else { "1001" };
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
    let out = as_user("nobody", &["approvals"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("access denied"), "{}", stderr(&out));
    let out = as_user("nobody", &["approve", &id]);
    assert_eq!(out.status.code(), Some(1));

    let out = as_user("hiveadm", &["approvals", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = as_user("hiveadm", &["deny", &id, "--note", "by an admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(approvals(&h, true)[0]["decided_by"], "uid 1001");
    // Admins decide approvals; they do not change agents themselves.
    let out = as_user("hiveadm", &["stop", "alice"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_bad_request_is_refused_at_the_door() {
    let h = hive();
    h.create("alice", &[]);
    let out = h.in_agent(
        "alice",
        &[
            "/opt/hyperhive/bin/hive-harness",
            "request-approval",
            "spec_change",
            r#"{"path":["relative"]}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("path entry relative"),
        "{}",
        stderr(&out)
    );
    let out = h.in_agent(
        "alice",
        &[
            "/opt/hyperhive/bin/hive-harness",
            "request-approval",
            "root_please",
            "{}",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(approvals(&h, true).is_empty());
}

/// Each agent may have 32 pending approvals (docs/approvals.md): a flood gets every
/// request answered, the first 32 of each agent stored with their own ids, the rest told
/// why, and nothing lost or doubled.
#[test]
fn a_flood_of_300_requests_from_3_agents_loses_none_and_stops_each_at_32() {
    let h = hive();
    for a in ["a1", "a2", "a3"] {
        h.create(a, &[]);
    }
    let leader = h.leader();
    let threads: Vec<_> = ["a1", "a2", "a3"]
        .into_iter()
        .map(|agent| {
            std::thread::spawn(move || {
                let path = format!("/proc/{leader}/root/run/hyperhive/{agent}/hive.sock");
                let mut s = UnixStream::connect(path).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                s.write_all(b"{\"type\":\"hello\",\"version\":1}\n").unwrap();
                r.read_line(&mut line).unwrap();
                let (mut ids, mut capped) = (Vec::new(), 0);
                for i in 0..100 {
                    let req = format!(
                        "{{\"type\":\"request_approval\",\"kind\":\"spec_change\",\"payload\":{{\"env\":{{\"K{i}\":\"v\"}}}}}}\n"
                    );
                    s.write_all(req.as_bytes()).unwrap();
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    let v: Value = serde_json::from_str(&line).unwrap();
                    if v["type"] == "approval_pending" {
                        ids.push(v["id"].as_i64().unwrap());
                    } else {
                        let e = v["error"].as_str().unwrap();
                        assert!(e.contains(&format!("agent {agent} already has 32 pending")), "{e}");
                        capped += 1;
                    }
                }
                (ids, capped)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in threads {
        let (got, capped) = t.join().unwrap();
        assert_eq!((got.len(), capped), (32, 68), "every request answered");
        ids.extend(got);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 96, "every stored request got its own id");
    let pending = approvals(&h, false);
    assert_eq!(pending.len(), 96, "none lost");
    for a in ["a1", "a2", "a3"] {
        assert_eq!(pending.iter().filter(|p| p["agent"] == a).count(), 32);
    }
}

/// Every signal of the manager interface a client on the test host's bus receives, as
/// (member, arguments), collected from now on by a task of the returned runtime.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

fn watch_manager_signals(h: &TestHost) -> (tokio::runtime::Runtime, Seen) {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen = Seen::default();
    let into = seen.clone();
    let addr = h.bus_address();
    rt.block_on(async move {
        let conn = zbus::connection::Builder::address(addr.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.hyperhive.Hive1.Manager")
            .unwrap()
            .build();
        // The match rule is in place once this returns: nothing after is missed.
        let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, Some(256))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _conn = conn;
            while let Some(Ok(msg)) = stream.next().await {
                let member = msg.header().member().map(|m| m.to_string());
                let args = match member.as_deref() {
                    Some("ApprovalNew" | "ApprovalChanged") => msg
                        .body()
                        .deserialize::<(i64, String)>()
                        .map(|(id, s)| format!("{id} {s}")),
                    Some("AgentNew" | "AgentRemoved") => msg
                        .body()
                        .deserialize::<(String, zbus::zvariant::OwnedObjectPath)>()
                        .map(|(name, path)| format!("{name} {}", path.as_str())),
                    _ => continue,
                };
                into.lock()
                    .unwrap()
                    .push((member.unwrap_or_default(), args.unwrap_or_default()));
            }
        });
    });
    (rt, seen)
}

fn has_seen(seen: &Seen, member: &str, args: &str) -> bool {
    seen.lock()
        .unwrap()
        .iter()
        .any(|(m, a)| m == member && a == args)
}

/// The bus is told what changes inside the daemon, not only what a D-Bus call changed: an
/// agent's request over its socket is announced with ApprovalNew, each change of its
/// status with ApprovalChanged, and an agent a SIGHUP reconcile created from a declared
/// spec gets its object, announced with AgentNew. A client watching the bus sees each.
#[test]
fn the_bus_is_told_what_changes_without_a_call() {
    let h = hive();
    let (_rt, seen) = watch_manager_signals(&h);
    let id = asking_agent(&h, "alice");
    h.wait_for("ApprovalNew from alice", Duration::from_secs(15), || {
        has_seen(&seen, "ApprovalNew", &format!("{id} alice"))
    });
    h.hivectl_ok(&["approve", &id.to_string()]);
    for status in ["approved", "applied"] {
        h.wait_for(
            &format!("ApprovalChanged to {status}"),
            Duration::from_secs(15),
            || has_seen(&seen, "ApprovalChanged", &format!("{id} {status}")),
        );
    }

    // A declared spec, picked up by SIGHUP: no D-Bus call creates bob.
    h.run_ok(&[
        "sh",
        "-c",
        "mkdir -p /etc/hyperhive/agents && \
         printf 'root = \"/\"\\nvolatile = \"yes\"\\n' > /etc/hyperhive/agents/bob.toml",
    ]);
    h.run_ok(&[
        "systemctl",
        "kill",
        "-s",
        "HUP",
        "--kill-whom=main",
        "hive-c0re",
    ]);
    h.wait_for("AgentNew for bob", Duration::from_secs(60), || {
        has_seen(&seen, "AgentNew", "bob /org/hyperhive/hive1/agent/bob")
    });
    let out = h.run_ok(&[
        "busctl",
        "call",
        "org.hyperhive.Hive1",
        "/org/hyperhive/hive1",
        "org.hyperhive.Hive1.Manager",
        "GetAgent",
        "s",
        "bob",
    ]);
    assert!(out.contains("/org/hyperhive/hive1/agent/bob"), "{out}");
    assert_eq!(h.unit_show("bob", "ActiveState"), "active");
}
