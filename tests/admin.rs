//! What an admin meets in the first hour: STATUS= that counts approvals as they change,
//! `hivectl list` that shows every agent to a non-root user, and errors that say what to do.
//! Oracle: systemctl show, the spec files, exit codes.

mod common;

use std::time::Duration;

use common::*;

fn as_nobody(h: &TestHost, args: &[&str]) -> std::process::Output {
    let mut argv = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        HIVECTL,
    ];
    argv.extend_from_slice(args);
    h.run(&argv)
}

fn daemon_status(h: &TestHost) -> String {
    h.show("hive-c0re.service", "StatusText")
}

/// Asks for an approval from inside the agent, as its command would; returns its id.
fn request(h: &TestHost, agent: &str, dir: &str) -> String {
    let payload = format!(r#"{{"path": ["{dir}"]}}"#);
    let out = h.in_agent(
        agent,
        &[
            "/opt/hyperhive/bin/hive-harness",
            "request-approval",
            "spec_change",
            &payload,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn status_counts_approvals_as_they_are_asked_for_and_decided() {
    let h = hive();
    h.create("alice", &[]);
    h.wait_for("STATUS= shows the agent", Duration::from_secs(20), || {
        daemon_status(&h).starts_with("1 agents running")
    });
    let ids: Vec<String> = (1..=3)
        .map(|i| request(&h, "alice", &format!("/opt/p{i}/bin")))
        .collect();
    // No unit changed since: only the approvals did.
    h.wait_for("STATUS= counts 3 pending", Duration::from_secs(20), || {
        daemon_status(&h).ends_with("3 approvals pending")
    });
    h.hivectl_ok(&["deny", &ids[0]]);
    h.wait_for("STATUS= counts 2 pending", Duration::from_secs(20), || {
        daemon_status(&h).ends_with("2 approvals pending")
    });
}

#[test]
fn list_as_a_user_shows_a_stopped_agent_whose_spec_it_cannot_read() {
    let h = hive();
    h.create("alice", &[]);
    h.create("bob", &[]);
    h.hivectl_ok(&["stop", "bob"]);
    // The spec is there, but not readable for this user (the agent's dir is 0700).
    let out = as_nobody(&h, &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"], "{v}");
    let bob = &v[1];
    assert_eq!(bob["active_state"], "inactive", "{bob}");

    // Without the daemon to ask, the user is told what may be missing and why.
    h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
    let out = as_nobody(&h, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("hivectl: note: cannot read the specs under /var/lib/hyperhive/agents")
            && err.contains("stopped agents may be missing")
            && err.contains("run as root"),
        "{err}"
    );
    // As root, nothing to note.
    let out = h.hivectl(&["list"]);
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
}
