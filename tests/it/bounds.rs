//! Every agent is bounded by default (issue 24): the daemon-wide defaults in
//! `/etc/hyperhive/hive.toml`, the shipped ones derived from the host's memory, explicit
//! spec limits kept, the hive.slice ceiling. Judged by `systemctl show` inside the test host.
//! Enforcement, by doing the thing, is in `bounds_enforced.rs`.

use std::time::Duration;

use crate::common::*;

const MIB: u64 = 1 << 20;

fn show_u64(h: &TestHost, unit: &str, prop: &str) -> u64 {
    let v = h.show(unit, prop);
    v.parse()
        .unwrap_or_else(|_| panic!("{unit} {prop}={v:?}: not a number"))
}

/// MemTotal of the test host's kernel (the machine's own), in bytes.
fn host_memory(h: &TestHost) -> u64 {
    let meminfo = h.run_ok(&["cat", "/proc/meminfo"]);
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("MemTotal");
    kib * 1024
}

pub fn write_defaults(h: &TestHost, toml: &str) {
    h.run_ok(&[
        "sh",
        "-c",
        &format!("mkdir -p /etc/hyperhive && printf '%s' '{toml}' > /etc/hyperhive/hive.toml"),
    ]);
}

fn restart_daemon(h: &TestHost) {
    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
}

#[test]
fn an_agent_created_without_limits_gets_the_defaults_and_explicit_limits_stay() {
    let h = hive();
    // Shipped defaults: a quarter of the host's memory, 4096 tasks, CPUWeight 100.
    h.create("carol", &[]);
    let unit = "hive-agent-carol.service";
    let memory = host_memory(&h);
    assert_eq!(show_u64(&h, unit, "MemoryMax"), memory / 4);
    assert!(show_u64(&h, unit, "MemoryHigh") < memory / 4);
    assert_eq!(show_u64(&h, unit, "MemoryHigh"), memory / 4 * 9 / 10);
    assert_eq!(show_u64(&h, unit, "TasksMax"), 4096);
    assert_eq!(show_u64(&h, unit, "CPUWeight"), 100);
    assert_eq!(h.show(unit, "OOMPolicy"), "continue");

    // The admin's defaults: taken at the daemon's start; an agent on the defaults is
    // rebuilt to them by the startup reconcile (its plan drifted).
    write_defaults(
        &h,
        "[agents]\nmemory_max = \"300M\"\ntasks_max = 77\ncpu_weight = 33\n",
    );
    let before = h.invocation("carol");
    restart_daemon(&h);
    h.wait_for(
        "carol rebuilt to the new defaults",
        Duration::from_secs(30),
        || h.show(unit, "TasksMax") == "77" && h.show(unit, "ActiveState") == "active",
    );
    assert_ne!(h.invocation("carol"), before);
    assert_eq!(show_u64(&h, unit, "MemoryMax"), 300 * MIB);
    assert_eq!(show_u64(&h, unit, "MemoryHigh"), 270 * MIB);
    assert_eq!(show_u64(&h, unit, "CPUWeight"), 33);

    h.create("alice", &[]);
    let alice = "hive-agent-alice.service";
    assert_eq!(show_u64(&h, alice, "MemoryMax"), 300 * MIB);
    assert_eq!(show_u64(&h, alice, "TasksMax"), 77);
    assert_eq!(show_u64(&h, alice, "CPUWeight"), 33);

    // Explicit limits are the spec's, whatever the defaults say.
    h.create(
        "bob",
        &[
            "--memory-max",
            "1G",
            "--tasks-max",
            "500",
            "--cpu-weight",
            "200",
        ],
    );
    let bob = "hive-agent-bob.service";
    assert_eq!(show_u64(&h, bob, "MemoryMax"), 1024 * MIB);
    assert_eq!(show_u64(&h, bob, "MemoryHigh"), 1024 * MIB * 9 / 10);
    assert_eq!(show_u64(&h, bob, "TasksMax"), 500);
    assert_eq!(show_u64(&h, bob, "CPUWeight"), 200);
    // ...and their plan does not move when the defaults do.
    let bob_before = h.invocation("bob");
    write_defaults(&h, "[agents]\ntasks_max = 78\n");
    restart_daemon(&h);
    h.wait_for("alice rebuilt", Duration::from_secs(30), || {
        h.show(alice, "TasksMax") == "78" && h.show(alice, "ActiveState") == "active"
    });
    assert_eq!(h.invocation("bob"), bob_before);
}

