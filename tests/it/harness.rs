//! The harness unit inside each agent and the agent's socket, on a real systemd: the
//! oracle is systemctl -M (the container's own systemd), ss and the files the agent's
//! command writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::common::*;

/// A stand-in for claude: records the PATH it sees in /state, then waits.
const STAND_IN: &[&str] = &[
    "--harness",
    "sh",
    "-c",
    "echo \"$PATH\" > /state/path; exec sleep infinity",
];

fn wait_harness_running(h: &TestHost, agent: &str) {
    h.wait_for(
        &format!("hive-harness in h-{agent} active/running"),
        Duration::from_secs(30),
        || {
            let out = h.run(&[
                "systemctl",
                "-M",
                &format!("h-{agent}"),
                "show",
                "-P",
                "SubState",
                "hive-harness.service",
            ]);
            String::from_utf8_lossy(&out.stdout).trim() == "running"
        },
    );
}

#[test]
fn harness_runs_inside_the_container_with_the_agents_path() {
    let h = hive();
    let mut args = vec!["--path", "/opt/tools/bin"];
    args.extend_from_slice(STAND_IN);
    h.create("alice", &args);

    // create returned only once the harness was connected (Type=notify).
    assert_eq!(harness_show(&h, "alice", "ActiveState"), "active");
    assert_eq!(harness_show(&h, "alice", "Type"), "notify");
    assert_eq!(harness_show(&h, "alice", "WatchdogUSec"), "10s");
    assert!(
        harness_show(&h, "alice", "StatusText").contains("connected to hive-c0re as agent alice")
    );
    let env = harness_show(&h, "alice", "Environment");
    assert!(
        env.contains("PATH=/opt/tools/bin:/opt/hyperhive/bin:"),
        "{env}"
    );

    // The agent's command sees that PATH.
    h.wait_for(
        "the stand-in wrote /state/path",
        Duration::from_secs(10),
        || state_file(&h, "alice", "path").starts_with("/opt/tools/bin:"),
    );
    assert_eq!(listeners(&h, "alice"), 1);
    assert_eq!(connections(&h, "alice"), 1);

    // Its durable event log is in /state.
    h.run_ok(&[
        "test",
        "-s",
        "/var/lib/hyperhive/agents/alice/state/hyperhive-events.sqlite",
    ]);
    // What it told the daemon is in the journal, under the agent's name.
    let j = h.run_ok(&[
        "journalctl",
        "-o",
        "cat",
        "HIVE_AGENT=alice",
        "HIVE_EVENT=agent_event",
    ]);
    assert!(j.contains("command_started"), "{j}");
}

#[test]
fn a_path_added_to_the_spec_reaches_the_harness_after_a_rebuild() {
    let h = hive();
    h.create("alice", STAND_IN);
    assert!(!state_file(&h, "alice", "path").contains("/opt/new/bin"));
    h.run_ok(&[
        "sh",
        "-c",
        "echo 'path = [\"/opt/new/bin\"]' >> /var/lib/hyperhive/agents/alice/spec.toml",
    ]);
    h.hivectl_ok(&["rebuild", "alice"]);
    wait_harness_running(&h, "alice");
    h.wait_for(
        "the new PATH reached the agent's command",
        Duration::from_secs(10),
        || state_file(&h, "alice", "path").starts_with("/opt/new/bin:"),
    );
}

#[test]
fn daemon_restart_then_rebuild_leaves_one_socket_one_listener_one_harness() {
    let h = hive();
    h.create("alice", STAND_IN);
    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
    h.hivectl_ok(&["rebuild", "alice"]);
    wait_harness_running(&h, "alice");

    assert_eq!(listeners(&h, "alice"), 1);
    assert_eq!(h.run_ok(&["ls", "-A", "/run/hyperhive/alice"]), "hive.sock");
    let units = h.run_ok(&[
        "systemctl",
        "-M",
        "h-alice",
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "hive-harness*",
    ]);
    assert_eq!(units.lines().count(), 1, "{units}");
    h.wait_for("the harness reconnected", Duration::from_secs(15), || {
        connections(&h, "alice") == 1
    });
    assert!(harness_show(&h, "alice", "StatusText").contains("connected"));

    // A restart alone (no rebuild) also leaves the harness connected: it reconnects itself.
    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
    assert_eq!(listeners(&h, "alice"), 1);
    h.wait_for(
        "the harness reconnected after a bare restart",
        Duration::from_secs(15),
        || connections(&h, "alice") == 1,
    );
}

