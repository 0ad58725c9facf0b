//! The daemon's own records are never silenced by agents' events (issue 24): the issue's
//! experiment as a test. journald's budget is lowered to model a bigger hive (1,000 per
//! 120 s, as an admin might set it), several agents flood events at their allowed rate,
//! and meanwhile an admin approves a fourth agent's request and a neighbour's container is
//! killed. Every approval record and the crash must be in the journal, counted.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// Asks once for /opt/approved/bin on its PATH (approvals.rs has the same stand-in).
const ASKING: &str = r#"case ":$PATH:" in
  *:/opt/approved/bin:*) ;;
  *) hive-harness request-approval spec_change '{"path":["/opt/approved/bin"]}' > /state/requested ;;
esac
exec sleep infinity"#;

const FLOOD_FOR: Duration = Duration::from_secs(30);

fn count(h: &TestHost, matches: &[&str]) -> usize {
    entries(h, matches).len()
}

#[test]
fn a_flood_of_agents_events_keeps_every_approval_and_crash_record() {
    let h = hive();
    h.run_ok(&[
        "sh",
        "-c",
        "mkdir -p /etc/systemd/journald.conf.d && printf '[Journal]\\nRateLimitIntervalSec=120s\\nRateLimitBurst=1000\\n' \
         > /etc/systemd/journald.conf.d/50-budget.conf && systemctl restart systemd-journald",
    ]);
    // Deliberate, not journald's default: the unit's own limit is what holds.
    assert_eq!(h.show("hive-c0re.service", "LogRateLimitBurst"), "20000");
    assert_eq!(
        h.show("hive-c0re.service", "LogRateLimitIntervalUSec"),
        "30s"
    );

    let flooders = ["fa", "fb", "fc"];
    for f in flooders {
        h.create(f, &[]);
    }
    h.create("victim", &[]);
    h.create("asker", &["--harness", "sh", "-c", ASKING]);
    let mut id = String::new();
    h.wait_for("asker's request", Duration::from_secs(15), || {
        id = state_file(&h, "asker", "requested");
        !id.is_empty()
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let floods: Vec<_> = flooders
        .iter()
        .flat_map(|f| [socket_path(&h, f), socket_path(&h, f)])
        .map(|path| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                s.write_all(b"{\"type\":\"hello\",\"version\":1}\n")
                    .unwrap();
                r.read_line(&mut line).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let msg = format!(
                        "{{\"type\":\"event\",\"name\":\"flood\",\"data\":{{\"i\":{i}}}}}\n"
                    );
                    s.write_all(msg.as_bytes()).unwrap();
                    line.clear();
                    r.read_line(&mut line).expect("a reply, however late");
                    assert!(line.contains("\"ok\""), "{line}");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let t0 = Instant::now();

    // Meanwhile: an admin's approval (approved, applied by a rebuild) and a crash.
    std::thread::sleep(Duration::from_secs(8));
    let approved = h.hivectl_ok(&["approve", &id]);
    assert!(approved.contains("applied"), "{approved}");
    std::thread::sleep(Duration::from_secs(4));
    kill_container_and_await_restart(&h, "victim");
    let elapsed_to_crash = t0.elapsed();
    if let Some(rest) = FLOOD_FOR.checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);

    // Counted in the journal: every record of the daemon's own is there.
    let approval = format!("HIVE_APPROVAL_ID={id}");
    h.wait_for("the flood written", Duration::from_secs(20), || {
        count(&h, &["HIVE_EVENT=agent_event", "HIVE_AGENT_EVENT=flood"]) >= sent
    });
    let kept = count(&h, &["HIVE_EVENT=agent_event", "HIVE_AGENT_EVENT=flood"]);
    let approved_n = count(&h, &["HIVE_EVENT=approval_approved", &approval]);
    let applied_n = count(&h, &["HIVE_EVENT=approval_applied", &approval]);
    let crashes = count(&h, &["HIVE_EVENT=container_crash", "HIVE_AGENT=victim"]);
    let suppressed = h
        .run_ok(&[
            "journalctl",
            "-u",
            "systemd-journald",
            "-o",
            "cat",
            "--no-pager",
        ])
        .lines()
        .filter(|l| l.contains("Suppressed") && l.contains("hive-c0re"))
        .count();
    eprintln!(
        "figures: {sent} events sent by 3 agents in {seconds:.1} s ({:.0}/s), {kept} kept; \
         approval #{id}: {approved_n} approved, {applied_n} applied; victim crashes: {crashes} \
         (killed at {elapsed_to_crash:?}); journald suppressions of hive-c0re: {suppressed}",
        sent as f64 / seconds
    );
    assert_eq!(approved_n, 1);
    assert_eq!(applied_n, 1);
    assert_eq!(crashes, 1);
    assert_eq!(kept, sent, "agents' events are slowed down, never dropped");
    // journald's global budget (1,000 per 120 s) would have dropped most of this: the
    // unit's own limit is the one that held.
    assert_eq!(suppressed, 0);
    // The hive's budget held: 200 a second (and a burst of 400) for all agents together.
    assert!(
        (sent as f64) <= 200.0 * seconds + 400.0 + 200.0,
        "{sent} events in {seconds:.1} s"
    );
}
