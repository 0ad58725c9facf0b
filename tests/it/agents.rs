//! Agent lifecycle against a real systemd: every claim is checked with systemctl,
//! machinectl, stat or journalctl inside a throwaway test host.

use std::process::Output;
use std::time::Duration;

use crate::common::*;
use hyperhive::plan::{MOUNT_BURST, MOUNT_BURST_VAR};

#[test]
fn create_starts_a_container_unit_with_every_contract_property() {
    let h = hive();
    let out = h.create(
        "alice",
        &[
            "--path",
            "/opt/tools/bin",
            "--memory-max",
            "512M",
            "--cpu-weight",
            "50",
            "--tasks-max",
            "300",
        ],
    );
    assert!(out.contains("created"), "{out}");

    assert_eq!(h.unit_show("alice", "ActiveState"), "active");
    assert_eq!(h.unit_show("alice", "SubState"), "running");
    assert_eq!(h.unit_show("alice", "Slice"), "hive.slice");
    assert_eq!(h.unit_show("alice", "Type"), "notify");
    assert_eq!(h.unit_show("alice", "Restart"), "on-failure");
    assert_eq!(h.unit_show("alice", "RuntimeDirectory"), "hyperhive/alice");
    assert_eq!(h.unit_show("alice", "RuntimeDirectoryPreserve"), "yes");
    assert_eq!(h.unit_show("alice", "RuntimeDirectoryMode"), "0700");
    assert_eq!(
        h.unit_show("alice", "MemoryMax"),
        (512u64 << 20).to_string()
    );
    assert_eq!(h.unit_show("alice", "CPUWeight"), "50");
    assert_eq!(h.unit_show("alice", "TasksMax"), "300");
    assert_eq!(h.unit_show("alice", "Delegate"), "yes");
    assert_eq!(
        h.unit_show("alice", "Description"),
        "hyperhive agent alice (container h-alice)"
    );

    // An explicit PATH: the agent's entry first, then the host base; not the daemon's.
    let env = h.unit_show("alice", "Environment");
    let path = env
        .split(' ')
        .find_map(|e| e.strip_prefix("PATH="))
        .expect("PATH set");
    assert!(path.starts_with("/opt/tools/bin:"), "{path}");
    assert!(path.contains("/run/current-system/sw/bin"), "{path}");

    let exec = h.unit_show("alice", "ExecStart");
    for want in [
        "--machine=h-alice",
        "--keep-unit",
        "--register=yes",
        "--boot",
        "--notify-ready=yes",
        "--private-users=pick",
        "--bind=/var/lib/hyperhive/agents/alice/state:/state:idmap",
        "--bind=/var/lib/hyperhive/agents/alice/claude:/root/.claude:idmap",
        "--bind-ro=/run/hyperhive/alice:/run/hyperhive:idmap",
    ] {
        assert!(exec.contains(want), "{want} missing from ExecStart: {exec}");
    }
    // A namespace of its own by default (issue 23; network::).
    assert!(
        exec.contains("--private-network"),
        "private network by default: {exec}"
    );

    // machined knows the container, and it is really booted.
    assert!(
        h.machines().contains(&"h-alice".to_string()),
        "{:?}",
        h.machines()
    );
    assert_eq!(
        h.run_ok(&["machinectl", "show", "h-alice", "-p", "State", "--value"]),
        "running"
    );

    // A network namespace of its own, not the test host's (issue 23).
    let leader = h.run_ok(&["machinectl", "show", "h-alice", "-p", "Leader", "--value"]);
    let host_ns = h.run_ok(&["readlink", "/proc/1/ns/net"]);
    let agent_ns = h.run_ok(&["readlink", &format!("/proc/{leader}/ns/net")]);
    assert_ne!(host_ns, agent_ns, "agent must not share the host's network");

    // Its systemd got the mount table burst that keeps its boot from pausing ~0.9 s
    // (plan/nspawn.rs; the boot bench measures the effect).
    let environ = h.run_ok(&["cat", &format!("/proc/{leader}/environ")]);
    let burst = format!("{MOUNT_BURST_VAR}={MOUNT_BURST}");
    assert!(
        environ.split('\0').any(|e| e == burst),
        "{burst} missing from the container's PID 1 environment: {environ:?}"
    );

    // State and credentials dirs exist, 0700; the runtime dir exists.
    for dir in ["state", "claude"] {
        let mode = h.run_ok(&[
            "stat",
            "-c",
            "%a",
            &format!("/var/lib/hyperhive/agents/alice/{dir}"),
        ]);
        assert_eq!(mode, "700", "{dir}");
    }
    h.run_ok(&["test", "-d", "/run/hyperhive/alice"]);

    // list and status read the same from systemd.
    let list: serde_json::Value = serde_json::from_str(&h.hivectl_ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["name"], "alice");
    assert_eq!(list[0]["active_state"], "active");
    let status: serde_json::Value =
        serde_json::from_str(&h.hivectl_ok(&["status", "alice", "--json"])).unwrap();
    assert_eq!(status["container"]["invocation_id"], h.invocation("alice"));
    assert_eq!(status["machine_registered"], true);
    let text = h.hivectl_ok(&["status", "alice"]);
    assert!(text.contains("active (running)"), "{text}");
}

