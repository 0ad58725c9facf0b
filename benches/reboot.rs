//! Bringing the hive back after a reboot, on a real systemd test host: N declared agents
//! run, the test host is torn down (a power cut) and booted again with the same state and
//! config roots, and the daemon's startup reconcile creates every agent. Reported: boot to
//! the daemon's READY=1, READY=1 to every container unit active, to every harness connected
//! to its socket, and the reconcile's own duration (`HIVE_DURATION_MS`); beside them, from
//! the same run, systemd's own account of each container's boot (InactiveExitTimestamp →
//! ActiveEnterTimestamp: nspawn started → READY=1 from the container's systemd), the floor
//! under any orchestrator. Prints a table; asserts no timings. Needs root.
//!
//! N booted containers need `fs.inotify.max_user_instances` above the kernel's default 128
//! (about 20 agents exhaust it): the bench raises it to 8192 while it runs and puts the
//! old value back as benches/common's guard does (never under a neighbour's test host).
//!
//! cargo bench --bench reboot [-- AGENTS [ROUNDS]]   (default 20 agents, 3 rounds)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testhost::{Options, TestHost};

mod common;

struct Disk {
    _dir: tempfile::TempDir,
    state: PathBuf,
    config: PathBuf,
}

fn boot(disk: &Disk) -> TestHost {
    let hivectl = env!("CARGO_BIN_EXE_hivectl");
    TestHost::boot(Options {
        bin_dir: Some(Path::new(hivectl).parent().unwrap().to_path_buf()),
        units_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("units")),
        start_daemon: true,
        extra_binds: vec![
            (disk.state.clone(), "/var/lib/hyperhive".into()),
            (disk.config.clone(), "/etc/hyperhive".into()),
        ],
        ..Default::default()
    })
    .expect("booting the test host")
}

fn count(h: &TestHost, argv: &[&str], needles: &[&str]) -> usize {
    h.run_ok(argv)
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// Agent units systemd reports active/running.
fn running(h: &TestHost) -> usize {
    count(
        h,
        &[
            "systemctl",
            "list-units",
            "--no-legend",
            "--plain",
            "--state=running",
            "hive-agent-*",
        ],
        &["hive-agent-"],
    )
}

/// Agent sockets with a connected harness, daemon side.
fn connected(h: &TestHost) -> usize {
    count(
        h,
        &["ss", "-xpH", "state", "connected"],
        &["/hive.sock ", "\"hive-c0re\""],
    )
}

fn wait(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(300), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// From now: when every container is active, and when every harness is connected.
fn wait_both(h: &TestHost, n: usize) -> (Duration, Duration) {
    let t = Instant::now();
    let (mut active, mut harness) = (None, None);
    wait("every container active and every harness connected", || {
        if active.is_none() && running(h) == n {
            active = Some(t.elapsed());
        }
        if harness.is_none() && connected(h) == n {
            harness = Some(t.elapsed());
        }
        active.is_some() && harness.is_some()
    });
    (active.unwrap(), harness.unwrap())
}

/// systemd's own per-container boot times (µs timestamps of each unit).
fn container_boots(h: &TestHost, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let unit = format!("hive-agent-a{i}.service");
            let ts = |p: &str| -> f64 {
                h.show(&unit, &format!("{p}Monotonic"))
                    .parse()
                    .unwrap_or(0.0)
            };
            (ts("ActiveEnterTimestamp") - ts("InactiveExitTimestamp")) / 1000.0
        })
        .collect()
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let n = args.next().unwrap_or(20);
    let rounds = args.next().unwrap_or(3);
    // Raised before the first boot; put back after the last teardown (see benches/common).
    let _inotify = common::InotifyLimit::raise(8192);

    let dir = tempfile::Builder::new()
        .prefix("hh-bench-reboot-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let disk = Disk {
        state: dir.path().join("state"),
        config: dir.path().join("config"),
        _dir: dir,
    };
    std::fs::create_dir_all(disk.config.join("agents")).unwrap();
    std::fs::create_dir_all(&disk.state).unwrap();
    for i in 0..n {
        std::fs::write(
            disk.config.join(format!("agents/a{i}.toml")),
            "root = \"/\"\nvolatile = \"yes\"\n",
        )
        .unwrap();
    }

    // The first boot creates them all (its own startup reconcile); the rounds are reboots.
    let mut h = boot(&disk);
    wait("first boot: all agents connected", || {
        running(&h) == n && connected(&h) == n
    });

    let mut rows = Vec::new();
    for round in 0..rounds {
        drop(h);
        let t0 = Instant::now();
        h = boot(&disk);
        let ready = t0.elapsed();
        let (active, harnesses) = wait_both(&h, n);
        let (active, harnesses) = (ready + active, ready + harnesses);
        let finished = h.run_ok(&[
            "journalctl",
            "-o",
            "cat",
            "HIVE_EVENT=reconcile_finished",
            "HIVE_TRIGGER=startup",
        ]);
        let reconcile_ms: f64 = h
            .run_ok(&[
                "journalctl",
                "-o",
                "json",
                "HIVE_EVENT=reconcile_finished",
                "HIVE_TRIGGER=startup",
            ])
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["HIVE_DURATION_MS"].as_str()?.parse().ok())
            .unwrap_or(f64::NAN);
        // One agent_created per agent in this boot, each agent once: a reboot that made
        // an agent twice (or forgot one) is not a result to time.
        let mut created_for: Vec<String> = h
            .run_ok(&["journalctl", "-o", "json", "HIVE_EVENT=agent_created"])
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("journal json");
                v["HIVE_AGENT"].as_str().unwrap_or("").to_owned()
            })
            .collect();
        created_for.sort();
        let mut want: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
        want.sort();
        assert_eq!(
            created_for, want,
            "round {round}: one agent_created per agent"
        );
        let created = created_for.len();
        let boots = container_boots(&h, n);
        eprintln!("round {round}: {}", finished.trim());
        rows.push((
            ready,
            active,
            harnesses,
            reconcile_ms,
            created,
            p50(boots.clone()),
            boots.iter().cloned().fold(0.0, f64::max),
        ));
    }
    drop(h);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("\n{n} agents after a reboot, {rounds} rounds (ms)");
    println!(
        "{:>5} {:>10} {:>12} {:>12} {:>10} {:>8} {:>14} {:>14}",
        "round",
        "READY=1",
        "all active",
        "all harness",
        "reconcile",
        "created",
        "sd boot p50",
        "sd boot max"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:>5} {:>10.0} {:>12.0} {:>12.0} {:>10.0} {:>8} {:>14.0} {:>14.0}",
            i,
            ms(r.0),
            ms(r.1),
            ms(r.2),
            r.3,
            r.4,
            r.5,
            r.6
        );
    }
    println!(
        "\nREADY=1: test host boot until hive-c0re said READY=1; all active / all harness: \
         from the same start; reconcile: HIVE_DURATION_MS of its startup reconcile; \
         created: agent_created entries (checked: one per agent); sd boot: systemd's own \
         InactiveExit→ActiveEnter of each container unit (nspawn start → container READY=1)."
    );
}
