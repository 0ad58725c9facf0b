//! `hivectl -H`: hivectl runs on this machine, outside the test host, and reaches the
//! daemon and systemd inside it through an ssh-shaped exec transport. The `ssh` it finds on
//! PATH is a stand-in that checks its argv and then does what sshd would: runs
//! `systemd-stdio-bridge` (or a command line, through the shell) on the other machine — here
//! by entering the test host's namespaces. systemctl inside the test host is the oracle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use serde_json::Value;

/// Writes the stand-in ssh for `h` into a directory of its own and returns that directory.
/// It knows one host, `root@th`; `root@nobridge` reaches the host but finds no bridge there;
/// any other host does not resolve, with ssh's own message.
fn fake_ssh(h: &TestHost) -> PathBuf {
    let dir = h.state_dir().join("fake-ssh");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$*" >> {calls}
[ "$1" = -xT ] || {{ echo "fake ssh: expected -xT first: $*" >&2; exit 255; }}
shift
[ "$1" = -- ] && shift
dest=$1
shift
case "$dest" in
  root@th) ;;
  root@nobridge) exec nsenter -t {leader} -a /nonexistent/systemd-stdio-bridge ;;
  *) echo "ssh: Could not resolve hostname ${{dest#*@}}: Name or service not known" >&2; exit 255 ;;
esac
if [ "$1" = systemd-stdio-bridge ] && [ $# -eq 1 ]; then
  exec nsenter -t {leader} -a systemd-stdio-bridge
fi
# Like sshd: the words are one line for the remote user's shell.
exec nsenter -t {leader} -a sh -c "$*"
"#,
        calls = dir.join("calls").display(),
        leader = h.leader(),
    );
    let ssh = dir.join("ssh");
    std::fs::write(&ssh, script).unwrap();
    let mut perm = std::fs::metadata(&ssh).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&ssh, perm).unwrap();
    dir
}

/// hivectl on this machine (not inside the test host), with the stand-in ssh first on PATH.
fn outside(fake: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(HIVECTL)
        .args(args)
        .env("PATH", path)
        // Nothing may reach a bus of this machine by accident.
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env_remove("SYSTEMD_SSH")
        .stdin(Stdio::null())
        .output()
        .expect("running hivectl")
}

fn outside_ok(fake: &Path, args: &[&str]) -> String {
    let out = outside(fake, args);
    assert!(
        out.status.success(),
        "hivectl {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn calls(fake: &Path) -> Vec<String> {
    std::fs::read_to_string(fake.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn hivectl_h_lists_and_stops_an_agent_of_another_machine() {
    let h = hive();
    h.create("alice", &[]);
    let fake = fake_ssh(&h);

    let list: Value =
        serde_json::from_str(&outside_ok(&fake, &["-H", "root@th", "list", "--json"])).unwrap();
    let agents = list.as_array().unwrap();
    assert_eq!(agents.len(), 1, "{list}");
    assert_eq!(agents[0]["name"], "alice");
    assert_eq!(agents[0]["unit"], "hive-agent-alice.service");
    assert_eq!(agents[0]["active_state"], "active");
    assert_eq!(agents[0]["sub_state"], "running");
    assert!(
        agents[0].get("spec").is_none(),
        "the spec path is the other machine's business: {list}"
    );
    // systemctl -H's transport, argv for argv.
    assert_eq!(
        calls(&fake),
        vec!["-xT -- root@th systemd-stdio-bridge"],
        "one ssh per hivectl run"
    );

    // status: the remote systemd's facts, and no local-only ones.
    let status = outside_ok(&fake, &["-H", "root@th", "status", "alice"]);
    assert!(status.contains("Active: active (running)"), "{status}");
    assert!(status.contains("Host: root@th"), "{status}");
    assert!(!status.contains("State:"), "{status}");
    let status: Value = serde_json::from_str(&outside_ok(
        &fake,
        &["-H", "root@th", "status", "alice", "--json"],
    ))
    .unwrap();
    assert_eq!(status["host"], "root@th");
    assert_eq!(status["container"]["invocation_id"], h.invocation("alice"));
    assert_eq!(status["pending_approvals"], Value::Array(vec![]));
    for gone in ["spec", "state_dir", "harness", "recent_log"] {
        assert!(status.get(gone).is_none(), "{gone} in {status}");
    }

    // A change goes through the other machine's daemon; its systemd confirms.
    let out = outside_ok(&fake, &["-H", "root@th", "stop", "alice"]);
    assert!(out.contains("agent alice: stopped"), "{out}");
    let active = h.run(&["systemctl", "is-active", "hive-agent-alice.service"]);
    assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "inactive");
    let list: Value =
        serde_json::from_str(&outside_ok(&fake, &["-H", "root@th", "list", "--json"])).unwrap();
    assert_eq!(
        list[0]["name"], "alice",
        "still known to the daemon: {list}"
    );
    assert_eq!(list[0]["active_state"], "inactive");

    // logs runs journalctl over there, with its arguments quoted for the remote shell.
    let logs = outside_ok(
        &fake,
        &[
            "-H",
            "root@th",
            "logs",
            "alice",
            "--since",
            "1 hour ago",
            "-o",
            "cat",
            "--no-pager",
        ],
    );
    assert!(logs.contains("agent alice: stopped"), "{logs}");
    assert!(
        calls(&fake).iter().any(|c| c
            == "-xT -- root@th journalctl --merge --output=cat '--since=1 hour ago' --no-pager \
                HIVE_AGENT=alice + _PID=1 UNIT=hive-agent-alice.service \
                + _PID=1 UNIT=hive-harness.service _HOSTNAME=h-alice"),
        "{:?}",
        calls(&fake)
    );

    let out = outside_ok(&fake, &["-H", "root@th", "start", "alice"]);
    assert!(out.contains("started"), "{out}");
    h.wait_active("alice");
}

#[test]
fn a_broken_transport_is_one_line_and_exit_1() {
    let h = hive();
    let fake = fake_ssh(&h);
    for (host, says) in [
        ("root@nowhere", "Could not resolve hostname nowhere"),
        ("root@nobridge", "/nonexistent/systemd-stdio-bridge"),
    ] {
        for verb in [&["list"][..], &["stop", "alice"], &["approvals"]] {
            let mut args = vec!["-H", host];
            args.extend_from_slice(verb);
            let out = outside(&fake, &args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err:?}");
            assert!(err.starts_with("hivectl: reaching "), "{err}");
            assert!(err.contains(host), "{err}");
            assert!(err.contains(says), "{args:?}: {err}");
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn a_bad_host_is_bad_input() {
    // No test host needed: nothing is run.
    let fake = std::env::temp_dir();
    for bad in [
        "--host=",
        "--host=-oProxyCommand=touch /tmp/x",
        "--host=root@",
        "--host=th:0",
        "--host=a b",
        "--host=th/h-alice",
    ] {
        let out = outside(&fake, &[bad, "list"]);
        assert_bad_input(&out, bad);
        assert!(
            stderr(&out).contains("[USER@]HOST[:PORT]"),
            "{}",
            stderr(&out)
        );
    }
}
