//! Agents never depend on the daemon being up: a hive-c0re that is stopped for 30 s, or
//! crash-looping until systemd gives up on it (start-limit-hit), leaves every agent's
//! harness in the same invocation and the agent's command with the same PID. The oracle is
//! the container's own systemd (systemctl -M), the harness's event log in /state, and the
//! PID the agent's command wrote.

use std::time::{Duration, Instant};

use crate::common::*;

/// A stand-in for claude that records its PID (in the container's PID namespace) and
/// keeps running, as an AI turn would.
const STAND_IN: &[&str] = &[
    "--harness",
    "sh",
    "-c",
    "echo $$ > /state/pid; exec sleep infinity",
];

const AGENTS: [&str; 2] = ["alice", "bob"];

/// What must survive the outage, per agent.
#[derive(Debug, PartialEq, Eq)]
struct Work {
    container_invocation: String,
    harness_invocation: String,
    harness_pid: String,
    harness_restarts: String,
    command_pid: String,
}

fn work(h: &TestHost, agent: &str) -> Work {
    h.wait_for(
        &format!("{agent}'s command wrote its PID"),
        Duration::from_secs(20),
        || !state_file(h, agent, "pid").is_empty(),
    );
    let w = Work {
        container_invocation: h.invocation(agent),
        harness_invocation: harness_show_or_empty(h, agent, "InvocationID"),
        harness_pid: harness_show_or_empty(h, agent, "MainPID"),
        harness_restarts: harness_show_or_empty(h, agent, "NRestarts"),
        command_pid: state_file(h, agent, "pid"),
    };
    assert!(!w.harness_invocation.is_empty(), "{agent}: {w:?}");
    w
}

/// The agent's command is still that very process: alive in the container, under the
/// harness's unit.
fn assert_command_alive(h: &TestHost, agent: &str, pid: &str) {
    let out = h.in_agent(agent, &["cat", &format!("/proc/{pid}/cgroup")]);
    let cgroup = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && cgroup.contains("hive-harness.service"),
        "{agent}'s command (PID {pid}) is gone or moved: {cgroup} {}",
        stderr(&out)
    );
}

