//! The daemon at scale, on a real systemd test host: restart with N running agents (time
//! until `systemctl restart` returns, i.e. READY=1 after rediscovering all of them; then
//! until the startup reconcile has adopted every one and checked its harness; and
//! how many agents were restarted — must be 0), and the daemon's RSS; each beside the
//! same figure with no agents, in the same run. Also the time to create the N agents
//! (8 hivectl at a time). Prints a table; asserts no timings. Needs root.
//!
//! Raises `fs.inotify.max_user_instances` to 8192 while it runs (100 booted containers
//! need it; see benches/common), and puts it back at the end, on a panic and on Ctrl-C.
//!
//! cargo bench --bench scale [-- AGENTS[,AGENTS…]]   (default 100,200: the agents are
//! added to the ones running, and each count is measured in the same run)

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testhost::{Options, TestHost};

const RESTARTS: usize = 5;
const PARALLEL: usize = 8;

fn rss_kib(h: &TestHost) -> u64 {
    let pid = h.show("hive-c0re.service", "MainPID");
    let status = h.run_ok(&["cat", &format!("/proc/{pid}/status")]);
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in µs: the clock of systemd's `*TimestampMonotonic` and of journal
/// entries' `__MONOTONIC_TIMESTAMP` (the test host shares the machine's kernel).
fn monotonic_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
}

/// The startup reconciles finished so far: their count and the last one's monotonic time.
fn reconciles(h: &TestHost) -> (usize, u64) {
    let out = h.run_ok(&[
        "journalctl",
        "-o",
        "json",
        "--output-fields=__MONOTONIC_TIMESTAMP",
        "HIVE_EVENT=reconcile_finished",
        "HIVE_TRIGGER=startup",
    ]);
    let last = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["__MONOTONIC_TIMESTAMP"].as_str()?.parse().ok())
        .unwrap_or(0);
    (out.lines().count(), last)
}

/// The monotonic times (µs) of the old daemon's entries "stopping: SIGTERM" and its last
/// one ("stopping; agents keep running") after `since`.
fn stop_entries(h: &TestHost, since: u64) -> (u64, u64) {
    let out = h.run_ok(&[
        "journalctl",
        "-u",
        "hive-c0re.service",
        "-o",
        "json",
        "--output-fields=MESSAGE,__MONOTONIC_TIMESTAMP",
        "-n",
        "500",
    ]);
    let mut found = (0, 0);
    for v in out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let at: u64 = v["__MONOTONIC_TIMESTAMP"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if at < since {
            continue;
        }
        match v["MESSAGE"].as_str() {
            Some("hive-c0re stopping: SIGTERM") if found.0 == 0 => found.0 = at,
            Some("hive-c0re stopping; agents keep running") if found.1 == 0 => found.1 = at,
            _ => {}
        }
    }
    found
}

/// Whether the running daemon has said it finished the harness checks its startup
/// adoption deferred: that line after its last "ready" line.
fn deferred_checked(h: &TestHost) -> bool {
    let log = h.run_ok(&[
        "journalctl",
        "-u",
        "hive-c0re.service",
        "-o",
        "cat",
        "-n",
        "3000",
    ]);
    let lines: Vec<&str> = log.lines().collect();
    let ready = lines
        .iter()
        .rposition(|l| l.starts_with("hive-c0re ready on"));
    ready.is_some_and(|r| {
        lines[r..]
            .iter()
            .any(|l| l.starts_with("harness checks deferred by the startup adoption"))
    })
}

/// Where one restart's time went, from systemd's timestamps (µs, monotonic).
#[derive(Default, Clone)]
struct Phases {
    /// `systemctl restart` called → the old daemon gone, the new one forked.
    stop: Duration,
    /// Of `stop`: called → the old daemon logged SIGTERM (systemctl, the bus, systemd's job).
    signal: Duration,
    /// Of `stop`: SIGTERM → the old daemon's last entry (gives up its name, drains).
    drain: Duration,
    /// Of `stop`: its last entry → the new daemon forked (the exit, systemd's reaction).
    exit: Duration,
    /// forked → READY=1 (the daemon's own start-up; its spans say where).
    start: Duration,
    /// READY=1 → the startup reconcile finished (every agent adopted).
    adopt: Duration,
}

