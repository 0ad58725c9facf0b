//! Listing approvals with 100,000 rows in the store, on a real systemd test host: the
//! first page (`busctl call … ListApprovalsPage`, and `hivectl approvals --json` of the
//! pending ones), and the whole list streamed page by page (`hivectl approvals --all
//! --json`), whose row count is checked. Prints a table and the largest reply; asserts
//! the count and that no reply nears the bus limit, nothing about time. Needs root.
//!
//! An agent may have only 32 pending requests, so the store is filled directly with
//! SQLite (as years of decided approvals would leave it): 32 pending rows of the agent
//! `bench`, the rest decided.
//!
//! cargo bench --bench approvals_api [-- ROWS]

use std::path::Path;
use std::time::{Duration, Instant};

use testhost::{Options, TestHost};

const RUNS: usize = 10;

fn main() {
    let rows: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let bin = Path::new(env!("CARGO_BIN_EXE_hivectl"))
        .parent()
        .unwrap()
        .to_path_buf();
    let hivectl = env!("CARGO_BIN_EXE_hivectl");
    let h = TestHost::boot(Options {
        bin_dir: Some(bin),
        units_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("units")),
        start_daemon: true,
        ..Default::default()
    })
    .expect("booting the test host");
    h.run_ok(&[
        hivectl,
        "create",
        "-q",
        "bench",
        "--root",
        "/",
        "--volatile",
        "yes",
    ]);

    // Filled inside the test host with its sqlite3 (SQLite resolves /proc/PID/root to the
    // caller's own root, so the file cannot be opened from out here). One statement, one
    // transaction; times as a long-running hive would have them.
    let t0 = Instant::now();
    let pending = 32.min(rows);
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {rows}) \
         INSERT INTO approvals (agent, kind, payload, status, note, decided_by, created_at, \
         decided_at, finished_at) \
         SELECT CASE WHEN i >= {rows} - {pending} THEN 'bench' ELSE 'a' || (i % 50) END, \
         'spec_change', '{{\"env\":{{\"K' || i || '\":\"value ' || i || '\"}}}}', \
         CASE WHEN i >= {rows} - {pending} THEN 'pending' WHEN i % 3 = 0 THEN 'denied' \
         ELSE 'applied' END, \
         CASE WHEN i % 3 = 0 AND i < {rows} - {pending} THEN 'not now' END, \
         CASE WHEN i < {rows} - {pending} THEN 'uid 0' END, \
         1700000000000000 + i, \
         CASE WHEN i < {rows} - {pending} THEN 1700000000000000 + i END, \
         CASE WHEN i < {rows} - {pending} THEN 1700000000000000 + i END FROM n;"
    );
    h.run_ok(&[
        "sqlite3",
        "-cmd",
        ".timeout 5000",
        "/var/lib/hyperhive/hive.sqlite",
        &sql,
    ]);
    let fill = t0.elapsed();

    let time = |argv: &[&str]| -> (Vec<Duration>, Vec<u8>) {
        let mut out = Vec::new();
        let times = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                let o = h.run(argv);
                let d = t.elapsed();
                assert!(
                    o.status.success(),
                    "{argv:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                out = o.stdout;
                d
            })
            .collect();
        (times, out)
    };
    let page = |after: &str| {
        vec![
            "busctl",
            "call",
            "org.hyperhive.Hive1",
            "/org/hyperhive/hive1",
            "org.hyperhive.Hive1.Manager",
            "ListApprovalsPage",
            "bxu",
            "true",
            after,
            "0",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let first: Vec<String> = page("0");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let (raw_first, first_out) = time(&first);
    let (pending, pending_out) = time(&[hivectl, "approvals", "--json"]);
    let (all, all_out) = time(&[hivectl, "approvals", "--all", "--json"]);
    let floor = time(&["true"]).0;

    // The whole list came through, each row once, in order.
    let listed: serde_json::Value = serde_json::from_slice(&all_out).expect("JSON");
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), rows, "every row listed");
    assert!(listed
        .windows(2)
        .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    let pending_rows: serde_json::Value = serde_json::from_slice(&pending_out).unwrap();
    assert_eq!(pending_rows.as_array().unwrap().len(), 32.min(rows));
    // The largest reply: a full page, as busctl prints it (about the bus message's size).
    let largest = first_out.len();
    assert!(largest < 4 * 1024 * 1024 + 64 * 1024, "{largest} bytes");
    // The first-page-only ListApprovals of old clients is bounded the same way.
    let old = h.run_ok(&[
        "busctl",
        "call",
        "org.hyperhive.Hive1",
        "/org/hyperhive/hive1",
        "org.hyperhive.Hive1.Manager",
        "ListApprovals",
        "b",
        "true",
    ]);
    assert!(old.starts_with("a(xssssssxxx) 1000 "), "{}", &old[..40]);

    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let row = |what: &str, mut v: Vec<Duration>| {
        v.sort();
        println!(
            "{what:<64} {:>5} {:>8.1} {:>8.1} {:>8.1}",
            v.len(),
            ms(&v[0]),
            ms(&v[v.len() / 2]),
            ms(&v[v.len() - 1])
        );
    };
    println!(
        "store filled with {rows} approvals (32 pending) by SQLite in {:.1} s",
        fill.as_secs_f64()
    );
    println!(
        "{:<64} {:>5} {:>8} {:>8} {:>8}",
        format!("listing with {rows} approvals in the store (ms)"),
        "n",
        "min",
        "p50",
        "max"
    );
    row(
        "first page: busctl call ListApprovalsPage b true x 0 u 0 (1000 rows)",
        raw_first,
    );
    row(
        "hyperhive: hivectl approvals --json (32 pending, 1 page)",
        pending,
    );
    row(
        &format!("hyperhive: hivectl approvals --all --json ({rows} rows, streamed)"),
        all,
    );
    row("floor: running `true` the same way (nsenter)", floor);
    println!(
        "rows listed by --all: {}; largest reply (a full page, busctl text): {} KiB; pages: {}",
        listed.len(),
        largest / 1024,
        rows.div_ceil(1000)
    );
}