#[test]
fn host_network_only_when_asked() {
    // The default is a private namespace (network::a_default_agent_has_its_own_network_with_only_lo);
    // the host's network is an admin's explicit choice, and then nspawn makes no netns.
    let h = hive();
    h.create("bob", &["--network", "host"]);
    assert!(!h.unit_show("bob", "ExecStart").contains("network"));
    let leader = h.run_ok(&["machinectl", "show", "h-bob", "-p", "Leader", "--value"]);
    assert_eq!(
        h.run_ok(&["readlink", "/proc/1/ns/net"]),
        h.run_ok(&["readlink", &format!("/proc/{leader}/ns/net")])
    );
}

#[test]
fn create_twice_adopts_the_running_unit() {
    let h = hive();
    h.create("alice", &[]);
    let id = h.invocation("alice");
    let out = h.create("alice", &[]);
    assert!(out.contains("adopted"), "{out}");
    assert_eq!(h.invocation("alice"), id, "the running unit was kept");
    assert_eq!(h.agent_units(), vec!["hive-agent-alice.service"]);
    assert_eq!(h.machines().iter().filter(|m| *m == "h-alice").count(), 1);
}

#[test]
fn create_with_a_changed_spec_replaces_the_unit_only_with_replace() {
    let h = hive();
    h.create("alice", &[]);
    let id = h.invocation("alice");
    let refused = h.hivectl(&[
        "create",
        "alice",
        "--root",
        "/",
        "--volatile",
        "yes",
        "--cpu-weight",
        "77",
    ]);
    assert_bad_input(&refused, "create with another spec");
    assert_eq!(h.invocation("alice"), id);
    let out = h.create("alice", &["--cpu-weight", "77", "--replace"]);
    assert!(out.contains("replaced"), "{out}");
    assert_ne!(h.invocation("alice"), id);
    assert_eq!(h.unit_show("alice", "CPUWeight"), "77");
    assert_eq!(h.agent_units(), vec!["hive-agent-alice.service"]);
}

#[test]
fn a_killed_container_is_restarted_by_systemd() {
    let h = hive();
    h.create("alice", &[]);
    let pid = h.unit_show("alice", "MainPID");
    h.run_ok(&["kill", "-9", &pid]);
    // The restart only works because ExecStopPost unregisters the dead machine.
    h.wait_for(
        "NRestarts=1 and running again",
        Duration::from_secs(30),
        || {
            h.unit_show("alice", "NRestarts") == "1"
                && h.unit_show("alice", "SubState") == "running"
        },
    );
    assert_ne!(h.unit_show("alice", "MainPID"), pid);
    assert_eq!(h.machines().iter().filter(|m| *m == "h-alice").count(), 1);
}