/// The sockets the daemon holds, by systemd's account of its main process.
fn daemon_sockets(h: &TestHost) -> usize {
    let pid = h.show("hive-c0re.service", "MainPID");
    h.run_ok(&["ls", "-l", &format!("/proc/{pid}/fd")])
        .lines()
        .filter(|l| l.contains("socket:"))
        .count()
}

/// A restart hands the connections to the agents' containers to systemd's fd store rather
/// than closing them as the old daemon exits (which woke every container at once); the
/// next daemon takes them, has systemd drop its copies, and closes them only after READY=1
/// and the adoption. Nothing accumulates: not in the store, not in the daemon.
#[test]
fn a_restart_carries_the_container_connections_in_the_fd_store_until_adopted() {
    let h = hive();
    h.create("alice", STAND_IN);
    h.create("bob", STAND_IN);
    // Each agent's harness crash watch holds one connection to its container.
    h.wait_for("both harnesses watched", Duration::from_secs(20), || {
        daemon_log(&h)
            .matches("watching hive-harness.service for crashes")
            .count()
            >= 2
    });
    let settled = |h: &TestHost, restarts: usize| {
        h.wait_for(
            "the new daemon closed what it was handed",
            Duration::from_secs(30),
            || {
                daemon_log(h)
                    .matches("closed 2 container connections the previous daemon handed over")
                    .count()
                    == restarts
            },
        );
    };
    for restart in 1..=2 {
        h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
        settled(&h, restart);
        let log = daemon_log(&h);
        let at = |what: &str| {
            log.rfind(what)
                .unwrap_or_else(|| panic!("{what:?} not in the daemon's journal:\n{log}"))
        };
        // In this order: handed over by the old daemon, taken by the new one, READY=1,
        // closed after the adoption.
        assert!(
            at("handed 2 container connections to systemd's fd store")
                < at("hive-c0re stopping; agents keep running")
        );
        assert!(at("hive-c0re stopping; agents keep running") < at("took 2 container connections"));
        assert!(at("took 2 container connections") < at("hive-c0re ready on"));
        assert!(at("hive-c0re ready on") < at("closed 2 container connections"));
        // systemd dropped its copies when the new daemon took them.
        assert_eq!(h.show("hive-c0re.service", "NFileDescriptorStore"), "0");
    }
    // Another restart leaves the daemon with as many sockets as before it: the handed-over
    // connections were closed, not kept.
    let harnesses_back = |h: &TestHost| {
        h.wait_for("both harnesses back", Duration::from_secs(15), || {
            connections(h, "alice") == 1 && connections(h, "bob") == 1
        });
    };
    harnesses_back(&h);
    let after_two = daemon_sockets(&h);
    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
    settled(&h, 3);
    harnesses_back(&h);
    assert_eq!(daemon_sockets(&h), after_two);

    // A plain stop empties the store (systemd closes them at once): the next start takes none.
    h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
    assert_eq!(h.show("hive-c0re.service", "NFileDescriptorStore"), "0");
    h.run_ok(&["systemctl", "start", "hive-c0re.service"]);
    assert_eq!(
        daemon_log(&h)
            .matches("took 2 container connections")
            .count(),
        3
    );
}

/// A harness that is really missing when the daemon starts (stopped while the daemon was
/// away) shows no sign of life on its socket: the startup adoption checks it over the
/// container's bus and re-creates it, without restarting the agent.
#[test]
fn a_harness_missing_at_the_daemons_start_is_re_created() {
    let h = hive();
    h.create("alice", STAND_IN);
    let container = h.invocation("alice");
    h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
    h.run_ok(&["systemctl", "-M", "h-alice", "stop", "hive-harness.service"]);
    assert_ne!(harness_show_or_empty(&h, "alice", "SubState"), "running");
    h.run_ok(&["systemctl", "start", "hive-c0re.service"]);
    wait_harness_running(&h, "alice");
    h.wait_for("the harness connected", Duration::from_secs(15), || {
        connections(&h, "alice") == 1
    });
    assert_eq!(
        h.invocation("alice"),
        container,
        "the agent was not restarted"
    );
    assert!(
        daemon_log(&h).contains("agent alice: harness re-created in its restarted container"),
        "{}",
        daemon_log(&h)
    );
}

