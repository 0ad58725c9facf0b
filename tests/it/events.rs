//! Events in journald and crashes seen from systemd's own signals, on a real systemd:
//! the oracle is `journalctl -o json` and `systemctl show` inside the test host.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const CATALOG: &str = include_str!("../../units/catalog/hyperhive.catalog");

/// The catalog entry whose Subject says what `event` means: the test reads the catalog an
/// admin reads, rather than trusting the code's own table.
fn catalog_id(event: &str) -> String {
    let ids: Vec<&str> = CATALOG
        .lines()
        .filter_map(|l| l.strip_prefix("-- "))
        .collect();
    ids.iter()
        .find(|id| {
            let at = CATALOG.find(&format!("-- {id}")).unwrap();
            let subject = CATALOG[at..].lines().nth(1).unwrap_or("");
            match event {
                "agent_created" => subject.ends_with("created"),
                "agent_destroyed" => subject.ends_with("destroyed"),
                "container_crash" => subject.ends_with("container crashed"),
                _ => false,
            }
        })
        .unwrap()
        .to_string()
}

#[test]
fn lifecycle_events_carry_the_documented_fields_and_ids() {
    let h = hive();
    h.create("alice", &[]);
    h.hivectl_ok(&["stop", "alice"]);
    h.hivectl_ok(&["start", "alice"]);
    h.hivectl_ok(&["rebuild", "alice"]);
    h.hivectl_ok(&["destroy", "alice"]);
    let events = entries(&h, &["SYSLOG_IDENTIFIER=hive-c0re", "HIVE_AGENT=alice"]);
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["HIVE_EVENT"].as_str())
        .filter(|n| *n != "agent_event")
        .collect();
    assert_eq!(
        names,
        vec![
            "agent_created",
            "agent_stopped",
            "agent_started",
            "rebuild_started",
            "rebuild_finished",
            "agent_destroyed"
        ]
    );
    for e in &events {
        let id = e["MESSAGE_ID"].as_str().unwrap();
        assert!(
            CATALOG.contains(&format!("-- {id}")),
            "MESSAGE_ID {id} is in the catalog"
        );
        if e["HIVE_EVENT"] != "agent_event" {
            assert_eq!(e["HIVE_UNIT"], "hive-agent-alice.service", "{e}");
        }
    }
    let created = events
        .iter()
        .find(|e| e["HIVE_EVENT"] == "agent_created")
        .unwrap();
    assert_eq!(created["MESSAGE_ID"], catalog_id("agent_created").as_str());
    // The same entries through the contract's own matches.
    assert_eq!(
        entries(&h, &["HIVE_AGENT=alice", "HIVE_EVENT=agent_destroyed"]).len(),
        1
    );
}

/// systemd's own journal entry (PID 1's) that `invocation` of `unit`'s main process
/// exited: EXIT_CODE, EXIT_STATUS, INVOCATION_ID. `machine` reads a container's journal.
fn main_process_exited(h: &TestHost, machine: Option<&str>, unit: &str, invocation: &str) -> Value {
    let mut found = None;
    h.wait_for(
        &format!("systemd's entry for {unit}'s exit"),
        Duration::from_secs(30),
        || {
            let mut argv = vec!["journalctl", "-o", "json", "--no-pager"];
            if let Some(m) = machine {
                argv.extend_from_slice(&["-M", m]);
            }
            let unit_match = format!("UNIT={unit}");
            let invocation_match = format!("INVOCATION_ID={invocation}");
            argv.extend_from_slice(&["_PID=1", &unit_match, &invocation_match]);
            found = h
                .run_ok(&argv)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|e| e.get("EXIT_CODE").is_some());
            found.is_some()
        },
    );
    found.unwrap()
}