#[test]
fn create_right_after_kill_9_ends_with_one_working_unit() {
    let h = hive();
    h.create("alice", &[]);
    let pid = h.unit_show("alice", "MainPID");
    h.run_ok(&["kill", "-9", &pid]);
    h.create("alice", &[]);
    h.wait_active("alice");
    assert_eq!(h.agent_units(), vec!["hive-agent-alice.service"]);
    assert_eq!(h.machines().iter().filter(|m| *m == "h-alice").count(), 1);
    assert_eq!(
        h.run_ok(&["machinectl", "show", "h-alice", "-p", "State", "--value"]),
        "running"
    );
}

#[test]
fn create_replaces_a_failed_unit_left_behind() {
    let h = hive();
    // A failed unit of the same name, as a crash that exhausted the restarts leaves it.
    let _ = h.run(&[
        "systemd-run",
        "--unit=hive-agent-alice.service",
        "--wait",
        "/bin/false",
    ]);
    assert_eq!(h.unit_show("alice", "ActiveState"), "failed");
    h.create("alice", &[]);
    h.wait_active("alice");
    assert!(h
        .unit_show("alice", "ExecStart")
        .contains("--machine=h-alice"));
    assert_eq!(h.agent_units(), vec!["hive-agent-alice.service"]);
}