/// Attack: the agent stops its harness and connects to its socket itself (here a second
/// hive-harness in a unit of its own), so the restarted daemon sees a sign of life. That
/// only defers the harness check until every agent is adopted; the check then finds the
/// harness unit gone and re-creates it.
#[test]
fn a_faked_sign_of_life_does_not_keep_the_harness_away() {
    let h = hive();
    h.create("alice", STAND_IN);
    let container = h.invocation("alice");
    h.run_ok(&["systemctl", "-M", "h-alice", "stop", "hive-harness.service"]);
    h.run_ok(&[
        "systemd-run",
        "-M",
        "h-alice",
        "--unit",
        "not-the-harness",
        "--quiet",
        "/opt/hyperhive/bin/hive-harness",
        "--events",
        "/tmp/fake-events.sqlite",
        "--",
        "sleep",
        "infinity",
    ]);
    h.wait_for("the stand-in connected", Duration::from_secs(15), || {
        connections(&h, "alice") == 1
    });
    assert_ne!(harness_show_or_empty(&h, "alice", "SubState"), "running");

    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
    wait_harness_running(&h, "alice");
    assert_eq!(
        h.invocation("alice"),
        container,
        "the agent was not restarted"
    );
    let log = daemon_log(&h);
    assert!(
        log.contains("harness checks deferred by the startup adoption: 1 agents"),
        "the stand-in's sign of life was taken, and the check deferred: {log}"
    );
    assert!(
        log.contains("agent alice: harness re-created in its restarted container"),
        "the deferred check re-created the harness: {log}"
    );
}

#[test]
fn a_killed_harness_comes_back() {
    let h = hive();
    h.create("alice", STAND_IN);
    let pid = harness_show(&h, "alice", "MainPID");
    kill_harness(&h, "alice", "KILL");
    h.wait_for("the harness restarted", Duration::from_secs(30), || {
        harness_show(&h, "alice", "NRestarts") == "1"
            && harness_show(&h, "alice", "SubState") == "running"
    });
    assert_ne!(harness_show(&h, "alice", "MainPID"), pid);
    h.wait_for("connected again", Duration::from_secs(10), || {
        connections(&h, "alice") == 1
    });
}

#[test]
fn a_hung_harness_is_killed_by_the_watchdog() {
    let h = hive();
    h.create("alice", STAND_IN);
    // Frozen, it stops pinging the watchdog.
    kill_harness(&h, "alice", "STOP");
    h.wait_for(
        "the watchdog killed and restarted the harness",
        Duration::from_secs(40),
        || {
            harness_show(&h, "alice", "NRestarts") == "1"
                && harness_show(&h, "alice", "SubState") == "running"
        },
    );
    let log = h.run_ok(&[
        "journalctl",
        "-M",
        "h-alice",
        "-u",
        "hive-harness.service",
        "-o",
        "cat",
    ]);
    assert!(log.to_lowercase().contains("watchdog"), "{log}");
    // ...and the daemon reported it as a harness crash with systemd's verdict.
    let crash = h.run_ok(&[
        "journalctl",
        "-o",
        "cat",
        "--output-fields=HIVE_RESULT",
        "HIVE_EVENT=harness_crash",
        "HIVE_AGENT=alice",
    ]);
    assert!(crash.contains("watchdog"), "{crash}");
}

#[test]
fn a_crashed_container_gets_a_new_harness() {
    let h = hive();
    h.create("alice", STAND_IN);
    let pid = h.unit_show("alice", "MainPID");
    h.run_ok(&["kill", "-9", &pid]);
    h.wait_for(
        "container restarted by systemd",
        Duration::from_secs(30),
        || {
            h.unit_show("alice", "NRestarts") == "1"
                && h.unit_show("alice", "SubState") == "running"
        },
    );
    // The daemon saw the restart's JobRemoved and re-created the harness.
    wait_harness_running(&h, "alice");
    h.wait_for("connected again", Duration::from_secs(10), || {
        connections(&h, "alice") == 1
    });
}