/// The crash entry says what systemd says about the invocation that crashed.
fn same_facts(crash: &Value, invocation: &str, systemd: &Value) {
    assert_eq!(crash["HIVE_INVOCATION_ID"], invocation, "{crash}");
    assert_eq!(
        crash["HIVE_EXEC_MAIN_CODE"], systemd["EXIT_CODE"],
        "{systemd}"
    );
    assert_eq!(
        crash["HIVE_EXEC_MAIN_STATUS"], systemd["EXIT_STATUS"],
        "{systemd}"
    );
}

#[test]
fn kill_9_of_the_container_is_a_container_crash_with_systemds_facts() {
    let h = hive();
    h.create("alice", &[]);
    let pid = h.unit_show("alice", "MainPID");
    let invocation = h.invocation("alice");
    let restarts = h.unit_show("alice", "NRestarts");
    h.run_ok(&["kill", "-9", &pid]);
    let e = wait_entry(
        &h,
        "container_crash in journald",
        &["HIVE_EVENT=container_crash", "HIVE_AGENT=alice"],
    );
    let systemd = main_process_exited(&h, None, "hive-agent-alice.service", &invocation);
    same_facts(&e, &invocation, &systemd);
    assert_eq!(systemd["EXIT_CODE"], "killed");
    assert_eq!(systemd["EXIT_STATUS"], "9");
    assert_eq!(e["HIVE_RESULT"], "signal");
    assert_eq!(e["HIVE_N_RESTARTS"], restarts.as_str());
    assert_eq!(e["HIVE_UNIT"], "hive-agent-alice.service");
    assert_eq!(e["MESSAGE_ID"], catalog_id("container_crash").as_str());
    assert_eq!(e["PRIORITY"], "4");
    // Exactly one event for one crash, although systemd signals several changes.
    h.wait_active("alice");
    assert_ne!(h.invocation("alice"), invocation, "systemd restarted it");
    assert_eq!(
        entries(&h, &["HIVE_EVENT=container_crash", "HIVE_AGENT=alice"]).len(),
        1
    );
}

#[test]
fn a_harness_crash_is_seen_inside_the_container() {
    let h = hive();
    h.create("alice", &["--harness", "sleep", "infinity"]);
    let invocation = harness_invocation(&h, "alice");
    kill_harness(&h, "alice", "KILL");
    let e = wait_entry(
        &h,
        "harness_crash in journald",
        &["HIVE_EVENT=harness_crash", "HIVE_AGENT=alice"],
    );
    let systemd = main_process_exited(&h, Some("h-alice"), "hive-harness.service", &invocation);
    same_facts(&e, &invocation, &systemd);
    assert_eq!(systemd["EXIT_STATUS"], "9");
    assert_eq!(e["HIVE_RESULT"], "signal");
    assert_eq!(e["HIVE_UNIT"], "hive-harness.service");
}

#[test]
fn a_crash_loop_that_hits_the_start_limit_is_its_own_event() {
    let h = hive();
    h.run_ok(&["mkdir", "-p", "/srv/vanishing"]);
    h.create("alice", &["--bind", "/srv/vanishing:/data"]);
    // Every restart now fails at once (bind source gone), until the start limit.
    h.run_ok(&["rmdir", "/srv/vanishing"]);
    let pid = h.unit_show("alice", "MainPID");
    h.run_ok(&["kill", "-9", &pid]);
    let e = wait_entry(
        &h,
        "crash_loop in journald",
        &["HIVE_EVENT=crash_loop", "HIVE_AGENT=alice"],
    );
    assert_eq!(e["PRIORITY"], "3");
    assert_eq!(
        e["HIVE_N_RESTARTS"], "5",
        "systemd's default start limit: {e}"
    );
    assert_eq!(h.unit_show("alice", "ActiveState"), "failed");
    // systemd keeps the last invocation's facts on a failed unit: they are the event's.
    assert_eq!(e["HIVE_INVOCATION_ID"], h.invocation("alice").as_str());
    assert_eq!(e["HIVE_RESULT"], h.unit_show("alice", "Result").as_str());
    assert_eq!(
        e["HIVE_N_RESTARTS"],
        h.unit_show("alice", "NRestarts").as_str()
    );
    assert_eq!(
        e["HIVE_EXEC_MAIN_STATUS"],
        h.unit_show("alice", "ExecMainStatus").as_str()
    );
    // ExecMainCode is the CLD_* number: 1 exited, 2 killed, 3 dumped.
    let code = match h.unit_show("alice", "ExecMainCode").as_str() {
        "1" => "exited",
        "2" => "killed",
        "3" => "dumped",
        _ => "-",
    };
    assert_eq!(e["HIVE_EXEC_MAIN_CODE"], code);
    let st = h.hivectl_ok(&["status", "alice"]);
    assert!(st.contains("failed") && st.contains("Restarts: 5"), "{st}");
    assert!(
        st.contains("start limit"),
        "status shows the recent journal: {st}"
    );
}

