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
//! cargo bench --bench scale [-- AGENTS]   (default 100)

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

fn reconciles(h: &TestHost) -> usize {
    h.run_ok(&[
        "journalctl",
        "-o",
        "cat",
        "HIVE_EVENT=reconcile_finished",
        "HIVE_TRIGGER=startup",
    ])
    .lines()
    .count()
}

/// Each restart: until `systemctl restart` returned (READY=1), and until the daemon's
/// startup reconcile after it finished (every agent adopted, its harness checked).
fn restarts(h: &TestHost) -> (Vec<Duration>, Vec<Duration>) {
    (0..RESTARTS)
        .map(|_| {
            // Five restarts in a row would trip systemd's start limit (5 in 10 s).
            h.run_ok(&["systemctl", "reset-failed", "hive-c0re.service"]);
            let done = reconciles(h);
            let t = Instant::now();
            h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
            let ready = t.elapsed();
            while reconciles(h) == done {
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "no reconcile after restart"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            (ready, t.elapsed())
        })
        .unzip()
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
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
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

    let (empty_restart, empty_reconciled) = restarts(&h);
    let empty_rss = rss_kib(&h);

    let next = AtomicUsize::new(0);
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

    let ids = |h: &TestHost| -> Vec<String> {
        (0..n)
            .map(|i| h.show(&format!("hive-agent-a{i}.service"), "InvocationID"))
            .collect()
    };
    let before = ids(&h);
    let (loaded_restart, loaded_reconciled) = restarts(&h);
    let after = ids(&h);
    let restarted = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    // Let the post-READY harness checks settle before reading memory.
    std::thread::sleep(Duration::from_secs(2));
    let loaded_rss = rss_kib(&h);

    println!(
        "{n} agents created ({PARALLEL} hivectl at a time, each waiting for its harness) in {:.1} s: {:.0} ms per agent",
        created.as_secs_f64(),
        created.as_secs_f64() * 1000.0 / n as f64
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
    println!("{:<48} {}", "baseline: no agents", stats(empty_restart));
    println!(
        "{:<48} {}",
        format!("... until its reconcile adopted all {n}"),
        stats(loaded_reconciled)
    );
    println!(
        "{:<48} {}",
        "... baseline: no agents",
        stats(empty_reconciled)
    );
    println!("agents restarted by the {RESTARTS} daemon restarts: {restarted} of {n}");
    println!(
        "daemon RSS: {:.1} MiB with {n} agents, {:.1} MiB with none",
        loaded_rss as f64 / 1024.0,
        empty_rss as f64 / 1024.0
    );
}
