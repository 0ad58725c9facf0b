//! kill -9 of the daemon at each step of create, rebuild, destroy and approve (the
//! HYPERHIVE_FAILPOINT test hook), on a real systemd: afterwards there is one unit set per
//! agent, no orphan socket, no lost or doubled approval, and the interrupted operation is
//! either done or cleanly not done, and can be retried.

use std::time::Duration;

use crate::common::*;

/// One case per step of `failpoint::STEPS`, in its order. Each is a `#[test]` below; a
/// step added to the daemon without a case here fails `every_failpoint_step_has_a_case`.
const CASES: &[(&str, fn())] = &[
    ("create:spec-saved", create_cut_after_saving_the_spec),
    ("create:container-up", create_cut_after_the_container_is_up),
    (
        "rebuild:container-stopped",
        rebuild_cut_between_stop_and_start,
    ),
    (
        "rebuild:container-up",
        rebuild_cut_after_the_new_container_is_up,
    ),
    (
        "destroy:stopped",
        destroy_cut_after_the_stop_is_not_done_and_retryable,
    ),
    (
        "destroy:spec-removed",
        destroy_cut_after_the_spec_is_gone_leaves_no_orphan_socket,
    ),
    ("approve:decided", approve_cut_after_the_decision_is_resumed),
    (
        "approve:spec-saved",
        approve_cut_after_the_spec_is_written_converges,
    ),
    (
        "approve:applied",
        approve_cut_after_applying_is_not_applied_twice,
    ),
];

#[test]
fn every_failpoint_step_has_a_case() {
    let cases: Vec<&str> = CASES.iter().map(|(step, _)| *step).collect();
    assert_eq!(
        cases,
        hyperhive::failpoint::STEPS.to_vec(),
        "each failpoint step needs exactly one case in tests/failpoints.rs"
    );
}

/// Arms `step` and restarts the daemon with it (a runtime drop-in, gone on reboot).
fn arm(h: &TestHost, step: &str) {
    assert!(
        hyperhive::failpoint::STEPS.contains(&step)
            || hyperhive::failpoint::ERROR_STEPS.contains(&step),
        "{step} is not a failpoint step"
    );
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

/// What the restarted daemon's startup reconcile did, from its `reconcile_finished` entry:
/// (created, rebuilt, kept, stopped, failed).
type Totals = (u32, u32, u32, u32, u32);

/// Runs a hivectl verb that the armed failpoint interrupts, waits for systemd to bring the
/// killed daemon back and for that daemon's startup reconcile to finish, and returns what
/// the reconcile did.
fn interrupted(h: &TestHost, args: &[&str]) -> Totals {
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
    assert_eq!(
        h.show("hive-c0re.service", "NRestarts")
            .parse::<u32>()
            .unwrap(),
        restarts + 1,
        "killed once, at the failpoint"
    );
    let log = daemon_log(h);
    assert!(
        log.contains("failpoint"),
        "the daemon died at the failpoint: {log}"
    );
    let invocation = h.show("hive-c0re.service", "InvocationID");
    let done = wait_entry(
        h,
        "the restarted daemon's startup reconcile",
        &[
            "HIVE_EVENT=reconcile_finished",
            "HIVE_TRIGGER=startup",
            &format!("_SYSTEMD_INVOCATION_ID={invocation}"),
        ],
    );
    let n = |f: &str| -> u32 { done[f].as_str().unwrap().parse().unwrap() };
    (
        n("HIVE_CREATED"),
        n("HIVE_REBUILT"),
        n("HIVE_KEPT"),
        n("HIVE_STOPPED"),
        n("HIVE_FAILED"),
    )
}

/// Never two of anything, while the restarted daemon may still be converging: at most
/// one container unit, one machine, one listener.
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

/// The exact end state of a running agent: one container unit active/running, one machine,
/// its harness running, one listener on its socket and one connection (the harness).
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
    h.wait_for("the harness connected", Duration::from_secs(30), || {
        connections(h, agent) == 1
    });
    assert_eq!(h.agent_units(), vec![format!("hive-agent-{agent}.service")]);
    assert_eq!(h.machines(), vec![format!("h-{agent}")]);
    assert_eq!(listeners(h, agent), 1);
    assert_eq!(connections(h, agent), 1);
}

