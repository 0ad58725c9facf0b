//! Published ports (issue 23): an agent on its private network serves a web UI on its own
//! loopback; the host reaches it on a unix socket in the agent's runtime dir, through
//! `hive-ports-<name>.service`, and the agent gets nothing of the host's network for it.
//! Judged by what curl on the host gets and by systemd's view.

use std::time::Duration;

use crate::common::*;

const SOCKET: &str = "/run/hyperhive/alice/port-8080.sock";

/// alice's own web server, on her loopback only.
const WEB: &str = "mkdir -p /state/www && echo hello-from-alice > /state/www/index.html \
                   && cd /state/www && exec python3 -m http.server 8080 --bind 127.0.0.1";

fn fetch(h: &TestHost) -> std::process::Output {
    h.run(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--unix-socket",
        SOCKET,
        "http://alice/index.html",
    ])
}

fn wait_served(h: &TestHost) {
    h.wait_for(
        "alice's page through her published port",
        Duration::from_secs(30),
        || String::from_utf8_lossy(&fetch(h).stdout).contains("hello-from-alice"),
    );
}

#[test]
fn a_published_port_brings_the_agents_web_ui_to_the_host_and_nothing_more() {
    let h = hive();
    h.create("alice", &["--port", "8080", "--harness", "sh", "-c", WEB]);
    assert_eq!(h.show("hive-ports-alice.service", "ActiveState"), "active");
    assert_eq!(h.show("hive-ports-alice.service", "Slice"), "hive.slice");
    wait_served(&h);
    let status = h.hivectl_ok(&["status", "alice"]);
    assert!(
        status.contains("     Ports: 8080 on /run/hyperhive/alice/port-8080.sock"),
        "{status}"
    );
    // Root's socket, in a directory the agent sees read-only.
    assert_eq!(
        h.run_ok(&["stat", "-c", "%F %a %U", SOCKET]),
        "socket 600 root"
    );

    // From inside, the agent can neither replace the socket nor add one.
    let out = h.in_agent(
        "alice",
        &["sh", "-c", "ln -sf /etc/shadow /run/hyperhive/port-8080.sock || rm -f /run/hyperhive/port-8080.sock"],
    );
    assert!(!out.status.success(), "the runtime dir is read-only inside");
    assert_eq!(h.run_ok(&["stat", "-c", "%F", SOCKET]), "socket");
    // Nor ask for a port of its own: publishing is an admin's choice.
    let out = h.in_agent(
        "alice",
        &[
            "/opt/hyperhive/bin/hive-harness",
            "request-approval",
            "spec_change",
            r#"{"ports": [22]}"#,
        ],
    );
    assert!(!out.status.success(), "an agent may not request ports");
    assert!(
        h.hivectl_ok(&["approvals", "--json"]).trim() == "[]",
        "nothing stored"
    );

    // A restarted container (a new network namespace) is reached without a new unit.
    let ports_unit = h.show("hive-ports-alice.service", "InvocationID");
    h.hivectl_ok(&["restart", "alice"]);
    h.wait_active("alice");
    wait_served(&h);
    assert_eq!(
        h.show("hive-ports-alice.service", "InvocationID"),
        ports_unit
    );

    // Stopped, she publishes nothing; destroyed, the unit is gone.
    h.hivectl_ok(&["stop", "alice"]);
    assert_ne!(h.show("hive-ports-alice.service", "ActiveState"), "active");
    assert!(!fetch(&h).status.success());
    h.hivectl_ok(&["start", "alice"]);
    wait_served(&h);
    h.hivectl_ok(&["destroy", "alice"]);
    assert_eq!(h.show("hive-ports-alice.service", "LoadState"), "not-found");

    // On the host's network there is nothing to publish: refused, nothing made.
    let out = h.hivectl(&[
        "create",
        "bob",
        "--root",
        "/",
        "--volatile",
        "yes",
        "--network",
        "host",
        "--port",
        "80",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("private network only"),
        "{}",
        stderr(&out)
    );
    assert!(h.agent_units().is_empty());
}

#[test]
fn a_port_nothing_listens_on_is_refused_at_once_and_a_silent_one_holds_nothing_up() {
    let h = hive();
    // 8080 published, nothing listening; 9090 listening but silent (accepts, never answers).
    let silent = "python3 -c 'import socket,time\ns=socket.socket();s.bind((\"127.0.0.1\",8080));s.listen(1)\nwhile True: time.sleep(60)' ";
    h.create(
        "alice",
        &[
            "--port",
            "8080",
            "--port",
            "9090",
            "--harness",
            "sh",
            "-c",
            silent,
        ],
    );
    h.wait_for("the ports unit", Duration::from_secs(20), || {
        h.show("hive-ports-alice.service", "ActiveState") == "active"
    });
    let t0 = std::time::Instant::now();
    let out = h.run(&[
        "curl",
        "-sS",
        "--max-time",
        "30",
        "--unix-socket",
        "/run/hyperhive/alice/port-9090.sock",
        "http://alice/",
    ]);
    assert!(!out.status.success(), "nothing listens on 9090 inside");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "refused at once, not hung: {:?}",
        t0.elapsed()
    );
    // A listener that accepts and never answers: the admin's client gives up, and the
    // forwarder carries on.
    let out = h.run(&[
        "curl",
        "-sS",
        "--max-time",
        "3",
        "--unix-socket",
        "/run/hyperhive/alice/port-8080.sock",
        "http://alice/",
    ]);
    assert!(!out.status.success());
    // The forwarder is still up for the next connection.
    assert_eq!(h.show("hive-ports-alice.service", "ActiveState"), "active");
    assert_eq!(h.show("hive-ports-alice.service", "NRestarts"), "0");
}
