//! A daemon restart is invisible to admins: a verb issued while hive-c0re restarts, or
//! after it was killed and before systemd restarted it, waits at the bus (D-Bus
//! activation, units/dbus-1/system-services) instead of failing "hive-c0re is not
//! running"; a stopping daemon answers the calls it is serving before it exits. Only a
//! verb the daemon was serving when it was SIGKILLed may fail, saying it was cut (reads are
//! asked again). Judged by hivectl's exit codes and systemd's view of the units
//! (InvocationIDs, ActiveState).
//!
//! The figures line (`--nocapture`) gives the verbs run, the slowest, and the restarts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::*;

/// A stand-in for the agent's command: the harness connects and the command just waits.
const STAND_IN: &[&str] = &["--harness", "sleep", "infinity"];

fn create_args(name: &str) -> Vec<&str> {
    let mut args = vec!["create", name, "--root", "/", "--volatile", "yes"];
    args.extend_from_slice(STAND_IN);
    args
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn daemon_pid(h: &TestHost) -> String {
    h.show("hive-c0re.service", "MainPID")
}

/// One verb of the storm: what it was, how it ended, how long it took.
struct Ran {
    verb: String,
    started: Instant,
    ok: bool,
    took: Duration,
    err: String,
}

/// create (an agent's same spec again, and new agents), approve, list and approvals, in a
/// loop across two `systemctl restart hive-c0re` and two `kill -9` of the daemon: none fails
/// for the daemon being away; only one being served at a `kill -9` may be cut.
#[test]
fn verbs_wait_across_daemon_restarts_and_kills() {
    let h = hive();
    h.hivectl_ok(&create_args("alice"));
    h.hivectl_ok(&create_args("bob"));
    let bob = h.invocation("bob");
    let ids: Vec<i64> = (0..6)
        .map(|i| request_path(&h, "alice", &format!("/opt/p{i}/bin")))
        .collect();

    let done = AtomicBool::new(false);
    let faults = Mutex::new(Vec::<Instant>::new());
    let kills = Mutex::new(Vec::<Instant>::new());
    let ran = Mutex::new(Vec::<Ran>::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut ids = ids.iter();
            let mut fresh = 0;
            let mut round = 0u32;
            // Runs on a little after the last fault, so the last daemon serves some too,
            // and until every approval was decided.
            let mut after_done = 0;
            while after_done < 4 || ids.len() > 0 {
                if done.load(Ordering::SeqCst) {
                    after_done += 1;
                }
                let (verb, args): (String, Vec<String>) = match round % 5 {
                    0 => ("create bob (same spec)".into(), owned(&create_args("bob"))),
                    1 => (
                        "approvals".into(),
                        vec!["approvals".into(), "--json".into()],
                    ),
                    2 => match ids.next() {
                        Some(id) => (
                            format!("approve {id}"),
                            vec!["approve".into(), id.to_string()],
                        ),
                        None => (
                            "approvals --all".into(),
                            vec!["approvals".into(), "--all".into()],
                        ),
                    },
                    3 => ("list".into(), vec!["list".into()]),
                    _ if fresh < 4 => {
                        fresh += 1;
                        let name = format!("c{fresh}");
                        (format!("create {name}"), owned(&create_args(&name)))
                    }
                    _ => ("status bob".into(), vec!["status".into(), "bob".into()]),
                };
                round += 1;
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let start = Instant::now();
                let out = h.hivectl(&argv);
                ran.lock().unwrap().push(Ran {
                    verb,
                    started: start,
                    ok: out.status.success(),
                    took: start.elapsed(),
                    err: stderr(&out),
                });
            }
        });

        // The faults, while the verbs run: each lets a few verbs through first. Four starts
        // in a few seconds would trip systemd's start limit (5 in 10 s), which then refuses
        // the activation too (the verb fails after the bus's 25 s): that limit is not what
        // this test is about, so each fault begins with a reset-failed, as an admin would.
        let pause = || {
            std::thread::sleep(Duration::from_millis(1500));
            h.run_ok(&["systemctl", "reset-failed", "hive-c0re.service"]);
        };
        for _ in 0..2 {
            pause();
            eprintln!("fault injected: systemctl restart hive-c0re");
            faults.lock().unwrap().push(Instant::now());
            h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
        }
        for _ in 0..2 {
            pause();
            let pid = daemon_pid(&h);
            eprintln!("fault injected: kill -9 hive-c0re (pid {pid})");
            faults.lock().unwrap().push(Instant::now());
            kills.lock().unwrap().push(Instant::now());
            h.run_ok(&["kill", "-9", &pid]);
            h.wait_for(
                "hive-c0re back after kill -9",
                Duration::from_secs(30),
                || {
                    let now = daemon_pid(&h);
                    now != pid
                        && now != "0"
                        && h.show("hive-c0re.service", "ActiveState") == "active"
                },
            );
        }
        pause();
        done.store(true, Ordering::SeqCst);
    });

    let ran = ran.into_inner().unwrap();
    let kills = kills.into_inner().unwrap();
    // Cut: the daemon serving it was SIGKILLed (started before a kill, ended after it),
    // and hivectl said so.
    let cut = |r: &Ran| {
        r.err.contains("hive-c0re stopped before answering")
            && kills
                .iter()
                .any(|k| r.started <= *k && *k <= r.started + r.took)
    };
    let cut_count = ran.iter().filter(|r| !r.ok && cut(r)).count();
    let failed: Vec<String> = ran
        .iter()
        .filter(|r| !r.ok && !cut(r))
        .map(|r| format!("{}: {}", r.verb, r.err))
        .collect();
    let slowest = ran.iter().max_by_key(|r| r.took).unwrap();
    // Verbs that were running when a fault struck: the ones the test is about.
    let faults = faults.into_inner().unwrap();
    let crossed = ran
        .iter()
        .filter(|r| {
            faults
                .iter()
                .any(|f| r.started <= *f && *f <= r.started + r.took)
        })
        .count();
    eprintln!(
        "figures: {} verbs in {:.1}s ({crossed} across a fault), {} failed, {cut_count} cut by a kill -9; slowest {} {} ms",
        ran.len(),
        t0.elapsed().as_secs_f64(),
        failed.len(),
        slowest.verb,
        slowest.took.as_millis()
    );
    assert!(failed.is_empty(), "verbs failed: {failed:#?}");
    assert!(ran.len() >= 15, "too few verbs ran: {}", ran.len());
    assert!(crossed >= 2, "only {crossed} verbs ran across a fault");
    // Bounded: the bus holds a call at most its service_start_timeout (25 s).
    assert!(slowest.took < Duration::from_secs(30), "{}", slowest.verb);
    assert_eq!(h.show("hive-c0re.service", "ActiveState"), "active");
    // The daemon's restarts restarted no agent; each approval asked and answered is
    // decided (one cut before the decision was stored may still be pending).
    assert_eq!(h.invocation("bob"), bob);
    let approved: Vec<String> = ran
        .iter()
        .filter(|r| r.ok && r.verb.starts_with("approve "))
        .map(|r| r.verb.trim_start_matches("approve ").to_string())
        .collect();
    let all: serde_json::Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
    for id in &ids {
        let a = all
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"].as_i64() == Some(*id))
            .unwrap();
        let status = a["status"].as_str().unwrap();
        if approved.contains(&id.to_string()) {
            assert!(
                ["applied", "approved"].contains(&status),
                "approval {id}: {a}"
            );
        } else {
            assert!(
                ["applied", "approved", "pending"].contains(&status),
                "approval {id}: {a}"
            );
        }
    }
    for agent in ["alice", "bob", "c1"] {
        assert_eq!(listeners(&h, agent), 1, "{agent}");
    }
}

/// A daemon an admin stopped stays stopped for the reads (list and status read systemd),
/// and is started again by a verb that needs it, as any bus-activated service is. (Masking
/// the unit keeps it down; the test host cannot mask it: its units are in /etc.)
#[test]
fn a_stopped_daemon_stays_stopped_for_reads_and_is_started_by_a_verb() {
    let h = hive();
    h.hivectl_ok(&create_args("alice"));
    h.run_ok(&["systemctl", "stop", "hive-c0re.service"]);
    let list = h.hivectl_ok(&["list"]);
    assert!(list.contains("alice") && list.contains("active"), "{list}");
    assert!(h.hivectl_ok(&["status", "alice"]).contains("running"));
    assert_eq!(h.show("hive-c0re.service", "ActiveState"), "inactive");

    let out = h.hivectl_ok(&["stop", "alice"]);
    assert!(out.contains("stopped"), "{out}");
    assert_eq!(h.show("hive-c0re.service", "ActiveState"), "active");
    assert_eq!(h.unit_show("alice", "ActiveState"), "inactive");
}
