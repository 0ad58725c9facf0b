//! What an agent may ask for is bounded, and an admin sees what approving it does (issue
//! 13). Every refusal is made from inside a real agent, through its real socket; systemd,
//! journald and hivectl's exit codes are the oracle.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// `hive-harness request-approval spec_change PAYLOAD`, run inside the agent.
fn ask(h: &TestHost, agent: &str, payload: &str) -> Output {
    h.in_agent(
        agent,
        &[
            "/opt/hyperhive/bin/hive-harness",
            "request-approval",
            "spec_change",
            payload,
        ],
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The agent was told no, in one line, with exit 2.
fn assert_refused(out: &Output, what: &str, want: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err:?}");
    assert!(err.contains(want), "{what}: wanted {want:?} in {err:?}");
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
fn what_an_agent_may_ask_for_and_what_an_admin_sees_of_it() {
    let h = hive();
    h.run_ok(&[
        "sh",
        "-c",
        "mkdir -p /srv/real/docs /srv/docs && ln -s /srv/real /srv/link",
    ]);
    h.create("alice", &["--memory-max", "1G"]);

    let big = format!(r#"{{"env":{{"BIG":"{}"}}}}"#, "x".repeat(5000));
    let refusals: Vec<(&str, String, &str)> = vec![
        (
            "root",
            r#"{"root":"/"}"#.into(),
            "field \"root\" may not be requested by an agent",
        ),
        (
            "volatile",
            r#"{"volatile":"no"}"#.into(),
            "may not be requested",
        ),
        (
            "network",
            r#"{"network":"private"}"#.into(),
            "may not be requested",
        ),
        (
            "harness",
            r#"{"harness":["sh"]}"#.into(),
            "may not be requested",
        ),
        (
            "autostart",
            r#"{"autostart":false}"#.into(),
            "may not be requested",
        ),
        (
            "userns",
            r#"{"private_users":false}"#.into(),
            "may not be requested",
        ),
        (
            "capabilities",
            r#"{"capabilities":["CAP_SYS_ADMIN"]}"#.into(),
            "may not be requested",
        ),
        (
            "host root",
            r#"{"bind":["/:/mnt/host"]}"#.into(),
            "an agent may not bind /",
        ),
        (
            "/etc",
            r#"{"bind":["/etc:/mnt/etc:ro"]}"#.into(),
            "a directory holding /etc/hyperhive",
        ),
        (
            "the store",
            r#"{"bind":["/var/lib/hyperhive:/mnt/x"]}"#.into(),
            "an agent may not bind /var/lib/hyperhive",
        ),
        (
            "another agent's credentials",
            r#"{"bind":["/var/lib/hyperhive/agents/bob/claude:/mnt/x"]}"#.into(),
            "anything under /var/lib/hyperhive",
        ),
        (
            "/proc",
            r#"{"bind":["/proc/1/root:/mnt/x"]}"#.into(),
            "anything under /proc",
        ),
        (
            "host bus",
            r#"{"bind":["/run/dbus:/mnt/bus"]}"#.into(),
            "anything under /run",
        ),
        (
            "/dev",
            r#"{"bind":["/dev/sda:/mnt/x"]}"#.into(),
            "anything under /dev",
        ),
        (
            "unknown key",
            r#"{"bind":[{"source":"/srv/docs","target":"/mnt/docs","why":"docs mirror"}]}"#.into(),
            "unknown field `why`",
        ),
        (
            "bus target",
            r#"{"bind":["/srv/docs:/run/dbus"]}"#.into(),
            "/run/dbus",
        ),
        (
            "harness target",
            r#"{"bind":["/srv/docs:/opt"]}"#.into(),
            "/opt/hyperhive",
        ),
        (
            "symlink inside",
            r#"{"bind":["/srv/link/docs:/mnt/docs"]}"#.into(),
            "/srv/link is a symlink",
        ),
        (
            "symlink leaf",
            r#"{"bind":["/srv/link:/mnt/docs"]}"#.into(),
            "is a symlink",
        ),
        (
            "missing",
            r#"{"bind":["/srv/nope:/mnt/docs"]}"#.into(),
            "No such file or directory",
        ),
        (
            "dotdot",
            r#"{"bind":["/srv/docs/../../proc:/mnt/x"]}"#.into(),
            "must not contain ..",
        ),
        (
            "memory up",
            r#"{"memory_max":"2G"}"#.into(),
            "may only lower",
        ),
        (
            "bidi",
            r#"{"env":{"NOTE":"txt.\u202egpj"}}"#.into(),
            "U+202E",
        ),
        ("zero width", r#"{"env":{"A\u200b":"x"}}"#.into(), "U+200B"),
        ("big", big, "at most 4096 bytes"),
    ];
    for (what, payload, want) in &refusals {
        assert_refused(&ask(&h, "alice", payload), what, want);
    }
    assert!(approvals(&h, true).is_empty(), "nothing refused was stored");
    let refused = entries(&h, &["HIVE_EVENT=approval_refused", "HIVE_AGENT=alice"]);
    assert_eq!(
        refused.len(),
        refusals.len(),
        "one journal entry per refusal"
    );
    assert!(refused.iter().all(|e| e["HIVE_ERROR"]
        .as_str()
        .unwrap()
        .starts_with("agent alice: ")));

    // An event whose data is over 4 KiB is refused in one line too, over a raw connection
    // from inside the agent; nothing of it reaches the journal.
    let py = r#"
import json, socket
s = socket.socket(socket.AF_UNIX)
s.connect("/run/hyperhive/hive.sock")
f = s.makefile("rw")
f.write('{"type":"hello","version":1}\n'); f.flush(); f.readline()
f.write(json.dumps({"type": "event", "name": "big", "data": {"x": "y" * 5000}}) + "\n")
f.flush()
print(f.readline().strip())
"#;
    let out = h.in_agent("alice", &["python3", "-c", py]);
    let reply: Value = serde_json::from_str(&stdout(&out)).expect("one JSON reply");
    assert_eq!(reply["type"], "error");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("event big: data of 5008 bytes, at most 4096"),
        "{reply}"
    );
    assert!(entries(&h, &["HIVE_AGENT_EVENT=big"]).is_empty());

    // What may be asked for is stored; the same request again gets the same id.
    let docs = r#"{"bind":["/srv/docs:/mnt/docs:ro"],"memory_max":"512M"}"#;
    let out = ask(&h, "alice", docs);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out);
    assert_eq!(
        stdout(&ask(&h, "alice", docs)),
        id,
        "identical pending request"
    );
    assert_eq!(approvals(&h, false).len(), 1);

    // What an admin sees before deciding: who asked and when, the spec diff, the host
    // checks, and the unit property diff of the rebuild approving would make.
    let text = h.hivectl_ok(&["approvals", "--show", &id]);
    for want in [
        &format!("approval {id} (pending): spec_change asked by agent alice at "),
        "+ source = \"/srv/docs\"",
        "- memory_max = 1073741824",
        "+ memory_max = 536870912",
        "ok requested bind source: /srv/docs: exists, no symlink in its path, not a protected host path; bound read-only at /mnt/docs",
        "ok root: /",
        "if approved:",
        "alice: rebuild hive-agent-alice.service",
        "~ ExecStart",
        "--bind-ro=/srv/docs:/mnt/docs",
        "~ MemoryMax",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let view: Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--show", &id, "--json"])).unwrap();
    assert_eq!(view["approval"]["id"].to_string(), id);
    assert_eq!(view["requested_by"], "alice");
    assert!(view["requested_at"].as_i64().unwrap() > 0);
    assert_eq!(view["plan"]["action"], "rebuild");
    let diffed: Vec<&str> = view["plan"]["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["property"].as_str().unwrap())
        .collect();
    assert!(
        diffed.contains(&"ExecStart") && diffed.contains(&"MemoryMax"),
        "{diffed:?}"
    );
    assert!(view["plan"]["checks"][0]["what"] == "requested bind source");
    // The same over D-Bus.
    let raw = h.run_ok(&[
        "busctl",
        "--json=short",
        "call",
        "org.hyperhive.Hive1",
        "/org/hyperhive/hive1",
        "org.hyperhive.Hive1.Manager",
        "ShowApproval",
        "x",
        &id,
    ]);
    let raw: Value = serde_json::from_str(&raw).unwrap();
    let over_bus: Value = serde_json::from_str(raw["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(over_bus["plan"]["diff"], view["plan"]["diff"]);
    assert_bad_input(&h.hivectl(&["approvals", "--show", "9999"]), "unknown id");

    // At most 32 pending per agent; the next one is told so, in one line.
    let out = h.in_agent(
        "alice",
        &[
            "sh",
            "-c",
            "for i in $(seq 2 33); do /opt/hyperhive/bin/hive-harness request-approval \
             spec_change \"{\\\"env\\\":{\\\"K$i\\\":\\\"v\\\"}}\" >/dev/null 2>/run/err || \
             { cat /run/err; exit 3; }; done",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "the 33rd is refused");
    let err = stdout(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("agent alice already has 32 pending approvals"),
        "{err}"
    );
    assert_eq!(approvals(&h, false).len(), 32);
}

#[test]
fn destroy_fails_pending_approvals_and_a_new_agent_of_that_name_gets_none() {
    let h = hive();
    h.create("alice", &[]);
    let out = ask(&h, "alice", r#"{"path":["/opt/a/bin"]}"#);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out);
    h.hivectl_ok(&["destroy", "alice"]);

    let all = approvals(&h, true);
    assert_eq!(all.len(), 1, "kept for audit");
    assert_eq!(all[0]["status"], "failed");
    assert_eq!(all[0]["note"], "agent destroyed");
    let failed = entries(
        &h,
        &[
            "HIVE_EVENT=approval_failed",
            &format!("HIVE_APPROVAL_ID={id}"),
        ],
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["HIVE_ERROR"], "agent destroyed");

    // A new alice inherits nothing, and the old request can never be approved.
    h.create("alice", &[]);
    assert!(approvals(&h, false).is_empty());
    let out = h.hivectl(&["approve", &id]);
    assert_bad_input(&out, "approve a destroyed agent's request");
    assert!(stderr(&out).contains("already failed"), "{}", stderr(&out));
    assert!(!h.unit_show("alice", "ExecStart").contains("/opt/a/bin"));
    assert!(!h.unit_show("alice", "Environment").contains("/opt/a/bin"));

    // Admin input that is not UTF-8 is refused in one line, not a panic.
    for flag in ["--root", "--path", "--bind"] {
        let base = if flag == "--root" { "" } else { "--root /" };
        let script =
            format!("{HIVECTL} create bad {base} --volatile yes {flag} \"$(printf '/a\\377')\"");
        let out = h.run(&["sh", "-c", &script]);
        assert_bad_input(&out, flag);
        assert!(stderr(&out).contains("not valid UTF-8"), "{}", stderr(&out));
    }
    assert!(!h.agent_units().iter().any(|u| u.contains("bad")));
}

#[test]
fn a_broken_store_leaves_every_agent_and_the_lifecycle_api_up() {
    let h = hive();
    h.create("alice", &[]);
    let out = ask(&h, "alice", r#"{"path":["/opt/a/bin"]}"#);
    assert!(out.status.success(), "{}", stderr(&out));
    let container = h.invocation("alice");
    let harness = harness_invocation(&h, "alice");
    let store = "/var/lib/hyperhive/hive.sqlite";

    let faults = [
        (
            "random bytes over the store's first pages",
            // Checkpointed first, so the pages are in the file itself and not still in the
            // WAL, which SQLite would read instead.
            format!(
                "sqlite3 {store} 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null && \
                 dd if=/dev/urandom of={store} bs=4096 count=2 conv=notrunc status=none"
            ),
            "file is not a database",
        ),
        (
            "a schema version from the future",
            format!("rm -f {store} {store}-wal {store}-shm && sqlite3 {store} 'PRAGMA user_version = 99'"),
            "schema version 99 is newer than this hyperhive understands",
        ),
    ];
    for (what, break_it, why) in faults {
        h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
        h.run_ok(&["sh", "-c", &break_it]);
        // `systemctl start` of a Type=notify unit returns once READY=1 came.
        h.run_ok(&["systemctl", "start", "hive-c0re.service"]);
        assert_eq!(
            h.show("hive-c0re.service", "ActiveState"),
            "active",
            "{what}"
        );
        let status = h.show("hive-c0re.service", "StatusText");
        assert!(
            status.contains("approvals store unavailable") && status.contains(why),
            "{what}: STATUS={status}"
        );
        assert!(
            entries(&h, &["HIVE_EVENT=store_unavailable"])
                .iter()
                .any(|e| e["HIVE_ERROR"].as_str().unwrap().contains(why)),
            "{what}: journaled"
        );
        let out = h.hivectl(&["approvals"]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert_eq!(stderr(&out).lines().count(), 1, "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{what}: {}", stderr(&out));

        // The agent's socket still answers (one line), and nothing of alice restarted.
        let out = ask(&h, "alice", r#"{"path":["/opt/b/bin"]}"#);
        assert_refused(&out, what, "approvals store unavailable");
        h.wait_for(
            "alice's harness reconnected",
            Duration::from_secs(30),
            || connections(&h, "alice") == 1,
        );
        assert_eq!(listeners(&h, "alice"), 1, "{what}");
        assert_eq!(h.invocation("alice"), container, "{what}: container kept");
        assert_eq!(
            harness_invocation(&h, "alice"),
            harness,
            "{what}: harness kept"
        );

        // The lifecycle API works without the store, destroy included.
        h.hivectl_ok(&["list"]);
        h.create("bob", &[]);
        h.hivectl_ok(&["destroy", "bob"]);
    }
    // After a settling pause, alice's harness is still the same one (its watchdog never
    // fired across both restarts).
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(harness_invocation(&h, "alice"), harness);
}

#[test]
fn sixteen_connections_flooding_for_30_s_are_throttled_and_admins_are_answered() {
    let h = hive();
    h.create("alice", &[]);
    let rss = || -> u64 {
        let out = h.run_ok(&[
            "sh",
            "-c",
            "grep VmRSS /proc/$(systemctl show -P MainPID hive-c0re.service)/status",
        ]);
        out.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let rss_before = rss();
    let path = socket_path(&h, "alice");
    let stop = Arc::new(AtomicBool::new(false));
    let (events, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let t0 = Instant::now();
    let floods: Vec<_> = (0..15)
        .map(|n| {
            let (path, stop) = (path.clone(), stop.clone());
            let (events, requests) = (events.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                s.write_all(b"{\"type\":\"hello\",\"version\":1}\n")
                    .unwrap();
                r.read_line(&mut line).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let msg = if n % 2 == 0 {
                        format!(
                            "{{\"type\":\"event\",\"name\":\"flood\",\"data\":{{\"i\":{i}}}}}\n"
                        )
                    } else {
                        format!(
                            "{{\"type\":\"request_approval\",\"kind\":\"spec_change\",\
                             \"payload\":{{\"env\":{{\"K{n}x{i}\":\"v\"}}}}}}\n"
                        )
                    };
                    s.write_all(msg.as_bytes()).unwrap();
                    line.clear();
                    // A throttled reply comes late, never never.
                    r.read_line(&mut line).expect("a reply within 5 s");
                    let v: Value = serde_json::from_str(&line).unwrap();
                    if n % 2 == 0 {
                        assert_eq!(v["type"], "ok", "{line}");
                        events.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert!(
                            v["type"] == "approval_pending"
                                || v["error"]
                                    .as_str()
                                    .is_some_and(|e| e.contains("already has 32 pending")),
                            "{line}"
                        );
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Meanwhile an admin lists approvals every 2 s: each answer within 1 s.
    let mut slowest = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(30) {
        let t = Instant::now();
        let out = h.hivectl(&["approvals", "--json"]);
        let took = t.elapsed();
        assert!(out.status.success(), "{}", stderr(&out));
        slowest = slowest.max(took);
        assert!(
            took < Duration::from_secs(1),
            "hivectl approvals took {took:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let (events, requests) = (
        events.load(Ordering::Relaxed),
        requests.load(Ordering::Relaxed),
    );

    // The journal stays readable, and holds one throttling entry, not one per message.
    let t = Instant::now();
    h.run_ok(&["journalctl", "-n", "50", "--no-pager"]);
    let journal_took = t.elapsed();
    assert!(journal_took < Duration::from_secs(2), "{journal_took:?}");
    let throttled = entries(&h, &["HIVE_EVENT=agent_throttled", "HIVE_AGENT=alice"]);
    assert_eq!(throttled.len(), 1, "once, not per message");
    let logged = entries(&h, &["HIVE_EVENT=agent_event", "HIVE_AGENT_EVENT=flood"]).len();
    // The rates (docs/socket-protocol.md): events 100/s bursts of 200, requests 10/s
    // bursts of 32, for all of an agent's connections together.
    assert!(
        events <= 200 + (100.0 * (secs + 1.0)) as usize,
        "{events} events in {secs:.1} s"
    );
    assert!(
        requests <= 32 + (10.0 * (secs + 1.0)) as usize,
        "{requests} requests"
    );
    assert!(events > 1000, "events still flow: {events}");
    assert_eq!(logged, events, "every accepted event journaled once");
    assert_eq!(approvals(&h, false).len(), 32, "the cap held");
    let rss_after = rss();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory bounded: {rss_before} kB before, {rss_after} kB after"
    );
    eprintln!(
        "figures: {events} events, {requests} requests in {secs:.1} s from 15 connections; \
         slowest hivectl approvals {slowest:?}; journalctl -n 50 {journal_took:?}; \
         hive-c0re RSS {rss_before} → {rss_after} kB"
    );
}

#[test]
fn listings_are_paged_behind_the_scenes_and_no_reply_nears_the_bus_limit() {
    let h = hive();
    // 2,600 decided rows, every tenth with 60 KiB of payload as a store from before the
    // payload cap may hold: 6 MB in the first thousand, more than one reply may carry.
    let sql = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < 2600) \
        INSERT INTO approvals (agent, kind, payload, status, created_at) \
        SELECT 'a' || (i % 7), 'spec_change', \
        CASE WHEN i % 10 = 0 THEN '{\"env\":{\"K\":\"' || printf('%.*c', 61440, 'x') || '\"}}' \
        ELSE '{\"env\":{\"K' || i || '\":\"v\"}}' END, 'denied', 1700000000000000 + i FROM n;";
    h.run_ok(&[
        "sqlite3",
        "-cmd",
        ".timeout 5000",
        "/var/lib/hyperhive/hive.sqlite",
        sql,
    ]);
    let listed = approvals(&h, true);
    assert_eq!(listed.len(), 2600, "every row, through several pages");
    assert!(listed
        .windows(2)
        .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    let table = h.hivectl_ok(&["approvals", "--all"]);
    assert!(
        table.ends_with("2600 approvals listed."),
        "{}",
        &table[table.len() - 80..]
    );

    // Each reply is bounded: the old call gives the first page only, and a page of big
    // rows is cut by bytes with the id to go on from.
    let call = |args: &[&str]| {
        let mut argv = vec![
            "busctl",
            "--json=short",
            "call",
            "org.hyperhive.Hive1",
            "/org/hyperhive/hive1",
            "org.hyperhive.Hive1.Manager",
        ];
        argv.extend_from_slice(args);
        let out = h.run_ok(&argv);
        (out.len(), serde_json::from_str::<Value>(&out).unwrap())
    };
    let (size, first) = call(&["ListApprovals", "b", "true"]);
    let rows = first["data"][0].as_array().unwrap().len();
    assert!(
        rows <= 1000 && size < 5 * 1024 * 1024,
        "{rows} rows, {size} bytes"
    );
    let (size, page) = call(&["ListApprovalsPage", "bxu", "true", "0", "0"]);
    let rows = page["data"][0].as_array().unwrap();
    let next = page["data"][1].as_i64().unwrap();
    assert!(rows.len() < 1000, "cut by bytes: {} rows", rows.len());
    assert!(size < 5 * 1024 * 1024, "{size} bytes");
    assert_eq!(next, rows.last().unwrap()[0].as_i64().unwrap());
    // The last page says there is no more.
    let (_, last) = call(&["ListApprovalsPage", "bxu", "true", "2590", "0"]);
    assert_eq!(last["data"][0].as_array().unwrap().len(), 10);
    assert_eq!(last["data"][1], 0);
}
