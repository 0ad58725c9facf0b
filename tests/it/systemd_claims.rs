//! What hyperhive's design relies on systemd (252 here) to do, proven on a real systemd
//! rather than taken from memory: each test boots a bare test host (no hyperhive daemon,
//! so nobody else subscribes) and probes one behaviour with systemd's own tools and a raw
//! D-Bus connection.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use hyperhive::systemd::{error_name, ALREADY_SUBSCRIBED};
use zbus::MatchRule;

fn bare() -> TestHost {
    TestHost::boot(Options::default()).expect("booting a bare test host")
}

async fn connect(h: &TestHost) -> zbus::Connection {
    zbus::connection::Builder::address(h.bus_address().as_str())
        .unwrap()
        .build()
        .await
        .unwrap()
}

async fn manager_call(conn: &zbus::Connection, method: &str) -> zbus::Result<()> {
    conn.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        method,
        &(),
    )
    .await
    .map(|_| ())
}

/// PropertiesChanged of `unit` that reach `conn` while `act` runs and for a moment after.
async fn changes_seen(
    conn: &zbus::Connection,
    h: &TestHost,
    unit_path: &str,
    act: &[&str],
) -> usize {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .unwrap()
        .member("PropertiesChanged")
        .unwrap()
        .path(unit_path.to_owned())
        .unwrap()
        .build();
    let mut stream = zbus::MessageStream::for_match_rule(rule, conn, None)
        .await
        .unwrap();
    h.run_ok(act);
    let mut n = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(_)) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        stream.next(),
    )
    .await
    {
        n += 1;
    }
    n
}

/// hive-c0re calls Subscribe() before watching units: without any subscriber systemd sends
/// no unit PropertiesChanged at all, so a watcher that merely adds a match rule is deaf.
#[tokio::test(flavor = "current_thread")]
async fn unit_properties_changed_is_sent_only_once_someone_subscribed() {
    let h = bare();
    // logind and machined subscribe to systemd for their own bookkeeping; without them
    // nobody has.
    h.run_ok(&[
        "systemctl",
        "stop",
        "systemd-logind.service",
        "systemd-machined.service",
    ]);
    h.run_ok(&["systemd-run", "--unit=probe", "sleep", "1000"]);
    let conn = connect(&h).await;
    let path = "/org/freedesktop/systemd1/unit/probe_2eservice";

    let unsubscribed = changes_seen(
        &conn,
        &h,
        path,
        &["systemctl", "--no-block", "restart", "probe"],
    )
    .await;
    assert_eq!(unsubscribed, 0, "no subscriber, no signal");

    manager_call(&conn, "Subscribe").await.unwrap();
    let subscribed = changes_seen(
        &conn,
        &h,
        path,
        &["systemctl", "--no-block", "restart", "probe"],
    )
    .await;
    assert!(subscribed > 0, "after Subscribe() the restart is signalled");

    // A second Subscribe on the same connection is refused by name, and harmless: the
    // daemon treats AlreadySubscribed as success.
    let again = manager_call(&conn, "Subscribe").await.unwrap_err();
    assert_eq!(error_name(&again), Some(ALREADY_SUBSCRIBED), "{again}");
    let still = changes_seen(
        &conn,
        &h,
        path,
        &["systemctl", "--no-block", "restart", "probe"],
    )
    .await;
    assert!(still > 0, "still subscribed after AlreadySubscribed");
}

/// reset-failed while systemd waits to restart a crashed unit (auto-restart) does not cancel
/// the restart on this systemd: a crash loop cannot be stopped that way, only by stopping the
/// unit (hivectl stop). scripts/bench resets the start-rate counter between crashes in
/// either state.
#[test]
fn reset_failed_during_auto_restart_does_not_cancel_the_restart() {
    let h = bare();
    h.run_ok(&[
        "systemd-run",
        "--unit=crasher",
        "-p",
        "Restart=on-failure",
        "-p",
        "RestartSec=3s",
        "sh",
        "-c",
        "sleep 0.2; exit 3",
    ]);
    h.wait_for("crasher waits to restart", Duration::from_secs(10), || {
        h.show("crasher.service", "SubState") == "auto-restart"
    });
    let crashed = h.show("crasher.service", "InvocationID");
    h.run_ok(&["systemctl", "reset-failed", "crasher.service"]);
    // Past the 3 s restart delay: systemd restarted it all the same (a new invocation).
    h.wait_for(
        "the restart despite reset-failed",
        Duration::from_secs(10),
        || {
            let now = h.show("crasher.service", "InvocationID");
            !now.is_empty() && now != crashed
        },
    );
}