/// Nothing of the agent is left but its state and credentials.
fn gone(h: &TestHost, agent: &str) {
    assert!(h.agent_units().is_empty(), "{:?}", h.agent_units());
    assert!(h.machines().is_empty(), "{:?}", h.machines());
    assert_eq!(
        h.run_ok(&["ls", "-A", "/run/hyperhive"]),
        "",
        "runtime dirs of a gone agent are removed"
    );
    assert_eq!(listeners(h, agent), 0);
    let list: serde_json::Value = serde_json::from_str(&h.hivectl_ok(&["list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));
    h.run_ok(&[
        "test",
        "!",
        "-e",
        &format!("/var/lib/hyperhive/agents/{agent}/spec.toml"),
    ]);
    h.run_ok(&[
        "test",
        "-d",
        &format!("/var/lib/hyperhive/agents/{agent}/state"),
    ]);
}

/// `HIVE_EVENT=event` entries of the agent in the journal.
fn events(h: &TestHost, agent: &str, event: &str) -> Vec<serde_json::Value> {
    entries(
        h,
        &[
            "SYSLOG_IDENTIFIER=hive-c0re",
            &format!("HIVE_EVENT={event}"),
            &format!("HIVE_AGENT={agent}"),
        ],
    )
}

const CREATE: &[&str] = &["create", "alice", "--root", "/", "--volatile", "yes"];

#[test]
fn create_cut_after_saving_the_spec() {
    let h = hive();
    arm(&h, "create:spec-saved");
    // Done by the restarted daemon: the spec was saved and no unit exists, so its startup
    // reconcile creates the agent (once), and a create retried by the admin adopts it.
    assert_eq!(interrupted(&h, CREATE), (1, 0, 0, 0, 0));
    consistent(&h, "alice");
    h.run_ok(&["test", "-f", "/var/lib/hyperhive/agents/alice/spec.toml"]);
    running_with_harness(&h, "alice");
    assert_eq!(events(&h, "alice", "agent_created").len(), 1);
    assert!(h.hivectl_ok(CREATE).contains("adopted"));
    running_with_harness(&h, "alice");
}

#[test]
fn create_cut_after_the_container_is_up() {
    let h = hive();
    arm(&h, "create:container-up");
    // Done: the restarted daemon kept and adopted the container and saw to its harness.
    assert_eq!(interrupted(&h, CREATE), (0, 0, 1, 0, 0));
    consistent(&h, "alice");
    running_with_harness(&h, "alice");
    assert_eq!(events(&h, "alice", "adopted").len(), 1);
    assert!(h.hivectl_ok(CREATE).contains("adopted"));
    running_with_harness(&h, "alice");
}

#[test]
fn rebuild_cut_between_stop_and_start() {
    let h = hive();
    h.hivectl_ok(CREATE);
    let before = h.invocation("alice");
    arm(&h, "rebuild:container-stopped");
    // Done by the restarted daemon: the spec wants the agent up and no unit runs, so its
    // startup reconcile creates it; a retried rebuild replaces it once more.
    assert_eq!(interrupted(&h, &["rebuild", "alice"]), (1, 0, 0, 0, 0));
    consistent(&h, "alice");
    running_with_harness(&h, "alice");
    let after = h.invocation("alice");
    assert_ne!(after, before);
    h.hivectl_ok(&["rebuild", "alice"]);
    running_with_harness(&h, "alice");
    assert_ne!(h.invocation("alice"), after);
}

#[test]
fn rebuild_cut_after_the_new_container_is_up() {
    let h = hive();
    h.hivectl_ok(CREATE);
    let before = h.invocation("alice");
    arm(&h, "rebuild:container-up");
    // Done: the new container is up as planned, so the restarted daemon keeps it (no
    // second restart) and adopts it; only the rebuild_finished entry is missing.
    assert_eq!(interrupted(&h, &["rebuild", "alice"]), (0, 0, 1, 0, 0));
    consistent(&h, "alice");
    running_with_harness(&h, "alice");
    let rebuilt = h.invocation("alice");
    assert_ne!(
        rebuilt, before,
        "the cut rebuild had replaced the container"
    );
    // Adopted by the daemon that came back (the armed one adopted the old container).
    let daemon = h.show("hive-c0re.service", "InvocationID");
    let adopted: Vec<_> = events(&h, "alice", "adopted")
        .into_iter()
        .filter(|e| e["_SYSTEMD_INVOCATION_ID"] == daemon.as_str())
        .collect();
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0]["HIVE_INVOCATION_ID"], rebuilt.as_str());
    assert_eq!(events(&h, "alice", "rebuild_started").len(), 1);
    assert_eq!(events(&h, "alice", "rebuild_finished").len(), 0);
    // Retryable.
    h.hivectl_ok(&["rebuild", "alice"]);
    running_with_harness(&h, "alice");
    assert_ne!(h.invocation("alice"), rebuilt);
    assert_eq!(events(&h, "alice", "rebuild_finished").len(), 1);
}

#[test]
fn destroy_cut_after_the_stop_is_not_done_and_retryable() {
    let h = hive();
    h.hivectl_ok(CREATE);
    let before = h.invocation("alice");
    arm(&h, "destroy:stopped");
    // Cleanly not done: the container was stopped but the spec is still there (and no
    // stop was asked for), so the restarted daemon brings the agent back, once.
    assert_eq!(interrupted(&h, &["destroy", "alice"]), (1, 0, 0, 0, 0));
    consistent(&h, "alice");
    h.run_ok(&["test", "-f", "/var/lib/hyperhive/agents/alice/spec.toml"]);
    running_with_harness(&h, "alice");
    assert_ne!(h.invocation("alice"), before);
    assert_eq!(events(&h, "alice", "agent_destroyed").len(), 0);
    // A retried destroy finishes the job.
    h.hivectl_ok(&["destroy", "alice"]);
    gone(&h, "alice");
    assert_eq!(events(&h, "alice", "agent_destroyed").len(), 1);
}

#[test]
fn destroy_cut_after_the_spec_is_gone_leaves_no_orphan_socket() {
    let h = hive();
    h.hivectl_ok(CREATE);
    arm(&h, "destroy:spec-removed");
    // Done, but for the event: no spec and no unit, so reconcile has nothing to do, and
    // the runtime dir the killed daemon left is removed before READY=1.
    assert_eq!(interrupted(&h, &["destroy", "alice"]), (0, 0, 0, 0, 0));
    gone(&h, "alice");
}

/// An agent that asks for /opt/approved/bin once, and the id of its request.
fn asked(h: &TestHost) -> String {
    let ask = r#"case ":$PATH:" in *:/opt/approved/bin:*) ;; *) hive-harness request-approval spec_change '{"path":["/opt/approved/bin"]}' > /state/requested ;; esac; exec sleep infinity"#;
    h.create("alice", &["--harness", "sh", "-c", ask]);
    let mut id = String::new();
    h.wait_for("the request", Duration::from_secs(15), || {
        id = state_file(h, "alice", "requested");
        !id.is_empty()
    });
    id
}

/// The approval ended applied, exactly once: one approval, applied; the spec has the
/// change once; one rebuild for it, started and finished; the unit runs with it.
fn applied_once(h: &TestHost, id: &str) {
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
    let path_lines: Vec<&str> = spec.lines().filter(|l| l.starts_with("path = ")).collect();
    assert_eq!(
        path_lines,
        vec![r#"path = ["/opt/approved/bin"]"#],
        "applied once: {spec}"
    );
    running_with_harness(h, "alice");
    let env = h.unit_show("alice", "Environment");
    assert_eq!(
        env.matches("/opt/approved/bin").count(),
        1,
        "once on PATH: {env}"
    );
    assert!(env.contains(&format!("HIVE_APPROVAL_ID={id}")), "{env}");
    let approval = |event: &str| {
        entries(
            h,
            &[
                "SYSLOG_IDENTIFIER=hive-c0re",
                &format!("HIVE_EVENT={event}"),
                &format!("HIVE_APPROVAL_ID={id}"),
            ],
        )
        .len()
    };
    assert_eq!(
        approval("rebuild_started"),
        1,
        "one rebuild for approval {id}"
    );
    assert_eq!(
        approval("rebuild_finished"),
        1,
        "one rebuild for approval {id}"
    );
    assert_eq!(approval("approval_applied"), 1);
}

#[test]
fn approve_cut_after_the_decision_is_resumed() {
    let h = hive();
    let id = asked(&h);
    arm(&h, "approve:decided");
    // The restarted daemon applies the approval before its reconcile, which then keeps.
    assert_eq!(interrupted(&h, &["approve", &id]), (0, 0, 1, 0, 0));
    consistent(&h, "alice");
    applied_once(&h, &id);
}

#[test]
fn approve_cut_after_the_spec_is_written_converges() {
    let h = hive();
    let id = asked(&h);
    arm(&h, "approve:spec-saved");
    assert_eq!(interrupted(&h, &["approve", &id]), (0, 0, 1, 0, 0));
    consistent(&h, "alice");
    applied_once(&h, &id);
}

#[test]
fn approve_cut_after_applying_is_not_applied_twice() {
    let h = hive();
    let id = asked(&h);
    arm(&h, "approve:applied");
    // The change was written and the agent rebuilt with it; only `applied` was not
    // recorded. The restarted daemon records it without a second rebuild.
    assert_eq!(interrupted(&h, &["approve", &id]), (0, 0, 1, 0, 0));
    consistent(&h, "alice");
    applied_once(&h, &id);
}

/// A crashed container that systemd restarted gets its harness back even when the first
/// try fails (as when its bus stays silent past the bound on a loaded host): the daemon
/// tries again instead of leaving the agent without a harness until the next reload.
#[test]
fn a_failed_harness_heal_is_tried_again() {
    let h = hive();
    // Armed before the agent exists: create brings the harness up without a heal, so the
    // one failing try is the heal after the crash.
    arm(&h, "heal:try");
    h.hivectl_ok(CREATE);
    running_with_harness(&h, "alice");
    kill_container_and_await_restart(&h, "alice");
    running_with_harness(&h, "alice");
    let log = daemon_log(&h);
    assert!(
        log.contains("re-creating its harness (try 1 of 4") && log.contains("failpoint heal:try"),
        "the first try failed and said so: {log}"
    );
    assert!(
        log.contains("harness re-created in its restarted container"),
        "the second try brought it back: {log}"
    );
}
