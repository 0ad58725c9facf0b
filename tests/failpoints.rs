//! kill -9 of the daemon at each step of create, rebuild, destroy and approve (the
//! HYPERHIVE_FAILPOINT test hook), on a real systemd: afterwards there is one unit set per
//! agent, no orphan socket, no lost or doubled approval, and the interrupted operation is
//! either done or cleanly not done, and can be retried.

mod common;

use std::time::Duration;

use common::*;

/// Arms `step` and restarts the daemon with it (a runtime drop-in, gone on reboot).
fn arm(h: &TestHost, step: &str) {
    h.run_ok(&[
        "sh",
        "-c",
        &format!(
            "mkdir -p /run/systemd/system/hive-c0re.service.d && \
             printf '[Service]\\nEnvironment=HYPERHIVE_FAILPOINT={step}\\n' > /run/systemd/system/hive-c0re.service.d/failpoint.conf && \
             systemctl daemon-reload && systemctl restart hive-c0re.service"
        ),
    ]);
}

/// Runs a hivectl verb that the armed failpoint interrupts, then waits for systemd to
/// bring the killed daemon back.
fn interrupted(h: &TestHost, args: &[&str]) {
    let restarts: u32 = h.show("hive-c0re.service", "NRestarts").parse().unwrap();
    let out = h.hivectl(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "hivectl {args:?} should have been cut off"
    );
    // One line that says what happened and where to look, not the bus's raw NoReply.
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("hivectl: hive-c0re stopped before answering"),
        "{err}"
    );
    h.wait_for(
        "hive-c0re back after the failpoint",
        Duration::from_secs(30),
        || {
            h.show("hive-c0re.service", "NRestarts")
                .parse::<u32>()
                .unwrap()
                > restarts
                && h.show("hive-c0re.service", "ActiveState") == "active"
        },
    );
    let log = h.run_ok(&[
        "journalctl",
        "-u",
        "hive-c0re.service",
        "-o",
        "cat",
        "--no-pager",
    ]);
    assert!(
        log.contains("failpoint"),
        "the daemon died at the failpoint: {log}"
    );
}

/// One unit set: at most one container unit, at most one machine, at most one listener.
fn consistent(h: &TestHost, agent: &str) {
    assert!(h.agent_units().len() <= 1, "{:?}", h.agent_units());
    assert!(
        h.machines()
            .iter()
            .filter(|m| **m == format!("h-{agent}"))
            .count()
            <= 1
    );
    assert!(listeners(h, agent) <= 1);
}

fn running_with_harness(h: &TestHost, agent: &str) {
    h.wait_active(agent);
    h.wait_for("harness running", Duration::from_secs(30), || {
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
    });
    assert_eq!(h.agent_units(), vec![format!("hive-agent-{agent}.service")]);
    assert_eq!(listeners(h, agent), 1);
}

const CREATE: &[&str] = &["create", "alice", "--root", "/", "--volatile", "yes"];

#[test]
fn create_cut_after_saving_the_spec() {
    let h = hive();
    arm(&h, "create:spec-saved");
    interrupted(&h, CREATE);
    consistent(&h, "alice");
    // Done by the restarted daemon: the spec was saved, so its startup reconcile creates
    // the agent (once), and a create retried by the admin adopts it.
    h.run_ok(&["test", "-f", "/var/lib/hyperhive/agents/alice/spec.toml"]);
    running_with_harness(&h, "alice");
    assert!(h.hivectl_ok(CREATE).contains("adopted"));
    running_with_harness(&h, "alice");
}

#[test]
fn create_cut_after_the_container_is_up() {
    let h = hive();
    arm(&h, "create:container-up");
    interrupted(&h, CREATE);
    consistent(&h, "alice");
    // Done: the restarted daemon adopted the container and saw to its harness.
    running_with_harness(&h, "alice");
    assert!(h.hivectl_ok(CREATE).contains("adopted"));
    running_with_harness(&h, "alice");
}

#[test]
fn rebuild_cut_between_stop_and_start() {
    let h = hive();
    h.hivectl_ok(CREATE);
    arm(&h, "rebuild:container-stopped");
    interrupted(&h, &["rebuild", "alice"]);
    consistent(&h, "alice");
    h.hivectl_ok(&["rebuild", "alice"]);
    running_with_harness(&h, "alice");
}

#[test]
fn destroy_cut_after_the_spec_is_gone_leaves_no_orphan_socket() {
    let h = hive();
    h.hivectl_ok(CREATE);
    arm(&h, "destroy:spec-removed");
    interrupted(&h, &["destroy", "alice"]);
    consistent(&h, "alice");
    assert!(h.agent_units().is_empty());
    assert_eq!(
        h.run_ok(&["ls", "-A", "/run/hyperhive"]),
        "",
        "runtime dirs of a gone agent are removed"
    );
    assert_eq!(listeners(&h, "alice"), 0);
    let list: serde_json::Value = serde_json::from_str(&h.hivectl_ok(&["list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));
    h.run_ok(&["test", "-d", "/var/lib/hyperhive/agents/alice/state"]);
}

/// An agent that asks for /opt/approved/bin once, and the id of its request.
fn asked(h: &TestHost) -> String {
    let ask = r#"case ":$PATH:" in *:/opt/approved/bin:*) ;; *) hive-harness request-approval spec_change '{"path":["/opt/approved/bin"]}' > /state/requested ;; esac; exec sleep infinity"#;
    h.create("alice", &["--harness", "sh", "-c", ask]);
    let mut id = String::new();
    h.wait_for("the request", Duration::from_secs(15), || {
        id = h
            .run(&["cat", "/var/lib/hyperhive/agents/alice/state/requested"])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .trim()
            .to_owned();
        !id.is_empty()
    });
    id
}

fn resumed_and_applied(h: &TestHost, id: &str) {
    h.wait_for(
        "the approval applied after the restart",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
            v[0]["status"] == "applied"
        },
    );
    let all: serde_json::Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "no approval lost or doubled"
    );
    assert_eq!(all[0]["id"].to_string(), id);
    let spec = h.run_ok(&["cat", "/var/lib/hyperhive/agents/alice/spec.toml"]);
    let path_line = spec
        .lines()
        .find(|l| l.starts_with("path = "))
        .unwrap_or("");
    assert_eq!(
        path_line, r#"path = ["/opt/approved/bin"]"#,
        "applied once: {spec}"
    );
    running_with_harness(h, "alice");
    assert!(h
        .unit_show("alice", "Environment")
        .contains("/opt/approved/bin"));
}

#[test]
fn approve_cut_after_the_decision_is_resumed() {
    let h = hive();
    let id = asked(&h);
    arm(&h, "approve:decided");
    interrupted(&h, &["approve", &id]);
    consistent(&h, "alice");
    resumed_and_applied(&h, &id);
}

#[test]
fn approve_cut_after_the_spec_is_written_converges() {
    let h = hive();
    let id = asked(&h);
    arm(&h, "approve:spec-saved");
    interrupted(&h, &["approve", &id]);
    consistent(&h, "alice");
    resumed_and_applied(&h, &id);
}