/// Each restart: until `systemctl restart` returned (READY=1), and until the daemon's
/// startup reconcile after it finished (every agent adopted, its harness checked), the
/// latter from the journal entry's own timestamp (the polling only finds it).
fn restarts(h: &TestHost) -> (Vec<Duration>, Vec<Duration>, Vec<Phases>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RESTARTS {
        // Five restarts in a row would trip systemd's start limit (5 in 10 s).
        h.run_ok(&["systemctl", "reset-failed", "hive-c0re.service"]);
        let (done, _) = reconciles(h);
        let t = Instant::now();
        let t_us = monotonic_us();
        h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
        let ready = t.elapsed();
        let finished = loop {
            let (n, last) = reconciles(h);
            if n > done {
                break last;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no reconcile after restart"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The harness checks the adoption deferred run after it: the next restart waits
        // for them (the daemon's steady state), or they would load its measurement and
        // never finish.
        while !deferred_checked(h) {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "no deferred harness checks after restart"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let ts = |p: &str| -> u64 { h.show("hive-c0re.service", p).parse().unwrap_or(0) };
        let us = |a: u64, b: u64| Duration::from_micros(b.saturating_sub(a));
        let (forked, ready_at) = (
            ts("InactiveExitTimestampMonotonic"),
            ts("ActiveEnterTimestampMonotonic"),
        );
        let (sigterm, last) = stop_entries(h, t_us);
        out.0.push(ready);
        out.1.push(us(t_us, finished));
        out.2.push(Phases {
            stop: us(t_us, forked),
            signal: us(t_us, sigterm),
            drain: us(sigterm, last),
            exit: us(last, forked),
            start: us(forked, ready_at),
            adopt: us(ready_at, finished),
        });
    }
    out
}

/// The daemon's own account of its last start: its start-up spans and the startup
/// reconcile's time per phase, summed over agents.
fn daemon_spans(h: &TestHost) -> Vec<String> {
    let log = h.run_ok(&[
        "journalctl",
        "-u",
        "hive-c0re.service",
        "-o",
        "cat",
        "-n",
        "2000",
    ]);
    let last = |needle: &str| {
        log.lines()
            .rfind(|l| l.contains(needle))
            .unwrap_or("")
            .to_string()
    };
    vec![
        last("start-up "),
        last("reconcile (startup) time per phase"),
        last("harness checks deferred by the startup adoption"),
    ]
}

fn phase_stats(p: &[Phases]) -> String {
    let p50 = |f: fn(&Phases) -> Duration| {
        let mut v: Vec<Duration> = p.iter().map(f).collect();
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    format!(
        "stop {:.1} (signal {:.1}, drain {:.1}, exit to fork {:.1}), start to READY=1 {:.1}, READY=1 to all adopted {:.1}",
        p50(|p| p.stop),
        p50(|p| p.signal),
        p50(|p| p.drain),
        p50(|p| p.exit),
        p50(|p| p.start),
        p50(|p| p.adopt)
    )
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:>5} {:>9.1} {:>9.1} {:>9.1}",
        v.len(),
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    )
}

fn main() {
    // Agent counts, ascending: each adds agents to the ones already running and measures
    // the restarts again (default 100 then 200, the second for the trend).
    let mut counts: Vec<usize> = std::env::args()
        .skip(1)
        .find(|a| a.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|a| a.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 200]);
    counts.sort();
    counts.dedup();
    // Raised before the test host boots; put back after it is torn down.
    let _inotify = common::InotifyLimit::raise(8192);
    let hivectl = env!("CARGO_BIN_EXE_hivectl");
    let h = TestHost::boot(Options {
        bin_dir: Some(Path::new(hivectl).parent().unwrap().to_path_buf()),
        units_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("units")),
        start_daemon: true,
        ..Default::default()
    })
    .expect("booting the test host");
    let name = h.name().to_string();
    common::on_signal(move || {
        let _ = testhost::down(&name);
    });

    let load_before = common::load_average();
    let (empty_restart, empty_reconciled, empty_phases) = restarts(&h);
    let empty_rss = rss_kib(&h);
    println!(
        "machine load average (1 min) at the start: {load_before}; no-agent baseline measured first"
    );

    let mut have = 0;
    for n in counts {
        let next = AtomicUsize::new(have);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..PARALLEL {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let name = format!("a{i}");
                    h.run_ok(&[
                        hivectl,
                        "create",
                        "-q",
                        &name,
                        "--root",
                        "/",
                        "--volatile",
                        "yes",
                    ]);
                });
            }
        });
        let created = t0.elapsed();
        let added = n - have;
        have = n;
        report(
            &h,
            n,
            added,
            created,
            (&empty_restart, &empty_reconciled, &empty_phases, empty_rss),
        );
    }
}