/// Why every container unit has `ExecStopPost=hive-c0re unregister-machine`: after nspawn is
/// killed, machined keeps the dead machine registered, and systemd's automatic restart of the
/// same nspawn command fails on the name until someone unregisters it.
#[test]
fn a_killed_container_restarts_only_once_its_machine_is_unregistered() {
    let h = bare();
    let run = |unit: &str, stop_post: Option<&str>| {
        let mut argv = vec![
            "systemd-run".to_string(),
            format!("--unit={unit}"),
            "-p".into(),
            "Type=notify".into(),
            "-p".into(),
            "NotifyAccess=all".into(),
            "-p".into(),
            "Restart=on-failure".into(),
            "-p".into(),
            "RestartSec=200ms".into(),
            "-p".into(),
            "KillMode=mixed".into(),
            "-p".into(),
            "Delegate=yes".into(),
        ];
        if let Some(cmd) = stop_post {
            argv.extend(["-p".into(), format!("ExecStopPost=-{cmd}")]);
        }
        argv.extend(
            [
                "systemd-nspawn",
                "--quiet",
                "--keep-unit",
                "--register=yes",
                "--directory=/",
                "--volatile=yes",
                "--notify-ready=yes",
                "--console=passive",
                "--link-journal=no",
            ]
            .map(String::from),
        );
        argv.push(format!("--machine={unit}"));
        argv.extend(["--boot", "--", "systemd.firstboot=off"].map(String::from));
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        h.run_ok(&refs);
    };
    let kill_and_settle = |unit: &str| -> String {
        let service = format!("{unit}.service");
        let invocation = h.show(&service, "InvocationID");
        h.run_ok(&[
            "systemctl",
            "kill",
            "-s",
            "KILL",
            "--kill-whom=main",
            &service,
        ]);
        // Settles as a new running invocation, or as failed once the start limit is hit.
        let mut outcome = String::new();
        h.wait_for(
            &format!("{unit} restarted or given up"),
            Duration::from_secs(30),
            || {
                let state = h.show(&service, "ActiveState");
                let sub = h.show(&service, "SubState");
                outcome = format!("{state}/{sub}");
                // Type=notify: activating/running until the container's READY=1.
                state == "failed"
                    || (state == "active"
                        && sub == "running"
                        && h.show(&service, "InvocationID") != invocation)
            },
        );
        outcome
    };

    run("bare", None);
    let without = kill_and_settle("bare");
    let log = h.run_ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "bare.service",
    ]);
    assert_eq!(without, "failed/failed", "without the unregister: {log}");
    assert!(
        log.contains("already exists"),
        "nspawn says why: machined still holds the name: {log}"
    );

    let unregister = |m: &str| {
        format!("/usr/bin/busctl call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager UnregisterMachine s {m}")
    };
    // What hive-c0re unregister-machine does: unregister, and clear the directory through
    // which nspawn 256+ exports sockets (it removes it only when it exits cleanly).
    let heal = |m: &str| {
        format!(
            "/bin/sh -c '{}; umount -l /run/systemd/nspawn/unix-export/{m}; rmdir /run/systemd/nspawn/unix-export/{m}; true'",
            unregister(m)
        )
    };
    run("healed", Some(&heal("healed")));
    let with = kill_and_settle("healed");
    assert_eq!(
        with, "active/running",
        "with an ExecStopPost that unregisters"
    );
    assert_eq!(h.show("healed.service", "NRestarts"), "1");

    // From systemd 256 on, unregistering alone is not enough: the first restart refuses
    // the unix-export directory the killed nspawn left.
    let version = h.systemd_version();
    if version >= 256 {
        run("half", Some(&unregister("half")));
        let outcome = kill_and_settle("half");
        let log = h.run_ok(&[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-u",
            "half.service",
        ]);
        assert!(
            log.contains("exists already, refusing"),
            "systemd {version}: {outcome}: {log}"
        );
    }
}

/// What the daemon's watches rely on to leave a unit that is up unread (`hive/crash.rs`):
/// with a match on the first argument, the bus delivers only the Unit interface's
/// PropertiesChanged (not the Service interface's that comes with each change), and every
/// one of them carries ActiveState and SubState with their values, through a start, a crash
/// with its automatic restart, and a stop.
#[tokio::test(flavor = "current_thread")]
async fn each_unit_interface_change_carries_its_states_and_arg0_selects_it() {
    let h = bare();
    let conn = connect(&h).await;
    manager_call(&conn, "Subscribe").await.unwrap();
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.systemd1")
        .unwrap()
        .interface("org.freedesktop.DBus.Properties")
        .unwrap()
        .member("PropertiesChanged")
        .unwrap()
        .path("/org/freedesktop/systemd1/unit/probe_2eservice")
        .unwrap()
        .add_arg("org.freedesktop.systemd1.Unit")
        .unwrap()
        .build();
    let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    h.run_ok(&[
        "systemd-run",
        "--unit=probe",
        "-p",
        "Restart=on-failure",
        "-p",
        "RestartSec=200ms",
        "sleep",
        "1000",
    ]);
    h.run_ok(&["systemctl", "kill", "-s", "KILL", "probe"]);
    h.wait_for("probe restarted", Duration::from_secs(10), || {
        h.show("probe.service", "NRestarts") == "1"
            && h.show("probe.service", "SubState") == "running"
    });
    h.run_ok(&["systemctl", "stop", "probe"]);

    let mut states = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        stream.next(),
    )
    .await
    {
        let (iface, changed, _): (
            String,
            std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
            Vec<String>,
        ) = msg.body().deserialize().unwrap();
        assert_eq!(
            iface, "org.freedesktop.systemd1.Unit",
            "arg0 lets no other through"
        );
        let text = |k: &str| {
            changed
                .get(k)
                .and_then(|v| String::try_from(v.clone()).ok())
                .unwrap_or_else(|| panic!("{k} missing from a Unit change: {changed:?}"))
        };
        states.push(format!("{}/{}", text("ActiveState"), text("SubState")));
    }
    // Up, down to its restart, up again, and stopped: each seen with its states.
    for want in ["active/running", "auto-restart", "inactive/dead"] {
        assert!(
            states.iter().any(|s| s.contains(want)),
            "{want} not among {states:?}"
        );
    }
}
