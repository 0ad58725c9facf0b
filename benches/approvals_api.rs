//! `hivectl approvals --json` with 10,000 approvals, on a real systemd test host, against
//! a raw `busctl call … ListApprovals` of the same daemon in the same run (the D-Bus cost
//! alone). Prints a table; asserts nothing about time, but every timed run must return
//! all the rows. Needs root (boots a test host).
//!
//! cargo bench --bench approvals_api [-- ROWS]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use testhost::{Options, TestHost};

const RUNS: usize = 10;

fn main() {
    let rows: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
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

    // Fill the store through the agent's socket, as agents do.
    let t0 = Instant::now();
    let path = format!("/proc/{}/root/run/hyperhive/bench/hive.sock", h.leader());
    let mut s = UnixStream::connect(path).expect("agent socket");
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    s.write_all(b"{\"type\":\"hello\",\"version\":1}\n")
        .unwrap();
    r.read_line(&mut line).unwrap();
    for i in 0..rows {
        let req = format!(
            "{{\"type\":\"request_approval\",\"kind\":\"spec_change\",\"payload\":{{\"env\":{{\"K{i}\":\"value {i}\"}}}}}}\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("approval_pending"), "{line}");
    }
    let fill = t0.elapsed();

    // Every timed run is checked for what it must return: a fast answer with the wrong
    // number of rows is no result.
    let time = |argv: &[&str], check: &dyn Fn(&str)| -> Vec<Duration> {
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                let out = h.run(argv);
                let d = t.elapsed();
                assert!(
                    out.status.success(),
                    "{argv:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                check(&String::from_utf8_lossy(&out.stdout));
                d
            })
            .collect()
    };
    let ours = time(&[hivectl, "approvals", "--all", "--json"], &|out| {
        let v: serde_json::Value = serde_json::from_str(out).expect("approvals --json");
        assert_eq!(v.as_array().map(Vec::len), Some(rows), "rows from hivectl");
    });
    // busctl prints the reply's signature, then the array's length.
    let raw = time(
        &[
            "busctl",
            "call",
            "org.hyperhive.Hive1",
            "/org/hyperhive/hive1",
            "org.hyperhive.Hive1.Manager",
            "ListApprovals",
            "b",
            "true",
        ],
        &|out| {
            let n = out.split_whitespace().nth(1).and_then(|n| n.parse().ok());
            assert_eq!(n, Some(rows), "rows from busctl: {:.80}", out);
        },
    );
    let floor = time(&["true"], &|_| {});

    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let row = |what: &str, mut v: Vec<Duration>| {
        v.sort();
        println!(
            "{what:<52} {:>5} {:>8.1} {:>8.1} {:>8.1}",
            v.len(),
            ms(&v[0]),
            ms(&v[v.len() / 2]),
            ms(&v[v.len() - 1])
        );
    };
    println!(
        "store filled with {rows} requests through the agent socket in {:.1} s",
        fill.as_secs_f64()
    );
    println!(
        "{:<52} {:>5} {:>8} {:>8} {:>8}",
        format!("listing {rows} approvals (ms)"),
        "n",
        "min",
        "p50",
        "max"
    );
    row("hyperhive: hivectl approvals --all --json", ours);
    row("baseline: busctl call ListApprovals (raw D-Bus)", raw);
    row("floor: running `true` the same way (nsenter)", floor);
}