/// The kinds in the agent's event log, oldest first.
fn event_kinds(h: &TestHost, agent: &str) -> Vec<String> {
    h.run_ok(&[
        "sqlite3",
        &format!("/var/lib/hyperhive/agents/{agent}/state/hyperhive-events.sqlite"),
        "SELECT kind FROM events ORDER BY id",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

fn setup() -> (TestHost, Vec<Work>) {
    let h = hive();
    for a in AGENTS {
        h.create(a, STAND_IN);
    }
    let before = AGENTS.iter().map(|a| work(&h, a)).collect();
    (h, before)
}

/// After the daemon is back: each harness reconnected by itself (one connection on its
/// socket, STATUS= says connected, `reconnected` in its log) and nothing was restarted.
fn assert_survived(h: &TestHost, before: &[Work]) {
    h.wait_active("alice");
    for (a, b) in AGENTS.iter().zip(before) {
        h.wait_for(
            &format!("{a}'s harness reconnected"),
            Duration::from_secs(30),
            || {
                connections(h, a) == 1
                    && harness_show_or_empty(h, a, "StatusText")
                        .starts_with("connected to hive-c0re")
            },
        );
        let after = work(h, a);
        assert_eq!(&after, b, "{a}: the outage restarted something");
        assert_eq!(after.harness_restarts, "0", "{a}");
        assert_command_alive(h, a, &after.command_pid);
        let kinds = event_kinds(h, a);
        let down = kinds.iter().rposition(|k| k == "disconnected");
        let up = kinds.iter().rposition(|k| k == "reconnected");
        assert!(
            matches!((down, up), (Some(d), Some(u)) if d < u),
            "{a}: event log {kinds:?}"
        );
    }
}

/// While the daemon is away, each harness says so in STATUS=, and is still the same.
fn assert_says_unreachable(h: &TestHost, before: &[Work]) {
    for (a, b) in AGENTS.iter().zip(before) {
        h.wait_for(
            &format!("{a}'s STATUS= reports the outage"),
            Duration::from_secs(20),
            || harness_show_or_empty(h, a, "StatusText").contains("hive-c0re unreachable"),
        );
        assert_eq!(
            harness_show_or_empty(h, a, "InvocationID"),
            b.harness_invocation
        );
    }
}

#[test]
fn a_30s_daemon_stop_leaves_every_harness_and_command_running() {
    let (h, before) = setup();
    let stopped = Instant::now();
    h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
    assert_says_unreachable(&h, &before);
    let status = harness_show_or_empty(&h, "alice", "StatusText");
    assert!(status.contains("command keeps running"), "{status}");

    // An approval asked for meanwhile is refused clearly, not lost in silence.
    let out = h.in_agent(
        "alice",
        &[
            "/opt/hyperhive/bin/hive-harness",
            "request-approval",
            "spec_change",
            r#"{"path": ["/opt/x/bin"]}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("hive-c0re is not reachable") && err.contains("not requested"),
        "{err}"
    );

    // Three watchdog periods (WatchdogSec=10s) and then some.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed()));
    for (a, b) in AGENTS.iter().zip(&before) {
        assert_eq!(
            harness_show_or_empty(&h, a, "InvocationID"),
            b.harness_invocation
        );
        assert_eq!(harness_show_or_empty(&h, a, "NRestarts"), "0", "{a}");
    }
    println!("figures: outage {:?}", stopped.elapsed());
    h.run_ok(&["systemctl", "start", "hive-c0re.service"]);
    assert_survived(&h, &before);
}

#[test]
fn a_daemon_crash_looping_past_its_start_limit_leaves_agents_running() {
    let (h, before) = setup();
    let started = Instant::now();
    // The daemon's ExecStart fails from now on: systemd restarts it every RestartSec until
    // its start limit (5 in 10 s) is hit.
    h.run_ok(&["mkdir", "-p", "/run/systemd/system/hive-c0re.service.d"]);
    h.run_ok(&[
        "sh",
        "-c",
        "printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' \
         > /run/systemd/system/hive-c0re.service.d/crash-loop.conf",
    ]);
    h.run_ok(&["systemctl", "daemon-reload"]);
    let _ = h.run(&["systemctl", "restart", "hive-c0re.service"]);
    // systemd 252 leaves Result=exit-code when an automatic restart hits the limit (newer
    // ones say start-limit-hit); its own journal line says it gave up either way.
    h.wait_for(
        "systemd gave up on hive-c0re (start limit hit)",
        Duration::from_secs(60),
        || {
            h.show("hive-c0re.service", "ActiveState") == "failed"
                && (h.show("hive-c0re.service", "Result") == "start-limit-hit"
                    || h.run_ok(&["journalctl", "-u", "hive-c0re.service", "-o", "cat"])
                        .contains("Start request repeated too quickly"))
        },
    );
    assert_says_unreachable(&h, &before);
    // Longer than a watchdog period past the last time the daemon answered.
    std::thread::sleep(Duration::from_secs(25).saturating_sub(started.elapsed()));
    for (a, b) in AGENTS.iter().zip(&before) {
        assert_eq!(
            harness_show_or_empty(&h, a, "InvocationID"),
            b.harness_invocation
        );
    }
    println!(
        "figures: crash loop, daemon restarts {}, outage {:?}",
        h.show("hive-c0re.service", "NRestarts"),
        started.elapsed()
    );

    h.run_ok(&[
        "rm",
        "/run/systemd/system/hive-c0re.service.d/crash-loop.conf",
    ]);
    h.run_ok(&["systemctl", "daemon-reload"]);
    h.run_ok(&["systemctl", "reset-failed", "hive-c0re.service"]);
    h.run_ok(&["systemctl", "start", "hive-c0re.service"]);
    assert_survived(&h, &before);
}

/// The harness's own journal lines that tell a cut.
fn harness_cut_lines(h: &TestHost, agent: &str) -> Vec<String> {
    h.run_ok(&[
        "journalctl",
        "-M",
        &format!("h-{agent}"),
        "-u",
        "hive-harness.service",
        "--no-pager",
        "-o",
        "cat",
    ])
    .lines()
    .filter(|l| l.contains("unreachable") || l.contains("reconnected"))
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_daemon_restart_is_quiet_in_the_containers_and_recorded_in_the_event_log() {
    let (h, before) = setup();
    for _ in 0..2 {
        let told_before: Vec<usize> = AGENTS
            .iter()
            .map(|a| harness_cut_lines(&h, a).len())
            .collect();
        let restarted = h.run_ok(&["date", "+%s%6N"]).parse::<i64>().unwrap();
        h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
        assert_survived(&h, &before);
        for (a, told_before) in AGENTS.iter().zip(told_before) {
            // Both records, the cut at its own time: after the restart was asked for, and
            // before the harness was back.
            let rows = h.run_ok(&[
                "sqlite3",
                &format!("/var/lib/hyperhive/agents/{a}/state/hyperhive-events.sqlite"),
                "SELECT kind, at_usec FROM events WHERE kind IN ('disconnected', 'reconnected') \
                 ORDER BY id DESC LIMIT 2",
            ]);
            let rows: Vec<(&str, i64)> = rows
                .lines()
                .rev()
                .map(|l| {
                    let (k, at) = l.split_once('|').unwrap();
                    (k, at.parse().unwrap())
                })
                .collect();
            let [("disconnected", down), ("reconnected", up)] = rows.as_slice() else {
                panic!("{a}: {rows:?}");
            };
            assert!(
                *down >= restarted && down <= up,
                "{a}: {rows:?}, restart at {restarted}"
            );
            // A cut within the quiet second (a restart, unless the machine is very busy)
            // wrote nothing to the container's journal (nor STATUS=) while the old daemon
            // exited and the new one started. A longer one is told once an attempt fails
            // after that second: then both its lines are there.
            let told = harness_cut_lines(&h, a).len() - told_before;
            let ms = (up - down) / 1000;
            if ms < 1000 {
                assert_eq!(told, 0, "{a}: a {ms} ms cut was told");
            } else {
                assert!(told == 0 || told == 2, "{a}: a {ms} ms cut, {told} lines");
            }
        }
    }
}

#[test]
fn a_command_ending_while_the_daemon_is_away_names_the_undelivered_event() {
    let h = hive();
    h.create(
        "carol",
        &[
            "--harness",
            "sh",
            "-c",
            "echo $$ > /state/pid; while [ ! -e /state/finish ]; do sleep 0.2; done; exit 3",
        ],
    );
    work(&h, "carol");
    h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
    h.wait_for(
        "carol's STATUS= reports the outage",
        Duration::from_secs(20),
        || harness_show_or_empty(&h, "carol", "StatusText").contains("hive-c0re unreachable"),
    );
    h.run_ok(&["touch", "/var/lib/hyperhive/agents/carol/state/finish"]);
    h.wait_for(
        "carol's harness ended with its command",
        Duration::from_secs(30),
        || {
            event_kinds(&h, "carol")
                .iter()
                .any(|k| k == "events_undelivered")
        },
    );
    let data = h.run_ok(&[
        "sqlite3",
        "/var/lib/hyperhive/agents/carol/state/hyperhive-events.sqlite",
        "SELECT data FROM events WHERE kind = 'events_undelivered'",
    ]);
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["events"][0]["name"], "command_exited", "{v}");
    assert_eq!(v["events"][0]["data"]["code"], 3, "{v}");
    // ...and the journal says so too, under the agent's name.
    h.wait_for(
        "the harness's warning in the journal",
        Duration::from_secs(10),
        || {
            let log = h.run_ok(&[
                "journalctl",
                "-M",
                "h-carol",
                "-u",
                "hive-harness.service",
                "-o",
                "cat",
            ]);
            log.contains("events not delivered (command_exited)")
        },
    );
}