type Baseline<'a> = (&'a [Duration], &'a [Duration], &'a [Phases], u64);

/// Restarts the daemon with `n` agents running and prints the figures beside the
/// no-agent baseline.
fn report(h: &TestHost, n: usize, added: usize, created: Duration, base: Baseline<'_>) {
    let (empty_restart, empty_reconciled, empty_phases, empty_rss) = base;
    let ids = |h: &TestHost| -> Vec<String> {
        (0..n)
            .map(|i| h.show(&format!("hive-agent-a{i}.service"), "InvocationID"))
            .collect()
    };
    let load_before = common::load_average();
    let before = ids(h);
    let (loaded_restart, loaded_reconciled, loaded_phases) = restarts(h);
    let spans = daemon_spans(h);
    let after = ids(h);
    let restarted = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    // Let the post-READY harness checks settle before reading memory.
    std::thread::sleep(Duration::from_secs(2));
    let loaded_rss = rss_kib(h);

    println!();
    println!("=== {n} running agents ===");
    println!(
        "{added} agents created ({PARALLEL} hivectl at a time, each waiting for its harness) in {:.1} s: {:.0} ms per agent",
        created.as_secs_f64(),
        created.as_secs_f64() * 1000.0 / added as f64
    );
    println!(
        "{:<48} {:>5} {:>9} {:>9} {:>9}",
        "systemctl restart hive-c0re (ms)", "n", "min", "p50", "max"
    );
    println!(
        "{:<48} {}",
        format!("hyperhive with {n} running agents"),
        stats(loaded_restart)
    );
    println!(
        "{:<48} {}",
        "baseline: no agents",
        stats(empty_restart.to_vec())
    );
    println!(
        "{:<48} {}",
        format!("... until its reconcile adopted all {n}"),
        stats(loaded_reconciled)
    );
    println!(
        "{:<48} {}",
        "... baseline: no agents",
        stats(empty_reconciled.to_vec())
    );
    println!(
        "phases, p50 ms (systemd's timestamps): {n} agents: {}",
        phase_stats(&loaded_phases)
    );
    println!(
        "phases, p50 ms (systemd's timestamps): no agents: {}",
        phase_stats(empty_phases)
    );
    for line in spans {
        println!("daemon's last start, its own spans: {line}");
    }
    println!("agents restarted by the {RESTARTS} daemon restarts: {restarted} of {n}");
    println!(
        "machine load average (1 min): {load_before} before these restarts, {} after",
        common::load_average()
    );
    println!(
        "daemon RSS: {:.1} MiB with {n} agents, {:.1} MiB with none",
        loaded_rss as f64 / 1024.0,
        empty_rss as f64 / 1024.0
    );
}