#[test]
fn journalctl_x_explains_events_from_the_catalog() {
    let h = hive();
    // Install the catalog as packaging does, then compile it.
    h.run_ok(&[
        "mkdir",
        "-p",
        "/run/cat/usr/lib/systemd/catalog",
        "/var/lib/systemd/catalog",
    ]);
    let inside = format!(
        "/proc/{}/root/run/cat/usr/lib/systemd/catalog/hyperhive.catalog",
        h.leader()
    );
    std::fs::write(&inside, CATALOG).unwrap();
    h.run_ok(&["journalctl", "--root=/run/cat", "--update-catalog"]);
    h.run_ok(&[
        "cp",
        "/run/cat/var/lib/systemd/catalog/database",
        "/var/lib/systemd/catalog/database",
    ]);
    h.create("alice", &[]);
    let out = h.run_ok(&["journalctl", "-x", "--no-pager", "HIVE_EVENT=agent_created"]);
    assert!(
        out.contains("Subject: hyperhive agent alice created"),
        "{out}"
    );
    assert!(out.contains("hivectl status alice"), "{out}");
}

#[test]
fn status_text_counts_agents_and_hivectl_logs_tells_the_whole_story() {
    let h = hive();
    h.create(
        "alice",
        &[
            "--harness",
            "sh",
            "-c",
            "echo hello from inside alice; exec sleep infinity",
        ],
    );
    h.create("bob", &[]);
    h.wait_for(
        "StatusText counts two agents",
        Duration::from_secs(10),
        || {
            h.show("hive-c0re.service", "StatusText")
                .starts_with("2 agents running, 0 failed")
        },
    );
    let logs = h.hivectl_ok(&["logs", "alice", "--no-pager", "-o", "cat"]);
    assert!(
        logs.contains("agent alice: created hive-agent-alice.service"),
        "daemon event: {logs}"
    );
    assert!(
        logs.contains("hello from inside alice"),
        "the agent's own output: {logs}"
    );
    assert!(!logs.contains("bob"), "only alice's story: {logs}");
    let json: Value = serde_json::from_str(&h.hivectl_ok(&["status", "alice", "--json"])).unwrap();
    assert_eq!(json["harness"]["active_state"], "active");
    assert!(json["recent_log"].as_array().is_some_and(|l| !l.is_empty()));
}

#[test]
fn a_daemon_that_stops_answering_is_restarted_by_its_watchdog() {
    let h = hive();
    h.create("alice", &[]);
    let agent = h.invocation("alice");
    let pid = h.show("hive-c0re.service", "MainPID");
    h.run_ok(&["kill", "-STOP", &pid]);
    h.wait_for(
        "hive-c0re restarted after its watchdog fired",
        Duration::from_secs(40),
        || {
            h.show("hive-c0re.service", "NRestarts") == "1"
                && h.show("hive-c0re.service", "ActiveState") == "active"
        },
    );
    assert_ne!(h.show("hive-c0re.service", "MainPID"), pid);
    let log = daemon_log(&h);
    assert!(log.to_lowercase().contains("watchdog"), "{log}");
    assert_eq!(h.invocation("alice"), agent, "the agent kept running");
}