#[test]
fn the_harness_sees_only_its_own_agent() {
    let h = hive();
    h.create("alice", STAND_IN);
    h.create("bob", STAND_IN);
    h.run_ok(&[
        "sh",
        "-c",
        "echo secret > /var/lib/hyperhive/agents/bob/claude/token",
    ]);
    let inside = |cmd: &str| {
        let out = h.in_agent("alice", &["sh", "-c", cmd]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    // Its own door, and nothing else under /run/hyperhive.
    assert_eq!(inside("ls -A /run/hyperhive"), (true, "hive.sock".into()));
    // No host state: other agents' credentials and sockets are not there.
    assert_eq!(
        inside("test -e /var/lib/hyperhive && echo visible || echo absent"),
        (true, "absent".into())
    );
    assert_eq!(
        inside("grep -rl secret /root/.claude /state 2>/dev/null | wc -l"),
        (true, "0".into())
    );
    // The system bus it can reach is its container's own (another bus id), without hive-c0re.
    let get_id =
        "busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId";
    let (ok, inner_id) = inside(get_id);
    assert!(ok);
    let host_id = h.run_ok(&["sh", "-c", get_id]);
    assert_ne!(
        inner_id, host_id,
        "the container must not be on the host's bus"
    );
    let (ok, names) = inside("busctl --system list --no-legend --no-pager");
    assert!(ok);
    assert!(!names.contains("org.hyperhive.Hive1"), "{names}");
    let (ok, _) = inside("busctl call org.hyperhive.Hive1 /org/hyperhive/hive1 org.hyperhive.Hive1.Manager ListAgents");
    assert!(!ok, "the host's API must be unreachable from inside");
}

fn exchange(stream: &mut UnixStream, line: &[u8]) -> String {
    stream.write_all(line).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer
}

#[test]
fn malformed_and_oversized_input_gets_an_error_and_hurts_no_one() {
    let h = hive();
    h.create("alice", STAND_IN);
    h.create("bob", STAND_IN);
    let daemon_pid = h.show("hive-c0re.service", "MainPID");
    let path = socket_path(&h, "alice");

    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(exchange(&mut s, b"{\"type\":\"ping\"}\n").contains("say hello first"));
    assert!(exchange(&mut s, b"garbage\n").contains("malformed"));
    assert!(exchange(&mut s, b"\xff\xfe\x00\n").contains("malformed"));
    let welcome = exchange(&mut s, b"{\"type\":\"hello\",\"version\":1}\n");
    assert!(
        welcome.contains("\"agent\":\"alice\""),
        "identity comes from the socket: {welcome}"
    );
    assert!(exchange(
        &mut s,
        b"{\"type\":\"hello\",\"version\":1,\"agent\":\"bob\"}\n"
    )
    .contains("malformed"));
    assert!(exchange(&mut s, b"{\"type\":\"ping\"}\n").contains("pong"));

    // Oversized: an error, then the connection is closed.
    let mut big = UnixStream::connect(&path).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The daemon closes before it has read all 200 KiB: the write may fail, and the
    // close (with our bytes unread) is a reset; the answer must still be there, alone.
    let _ = big.write_all(&vec![b'x'; 200 * 1024]);
    let mut answer = Vec::new();
    if let Err(e) = big.read_to_end(&mut answer) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    let answer = String::from_utf8(answer).unwrap();
    assert_eq!(answer.lines().count(), 1, "{answer}");
    assert!(answer.contains("longer than"), "{answer}");

    // A flood of garbage connections, one after the other: each is accepted and gets
    // exactly one error for its one line, then is closed when it closes its end.
    for i in 0..50 {
        let mut c = UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("garbage connection {i} not accepted: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"{{{{\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut replies = String::new();
        c.read_to_string(&mut replies).unwrap();
        let lines: Vec<&str> = replies.lines().collect();
        assert_eq!(lines.len(), 1, "garbage connection {i}: {replies:?}");
        assert!(
            lines[0].starts_with("{\"type\":\"error\"") && lines[0].contains("malformed"),
            "garbage connection {i}: {replies:?}"
        );
    }

    assert_eq!(
        h.show("hive-c0re.service", "MainPID"),
        daemon_pid,
        "the daemon did not crash"
    );
    let mut bob = UnixStream::connect(socket_path(&h, "bob")).unwrap();
    bob.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(
        exchange(&mut bob, b"{\"type\":\"hello\",\"version\":1}\n").contains("\"agent\":\"bob\"")
    );
    assert_eq!(harness_show(&h, "bob", "SubState"), "running");
    assert_eq!(harness_show(&h, "alice", "SubState"), "running");
}