#[test]
fn hive_slice_leaves_the_host_room() {
    let h = hive();
    h.create("alice", &[]);
    let memory = host_memory(&h);
    let slice_max = show_u64(&h, "hive.slice", "MemoryMax");
    // 90 % of the host's memory as systemd reckons it (its page rounding aside).
    assert!(
        slice_max < memory && slice_max > memory / 100 * 85,
        "hive.slice MemoryMax={slice_max} of {memory}"
    );
    assert!(show_u64(&h, "hive.slice", "MemoryHigh") < slice_max);
    let tasks = show_u64(&h, "hive.slice", "TasksMax");
    let threads_max: u64 = h
        .run_ok(&["cat", "/proc/sys/kernel/threads-max"])
        .parse()
        .unwrap();
    let pid_max: u64 = h
        .run_ok(&["cat", "/proc/sys/kernel/pid_max"])
        .parse()
        .unwrap();
    let kernel = threads_max.min(pid_max);
    assert!(
        tasks < kernel && tasks >= kernel / 100 * 79,
        "hive.slice TasksMax={tasks} of {kernel}"
    );
    // The daemon is outside the slice: the hive's ceiling never starves it.
    assert_eq!(h.show("hive-c0re.service", "Slice"), "system.slice");
}

#[test]
fn a_bad_defaults_file_stops_the_daemon_in_one_line() {
    let h = hive();
    write_defaults(&h, "[agents]\ntasks_max = 0\n");
    let out = h.run(&["systemctl", "restart", "hive-c0re.service"]);
    assert!(!out.status.success());
    let log = daemon_log(&h);
    assert!(
        log.contains("/etc/hyperhive/hive.toml: agents.tasks_max: 0: must be 1..="),
        "{log}"
    );
}

#[test]
fn the_disk_bound_is_shown_and_never_silently_unenforced() {
    let h = hive();
    // Said at the daemon's start, every start.
    let log = daemon_log(&h);
    assert!(
        log.contains("disk bounds (disk_max) are not enforced on this host"),
        "{log}"
    );
    assert_bad_input(
        &h.hivectl(&[
            "create",
            "x",
            "--root",
            "/",
            "--volatile",
            "yes",
            "--disk-max",
            "1M",
        ]),
        "disk_max",
    );
    h.create("alice", &["--disk-max", "100M"]);
    let wrote = h.in_agent(
        "alice",
        &[
            "sh",
            "-c",
            "head -c 5242880 /dev/urandom > /state/blob && sync && echo done",
        ],
    );
    assert!(String::from_utf8_lossy(&wrote.stdout).contains("done"));
    let status = h.hivectl_ok(&["status", "alice"]);
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with("Disk:"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        line.contains("in use (state, credentials, journal), max 100.0M  NOT ENFORCED"),
        "{line}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&h.hivectl_ok(&["status", "alice", "--json"])).unwrap();
    let used = json["disk"]["used"].as_u64().unwrap();
    assert!(used >= 5 << 20, "{used}");
    assert_eq!(json["disk"]["max"], 100u64 << 20);
    assert_eq!(json["disk"]["enforced"], false);
    // An agent without a disk_max gets the default bound, shown the same way.
    h.create("bob", &[]);
    let status = h.hivectl_ok(&["status", "bob"]);
    assert!(status.contains("max 10.0G  NOT ENFORCED"), "{status}");
}