/// The bus stalled while the daemon's process runs: the test host's dbus-daemon is frozen
/// (SIGSTOP), so systemd cannot answer the daemon's ping, while hive-c0re itself keeps
/// working (it answers on alice's socket, which needs no bus). systemd is still reached
/// through its private socket and sd_notify, so what restarts the daemon is its watchdog,
/// left unfed because the ping went unanswered.
#[test]
fn a_daemon_whose_bus_stalls_while_it_runs_is_restarted_by_its_watchdog() {
    let h = hive();
    h.create("alice", &[]);
    let agent = h.invocation("alice");
    let pid = h.show("hive-c0re.service", "MainPID");
    let daemon = h.show("hive-c0re.service", "InvocationID");
    let bus = h.show("dbus.service", "MainPID");
    let alice = socket_path(&h, "alice");
    h.run_ok(&["kill", "-STOP", &bus]);
    let frozen = std::time::Instant::now();
    // Resume the bus whatever happens below, or the test host cannot be used again.
    struct Thaw<'a>(&'a TestHost, String);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            self.0.run(&["kill", "-CONT", &self.1]);
        }
    }
    let thaw = Thaw(&h, bus.clone());

    // The process runs and serves its agent socket meanwhile.
    let mut s = std::os::unix::net::UnixStream::connect(&alice).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    use std::io::{BufRead, Write};
    s.write_all(b"{\"type\":\"hello\",\"version\":1}\n{\"type\":\"ping\"}\n")
        .unwrap();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("welcome"), "{line}");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(
        line.contains("pong"),
        "the daemon runs while its bus is stalled: {line}"
    );
    assert_eq!(h.show("hive-c0re.service", "MainPID"), pid);

    let timeout = wait_entry(
        &h,
        "systemd's watchdog timeout for hive-c0re",
        &[
            "_PID=1",
            "UNIT=hive-c0re.service",
            &format!("INVOCATION_ID={daemon}"),
            // "Failed with result 'watchdog'."
            "UNIT_RESULT=watchdog",
        ],
    );
    eprintln!(
        "figures: watchdog fired {:?} after the bus froze (WatchdogSec=10s): {}",
        frozen.elapsed(),
        timeout["MESSAGE"]
    );
    let said = entries(
        &h,
        &[
            &format!("_SYSTEMD_INVOCATION_ID={daemon}"),
            "SYSLOG_IDENTIFIER=hive-c0re",
        ],
    )
    .iter()
    .filter(|e| {
        e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.starts_with("watchdog: systemd did not answer a ping"))
    })
    .count();
    assert!(
        said >= 1,
        "the daemon withheld WATCHDOG=1 because the ping went unanswered"
    );
    drop(thaw);
    h.wait_for(
        "hive-c0re restarted once the bus is back",
        Duration::from_secs(30),
        || {
            h.show("hive-c0re.service", "NRestarts") == "1"
                && h.show("hive-c0re.service", "ActiveState") == "active"
        },
    );
    assert_ne!(h.show("hive-c0re.service", "MainPID"), pid);
    assert_eq!(h.invocation("alice"), agent, "the agent kept running");
}

#[test]
fn a_harness_crash_after_a_daemon_restart_is_still_seen() {
    let h = hive();
    h.create("alice", &["--harness", "sleep", "infinity"]);
    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
    // The restarted daemon re-establishes its watch on each container's harness; it says
    // so once its match rule is in place.
    let daemon = h.show("hive-c0re.service", "InvocationID");
    wait_entry(
        &h,
        "the restarted daemon watching alice's harness",
        &[
            &format!("_SYSTEMD_INVOCATION_ID={daemon}"),
            "MESSAGE=agent alice: watching hive-harness.service for crashes",
        ],
    );
    kill_harness(&h, "alice", "KILL");
    let e = wait_entry(
        &h,
        "harness_crash after a daemon restart",
        &["HIVE_EVENT=harness_crash", "HIVE_AGENT=alice"],
    );
    assert_eq!(e["HIVE_RESULT"], "signal");
}