#[test]
fn destroy_keeps_state_and_credentials_purge_deletes_them() {
    let h = hive();
    h.create("alice", &[]);
    let dir = "/var/lib/hyperhive/agents/alice";
    h.run_ok(&[
        "sh",
        "-c",
        &format!("echo remember > {dir}/state/notes.md && echo token > {dir}/claude/creds"),
    ]);

    h.hivectl_ok(&["destroy", "alice"]);
    assert_eq!(h.unit_show("alice", "LoadState"), "not-found");
    assert!(!h.machines().contains(&"h-alice".to_string()));
    assert_eq!(
        h.run_ok(&["cat", &format!("{dir}/state/notes.md")]),
        "remember"
    );
    assert_eq!(h.run_ok(&["cat", &format!("{dir}/claude/creds")]), "token");
    h.run_ok(&["test", "!", "-e", &format!("{dir}/spec.toml")]);
    h.run_ok(&["test", "!", "-e", "/run/hyperhive/alice"]);
    let list: serde_json::Value = serde_json::from_str(&h.hivectl_ok(&["list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));

    // Recreated, the agent finds its notes at /state.
    h.create("alice", &[]);
    let out = h.in_agent("alice", &["cat", "/state/notes.md", "/root/.claude/creds"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "remember\ntoken\n",
        "{}",
        stderr(&out)
    );

    h.hivectl_ok(&["destroy", "alice", "--purge"]);
    h.run_ok(&["test", "!", "-e", dir]);

    // What a plain destroy kept can be purged later, once the agent is gone.
    h.create("alice", &[]);
    h.hivectl_ok(&["destroy", "alice"]);
    h.run_ok(&["test", "-d", dir]);
    h.hivectl_ok(&["destroy", "alice", "--purge"]);
    h.run_ok(&["test", "!", "-e", dir]);
    assert_bad_input(
        &h.hivectl(&["destroy", "alice", "--purge"]),
        "nothing left to purge",
    );
    assert_eq!(h.unit_show("alice", "LoadState"), "not-found");
}

#[test]
fn bad_input_is_refused_and_touches_nothing() {
    let h = hive();
    h.run_ok(&["mkdir", "-p", "/srv/ok"]);
    let long = "a".repeat(32);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "uppercase",
            vec!["create", "Alice", "--root", "/", "--volatile", "yes"],
        ),
        (
            "dotdot",
            vec!["create", "..", "--root", "/", "--volatile", "yes"],
        ),
        (
            "slash",
            vec!["create", "a/b", "--root", "/", "--volatile", "yes"],
        ),
        (
            "empty",
            vec!["create", "", "--root", "/", "--volatile", "yes"],
        ),
        (
            "leading dash",
            vec!["create", "--root", "/", "--volatile", "yes", "--", "-a"],
        ),
        (
            "too long",
            vec!["create", &long, "--root", "/", "--volatile", "yes"],
        ),
        ("no root", vec!["create", "alice"]),
        (
            "relative root",
            vec!["create", "alice", "--root", "srv", "--volatile", "yes"],
        ),
        (
            "missing root",
            vec![
                "create",
                "alice",
                "--root",
                "/nonexistent",
                "--volatile",
                "yes",
            ],
        ),
        ("host root writable", vec!["create", "alice", "--root", "/"]),
        (
            "missing bind source",
            vec![
                "create",
                "alice",
                "--root",
                "/",
                "--volatile",
                "yes",
                "--bind",
                "/nope:/x",
            ],
        ),
        (
            "bad bind option",
            vec![
                "create",
                "alice",
                "--root",
                "/",
                "--volatile",
                "yes",
                "--bind",
                "/srv/ok:/x:rx",
            ],
        ),
        (
            "reserved target",
            vec![
                "create",
                "alice",
                "--root",
                "/",
                "--volatile",
                "yes",
                "--bind",
                "/srv/ok:/state",
            ],
        ),
        (
            "bad memory",
            vec![
                "create",
                "alice",
                "--root",
                "/",
                "--volatile",
                "yes",
                "--memory-max",
                "lots",
            ],
        ),
        (
            "bad env",
            vec![
                "create",
                "alice",
                "--root",
                "/",
                "--volatile",
                "yes",
                "--env",
                "NOEQUALS",
            ],
        ),
        (
            "missing spec file",
            vec!["create", "alice", "--spec", "/nope.toml"],
        ),
        ("unknown agent start", vec!["start", "ghost"]),
        ("unknown agent stop", vec!["stop", "ghost"]),
        ("unknown agent destroy", vec!["destroy", "ghost"]),
        ("unknown agent status", vec!["status", "ghost"]),
        ("bad name status", vec!["status", "Ghost"]),
    ];
    for (what, args) in &cases {
        let out = h.hivectl(args);
        assert_bad_input(&out, what);
    }
    // The daemon's own check (not only hivectl's) refuses bad names: call it raw.
    let raw = h.run(&[
        "busctl",
        "call",
        "org.hyperhive.Hive1",
        "/org/hyperhive/hive1",
        "org.hyperhive.Hive1.Manager",
        "CreateAgent",
        "ss",
        "../etc",
        "root = \"/\"\nvolatile = \"yes\"\n",
    ]);
    assert!(!raw.status.success());
    assert!(
        stderr(&raw).contains("invalid agent name"),
        "{}",
        stderr(&raw)
    );

    assert_eq!(
        h.run_ok(&["ls", "-A", "/var/lib/hyperhive/agents"]),
        "",
        "no agent dir was created"
    );
    assert!(h.agent_units().is_empty(), "{:?}", h.agent_units());
    assert!(h.machines().is_empty(), "{:?}", h.machines());
}

#[test]
fn daemon_restart_leaves_agents_running_and_rediscovers_them() {
    let h = hive();
    h.create("alice", &[]);
    h.create("bob", &[]);
    let ids = (h.invocation("alice"), h.invocation("bob"));
    let daemon_id = h.show("hive-c0re.service", "InvocationID");

    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
    assert_eq!(h.show("hive-c0re.service", "ActiveState"), "active");
    assert_ne!(h.show("hive-c0re.service", "InvocationID"), daemon_id);
    assert_eq!(
        (h.invocation("alice"), h.invocation("bob")),
        ids,
        "agents untouched"
    );
    h.run_ok(&["test", "-d", "/run/hyperhive/alice"]);

    // Rediscovered before READY=1: the API knows both agents right away.
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
    let journal = h.run_ok(&[
        "journalctl",
        "-o",
        "json",
        "HIVE_EVENT=adopted",
        "HIVE_AGENT=alice",
    ]);
    assert!(
        journal.contains(&ids.0),
        "adopted event carries the InvocationID: {journal}"
    );

    // A rebuild after the restart leaves exactly one unit set.
    h.hivectl_ok(&["rebuild", "alice"]);
    h.wait_active("alice");
    assert_ne!(h.invocation("alice"), ids.0);
    assert_eq!(h.agent_units().len(), 2);
}

#[test]
fn list_and_status_work_while_the_daemon_is_down() {
    let h = hive();
    h.create("alice", &[]);
    h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
    let list = h.hivectl_ok(&["list"]);
    assert!(list.contains("alice") && list.contains("active"), "{list}");
    assert!(h.hivectl_ok(&["status", "alice"]).contains("running"));
    // The reads did not start the daemon. (A verb that needs it does, by D-Bus activation:
    // daemon_away.rs.)
    assert_eq!(h.show("hive-c0re.service", "ActiveState"), "inactive");
    assert_eq!(h.unit_show("alice", "ActiveState"), "active");
}

#[test]
fn a_bind_source_with_a_space_and_a_colon() {
    let h = hive();
    h.run_ok(&[
        "sh",
        "-c",
        "mkdir -p '/srv/my data:v1' && echo hello > '/srv/my data:v1/file'",
    ]);
    h.create("alice", &["--bind", r"/srv/my data\:v1:/data:ro"]);
    let exec = h.unit_show("alice", "ExecStart");
    assert!(exec.contains(r"--bind-ro=/srv/my data\:v1:/data"), "{exec}");
    let out = h.in_agent("alice", &["cat", "/data/file"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\n",
        "{}",
        stderr(&out)
    );
    // Read-only inside.
    let out = h.in_agent("alice", &["touch", "/data/new"]);
    assert!(!out.status.success());
}

#[test]
fn stop_start_restart_rebuild() {
    let h = hive();
    h.create("alice", &[]);
    let first = h.invocation("alice");

    h.hivectl_ok(&["stop", "alice"]);
    assert_ne!(h.unit_show("alice", "ActiveState"), "active");
    assert!(!h.machines().contains(&"h-alice".to_string()));
    let status: serde_json::Value =
        serde_json::from_str(&h.hivectl_ok(&["status", "alice", "--json"])).unwrap();
    assert!(
        status["spec"].is_string(),
        "the agent still exists: {status}"
    );

    h.hivectl_ok(&["start", "alice"]);
    h.wait_active("alice");
    let second = h.invocation("alice");
    assert_ne!(first, second);
    assert!(h
        .hivectl_ok(&["start", "alice"])
        .contains("already running"));
    assert_eq!(h.invocation("alice"), second);

    h.hivectl_ok(&["restart", "alice"]);
    h.wait_active("alice");
    let third = h.invocation("alice");
    assert_ne!(second, third);

    // Rebuild picks up a spec edited on disk.
    h.run_ok(&[
        "sh",
        "-c",
        "echo 'path = [\"/opt/new/bin\"]' >> /var/lib/hyperhive/agents/alice/spec.toml",
    ]);
    h.hivectl_ok(&["rebuild", "alice"]);
    h.wait_active("alice");
    assert_ne!(h.invocation("alice"), third);
    assert!(h
        .unit_show("alice", "Environment")
        .contains("PATH=/opt/new/bin:"));
    assert_eq!(h.agent_units(), vec!["hive-agent-alice.service"]);
}

#[test]
fn only_root_may_change_agents() {
    let h = hive();
    h.create("alice", &[]);
    let out = h.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        crate::common::HIVECTL,
        "stop",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("access"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.unit_show("alice", "ActiveState"), "active");
    // Reading is allowed.
    let out = h.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        crate::common::HIVECTL,
        "list",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn lifecycle_events_reach_journald_with_the_contract_fields() {
    let h = hive();
    h.create("alice", &[]);
    h.hivectl_ok(&["destroy", "alice"]);
    let out = h.run_ok(&[
        "journalctl",
        "-o",
        "json",
        "--no-pager",
        "SYSLOG_IDENTIFIER=hive-c0re",
        "HIVE_AGENT=alice",
    ]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["HIVE_EVENT"].as_str())
        .collect();
    assert_eq!(names, vec!["agent_created", "agent_destroyed"], "{out}");
    for e in &events {
        assert_eq!(e["HIVE_UNIT"], "hive-agent-alice.service");
        assert_eq!(e["MESSAGE_ID"].as_str().unwrap().len(), 32);
    }
}

/// Swaps in a bus policy that lets anyone call anything on org.hyperhive.Hive1 and reloads
/// the bus: what still refuses a caller is the daemon's own check.
fn open_policy(h: &TestHost) {
    h.run_ok(&[
        "sh",
        "-c",
        "mkdir -p /run/open-policy && cp /etc/dbus-1/system.d/* /run/open-policy/ && \
         printf '%s\\n' '<busconfig><policy context=\"default\"><allow send_destination=\"org.hyperhive.Hive1\"/></policy></busconfig>' \
           > /run/open-policy/zz-open.conf && \
         mount --bind /run/open-policy /etc/dbus-1/system.d && \
         busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig",
    ]);
}

#[test]
fn the_daemon_checks_the_caller_even_if_the_bus_policy_lets_it_through() {
    let h = hive();
    h.create("alice", &[]);
    open_policy(&h);
    let out = h.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "busctl",
        "call",
        "org.hyperhive.Hive1",
        "/org/hyperhive/hive1",
        "org.hyperhive.Hive1.Manager",
        "StopAgent",
        "s",
        "alice",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only root"),
        "the daemon itself refused: {}",
        stderr(&out)
    );
    assert_eq!(h.unit_show("alice", "ActiveState"), "active");
}

/// Calls `method(int64 id, string "")` on the Manager with dbus-send, which prints the
/// error's name, as `uid` with exactly the supplementary groups `groups`.
fn decide_as(h: &TestHost, uid: &str, groups: &str, method: &str, id: &str) -> Output {
    let reuid = format!("--reuid={uid}");
    let regid = format!("--regid={uid}");
    let groups_arg = format!("--groups={groups}");
    let mut argv = vec!["setpriv", &reuid, &regid];
    if groups.is_empty() {
        argv.push("--clear-groups");
    } else {
        argv.push(&groups_arg);
    }
    let member = format!("org.hyperhive.Hive1.Manager.{method}");
    let id = format!("int64:{id}");
    argv.extend_from_slice(&[
        "dbus-send",
        "--system",
        "--print-reply",
        "--dest=org.hyperhive.Hive1",
        "/org/hyperhive/hive1",
        &member,
        &id,
        "string:",
    ]);
    h.run(&argv)
}

#[test]
fn the_daemon_checks_who_approves_and_denies_even_if_the_bus_policy_lets_them_through() {
    let h = hive();
    let ask = r#"hive-harness request-approval spec_change '{"path":["/opt/asked/bin"]}' > /state/requested; exec sleep infinity"#;
    h.create("alice", &["--harness", "sh", "-c", ask]);
    let mut id = String::new();
    h.wait_for("the request", Duration::from_secs(15), || {
        id = crate::common::state_file(&h, "alice", "requested");
        !id.is_empty()
    });
    let admin_gid = h
        .run_ok(&["getent", "group", "hive-admin"])
        .split(':')
        .nth(2)
        .unwrap()
        .to_owned();
    open_policy(&h);
    let status = || -> serde_json::Value {
        let all: serde_json::Value =
            serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
        all[0]["status"].clone()
    };
    // Nobody, and a system user (daemon, uid 1) in another group (users, 100) but not in
    // hive-admin. The bus only answers users it can look up, hence a real one.
    for (uid, groups) in [("65534", ""), ("1", "100")] {
        for (method, verb) in [("Approve", "approve"), ("Deny", "deny")] {
            let out = decide_as(&h, uid, groups, method, &id);
            assert!(!out.status.success(), "{method} as uid {uid} went through");
            assert_eq!(
                stderr(&out),
                format!(
                    "Error org.hyperhive.Hive1.Error.AccessDenied: {verb} {id}: only root and \
                     members of hive-admin may do this (caller uid {uid})"
                ),
                "{method} as uid {uid} groups [{groups}]: refused by the daemon itself"
            );
            assert_eq!(status(), "pending");
        }
    }
    let decided = entries(
        &h,
        &["SYSLOG_IDENTIFIER=hive-c0re", "HIVE_EVENT=approval_denied"],
    )
    .len()
        + entries(
            &h,
            &[
                "SYSLOG_IDENTIFIER=hive-c0re",
                "HIVE_EVENT=approval_approved",
            ],
        )
        .len();
    assert_eq!(decided, 0, "no decision journaled");
    // The same call from a member of hive-admin, not root, goes through: the refusals
    // above were about the caller, not the call.
    let out = decide_as(&h, "1", &admin_gid, "Deny", &id);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status(), "denied");
}

/// `Transient=yes` for a unit, and no unit file of its name anywhere systemd loads units
/// from but its own transient dir; `systemctl` is `systemctl` or `systemctl -M machine`.
fn assert_transient(h: &TestHost, systemctl: &[&str], unit: &str) {
    let mut argv = systemctl.to_vec();
    argv.extend_from_slice(&[
        "show",
        "-p",
        "Transient,FragmentPath,DropInPaths,LoadState",
        unit,
    ]);
    let show = h.run_ok(&argv);
    let mut props: Vec<&str> = show.lines().collect();
    props.sort();
    assert_eq!(
        props,
        vec![
            "DropInPaths=".to_owned(),
            format!("FragmentPath=/run/systemd/transient/{unit}"),
            "LoadState=loaded".to_owned(),
            "Transient=yes".to_owned(),
        ],
        "{systemctl:?} {unit}"
    );
}

/// Unit files named `pattern` in the unit search path, other than systemd's transient dir.
fn unit_files(h: &TestHost, prefix: &str, pattern: &str) -> String {
    let dirs = [
        "/etc/systemd/system",
        "/run/systemd/system",
        "/run/systemd/generator",
        "/run/systemd/generator.late",
        "/run/systemd/generator.early",
        "/usr/local/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .map(|d| format!("{prefix}{d}"))
    .join(" ");
    h.run_ok(&[
        "sh",
        "-c",
        &format!("find {dirs} -name '{pattern}*' 2>/dev/null; true"),
    ])
}

/// Every hive-agent-* unit and each container's harness unit is transient, and no unit file
/// of theirs exists on the host or in the container.
fn all_transient(h: &TestHost) {
    let units = h.agent_units();
    assert_eq!(
        units,
        vec!["hive-agent-alice.service", "hive-agent-bob.service"]
    );
    for unit in &units {
        assert_transient(h, &["systemctl"], unit);
    }
    assert_eq!(
        unit_files(h, "", "hive-agent-"),
        "",
        "unit files on the host"
    );
    assert_eq!(
        unit_files(h, "", "hive-harness"),
        "",
        "unit files on the host"
    );
    // The search itself sees unit files (so an empty answer means none).
    assert!(unit_files(h, "", "systemd-journald.service").contains("systemd-journald"));
    for agent in ["alice", "bob"] {
        let machine = format!("h-{agent}");
        h.wait_for("harness active", Duration::from_secs(30), || {
            h.run(&[
                "systemctl",
                "-M",
                &machine,
                "is-active",
                "hive-harness.service",
            ])
            .status
            .success()
        });
        assert_transient(h, &["systemctl", "-M", &machine], "hive-harness.service");
        // The container's tree, as its leader process sees it.
        let leader = h.run_ok(&[
            "machinectl",
            "show",
            "--property=Leader",
            "--value",
            &machine,
        ]);
        let root = format!("/proc/{leader}/root");
        assert_eq!(
            unit_files(h, &root, "hive-harness"),
            "",
            "unit files in {machine}"
        );
        assert!(unit_files(h, &root, "systemd-journald.service").contains("systemd-journald"));
    }
}

#[test]
fn every_agent_unit_is_transient_and_no_unit_file_is_written() {
    let h = hive();
    h.create("alice", &[]);
    h.create("bob", &["--harness", "sleep", "infinity"]);
    all_transient(&h);
    // Units made again by a rebuild or a restart are just as transient.
    h.hivectl_ok(&["rebuild", "bob"]);
    h.hivectl_ok(&["restart", "alice"]);
    all_transient(&h);
}
