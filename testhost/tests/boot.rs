//! Boots real test hosts: needs root and systemd-nspawn (Debian's systemd-container).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use testhost::{Options, TestHost};

/// target/debug (or wherever cargo put this crate's binary): bound into every host.
fn fs_read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_hive-testhost"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Alive and not a zombie (an exited child not yet reaped still has a /proc entry).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn ping_from_host(host: &TestHost) -> std::process::Output {
    Command::new("busctl")
        .arg(format!("--address={}", host.bus_address()))
        .args([
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.DBus.Peer",
            "Ping",
        ])
        .output()
        .expect("run busctl")
}

/// What must be true of a host that has been dropped: nothing of it is left on the machine.
fn assert_gone(name: &str, state: &Path, nspawn: u32, leader: u32) {
    // nspawn was our child and has been reaped, so its PID is free (or reused by another
    // program, but not by a live nspawn of this host).
    assert!(
        !alive(nspawn) || comm(nspawn) != "systemd-nspawn",
        "nspawn {nspawn} of {name} still alive"
    );
    assert!(
        !alive(leader) || comm(leader) != "systemd",
        "leader {leader} of {name} still alive"
    );
    assert!(
        !state.exists(),
        "state dir {} still exists",
        state.display()
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state = state.to_string_lossy();
    let leftovers: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&*state)).collect();
    assert!(leftovers.is_empty(), "leftover mounts: {leftovers:#?}");
    assert!(
        !Path::new("/run/systemd/nspawn/propagate")
            .join(name)
            .exists(),
        "leftover nspawn propagate dir for {name}"
    );
    for h in ["systemd", "unified", ""] {
        let cg = Path::new("/sys/fs/cgroup")
            .join(h)
            .join("hyperhive-testhost")
            .join(name);
        assert!(!cg.exists(), "leftover cgroup {}", cg.display());
    }
}

#[test]
fn boots_talks_and_tears_down() {
    let host = TestHost::boot(Options {
        bin_dir: Some(bin_dir()),
        ..Options::default()
    })
    .expect("boot");
    println!("{}: booted in {:?}", host.name(), host.boot_time());

    let state = host.run(&["systemctl", "is-system-running"]);
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    println!("{}: is-system-running -> {state}", host.name());
    assert!(
        state == "running" || state == "degraded",
        "system state {state:?}"
    );

    let ping = ping_from_host(&host);
    assert!(
        ping.status.success(),
        "Ping over {} failed: {}",
        host.bus_address(),
        String::from_utf8_lossy(&ping.stderr)
    );

    // The built binaries are at the same path inside as outside.
    let exe = env!("CARGO_BIN_EXE_hive-testhost");
    host.run_ok(&["test", "-x", exe]);
    assert_eq!(host.show("dbus.service", "ActiveState"), "active");
    assert_eq!(
        host.show("systemd-machined.service", "ActiveState"),
        "active"
    );
    assert!(!host.run(&["false"]).status.success());

    // Host-side systemctl against the container's bus.
    let ctl = host.ctl(&["systemctl", "show", "-P", "ActiveState", "dbus.service"]);
    assert_eq!(
        String::from_utf8_lossy(&ctl.stdout).trim(),
        "active",
        "{ctl:?}"
    );

    // The container's journal is readable from the host.
    let journal = Command::new("journalctl")
        .arg("-D")
        .arg(host.journal_dir())
        .args(["-u", "dbus.service", "-o", "cat", "--no-pager"])
        .output()
        .unwrap();
    assert!(journal.status.success(), "{journal:?}");

    let (name, dir, nspawn, leader) = (
        host.name().to_string(),
        host.state_dir().to_path_buf(),
        host.nspawn_pid(),
        host.leader(),
    );
    let t0 = std::time::Instant::now();
    drop(host);
    println!("{name}: torn down in {:?}", t0.elapsed());
    assert_gone(&name, &dir, nspawn, leader);
}

#[test]
fn panicking_test_still_tears_down() {
    let seen: Mutex<Option<(String, PathBuf, u32, u32)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let host = TestHost::boot(Options::default()).expect("boot");
        println!("{}: booted in {:?}", host.name(), host.boot_time());
        *seen.lock().unwrap() = Some((
            host.name().to_string(),
            host.state_dir().to_path_buf(),
            host.nspawn_pid(),
            host.leader(),
        ));
        assert!(alive(host.leader()));
        panic!("deliberate panic with a live test host");
    });
    assert!(result.is_err());
    let (name, dir, nspawn, leader) = seen.lock().unwrap().clone().expect("host booted");
    assert!(!alive(leader), "leader {leader} survived the panic");
    assert_gone(&name, &dir, nspawn, leader);
}

#[test]
fn two_hosts_at_once() {
    let hosts: Vec<TestHost> = std::thread::scope(|s| {
        let booting: Vec<_> = (0..2)
            .map(|_| s.spawn(|| TestHost::boot(Options::default()).expect("boot")))
            .collect();
        booting.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(hosts[0].name(), hosts[1].name());
    assert_ne!(hosts[0].bus_address(), hosts[1].bus_address());
    for host in &hosts {
        println!(
            "{}: booted (concurrently) in {:?}",
            host.name(),
            host.boot_time()
        );
        assert!(ping_from_host(host).status.success());
        assert_eq!(host.run_ok(&["hostname"]), host.name());
        host.wait_for("system running", Duration::from_secs(10), || {
            let out = host.run(&["systemctl", "is-system-running"]);
            matches!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "running" | "degraded"
            )
        });
    }
    // Each is its own machine.
    let id0 = hosts[0].run_ok(&["cat", "/etc/machine-id"]);
    let id1 = hosts[1].run_ok(&["cat", "/etc/machine-id"]);
    assert_ne!(id0, id1);
    // ...with its own cgroup tree, so same-named units in two hosts never share a cgroup.
    let cg = |h: &TestHost| fs_read(&format!("/proc/{}/cgroup", h.leader()));
    let (cg0, cg1) = (cg(&hosts[0]), cg(&hosts[1]));
    assert!(
        cg0.contains(&format!("hyperhive-testhost/{}", hosts[0].name())),
        "{cg0}"
    );
    assert!(
        cg1.contains(&format!("hyperhive-testhost/{}", hosts[1].name())),
        "{cg1}"
    );
    let gone: Vec<_> = hosts
        .iter()
        .map(|h| {
            (
                h.name().to_string(),
                h.state_dir().to_path_buf(),
                h.nspawn_pid(),
                h.leader(),
            )
        })
        .collect();
    drop(hosts);
    for (name, dir, nspawn, leader) in gone {
        assert_gone(&name, &dir, nspawn, leader);
    }
}

#[test]
fn failed_boot_reports_and_cleans_up() {
    let name = format!("hvt-fail-{}", std::process::id());
    let err = TestHost::boot(Options {
        name: Some(name.clone()),
        extra_binds: vec![("/nonexistent/hvt-source".into(), "/mnt/x".into())],
        ..Options::default()
    })
    .expect_err("nspawn cannot bind a missing source");
    let msg = format!("{err:#}");
    println!("{name}: failed as expected: {msg}");
    assert!(
        msg.contains("exited") && msg.contains("console.log"),
        "{msg}"
    );
    assert!(!testhost::state_dir(&name).exists());
    assert!(!Path::new("/run/systemd/nspawn/propagate")
        .join(&name)
        .exists());
}

/// A test process that dies without dropping its host (SIGKILL, Ctrl-C, abort) leaks it;
/// reap_stale(), run by the next boot, stops and removes it.
#[test]
fn host_of_dead_process_is_reaped() {
    if std::env::var_os("HVT_LEAK_A_HOST").is_some() {
        // Child run: boot, then exit without running destructors, like a killed test run.
        let host = TestHost::boot(Options::default()).expect("boot");
        println!("LEAKED {} {}", host.name(), host.leader());
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "host_of_dead_process_is_reaped",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HVT_LEAK_A_HOST", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let leaked = stdout
        .lines()
        .find_map(|l| Some(l.split_once("LEAKED ")?.1))
        .unwrap_or_else(|| panic!("child did not boot: {out:?}"));
    let (name, leader) = leaked.split_once(' ').unwrap();
    let leader: u32 = leader.parse().unwrap();
    // Another test's first boot() may reap it first (it also calls reap_stale), so this
    // checks the outcome rather than who did it.
    let reaped = testhost::reap_stale();
    println!("{name}: leaked by a dead process; reap_stale() -> {reaped:?}");
    assert!(
        !alive(leader) || comm(leader) != "systemd",
        "leader {leader} survived"
    );
    assert!(!testhost::state_dir(name).exists());
    assert!(!Path::new("/run/systemd/nspawn/propagate")
        .join(name)
        .exists());
}

#[test]
fn daemon_that_fails_fails_the_boot() {
    let tmp = TempDir(std::env::temp_dir().join(format!("hvt-bad-daemon-{}", std::process::id())));
    let system = tmp.0.join("units/systemd/system");
    fs::create_dir_all(&system).unwrap();
    fs::write(
        system.join("hive-c0re.service"),
        "[Service]\nType=notify\nExecStart=/bin/sh -c 'echo hive-c0re-stand-in giving up; exit 3'\n",
    )
    .unwrap();
    let err = TestHost::boot(Options {
        units_dir: Some(tmp.0.join("units")),
        start_daemon: true,
        ..Options::default()
    })
    .expect_err("the daemon exits");
    let msg = format!("{err:#}");
    println!("failed as expected: {msg}");
    assert!(msg.contains("giving up"), "{msg}");

    let err = TestHost::boot(Options {
        start_daemon: true,
        ..Options::default()
    })
    .expect_err("no hive-c0re.service to start");
    assert!(format!("{err:#}").contains("hive-c0re.service"), "{err:#}");
}

/// A units/ tree in install layout with a stand-in daemon: checks start_daemon waits for it,
/// ExecStart rewriting, the D-Bus/tmpfiles/sysusers binds, and extra binds across reboots.
#[test]
fn project_units_and_daemon() {
    let tmp = TempDir(std::env::temp_dir().join(format!("hvt-units-test-{}", std::process::id())));
    let tmp = &tmp.0;
    let _ = fs::remove_dir_all(tmp);
    let units = tmp.join("units");
    let persist = tmp.join("persist");
    for d in [
        "systemd/system",
        "dbus-1/system.d",
        "tmpfiles.d",
        "sysusers.d",
    ] {
        fs::create_dir_all(units.join(d)).unwrap();
    }
    fs::create_dir_all(&persist).unwrap();
    // The stand-in stays alive after READY=1 (systemd-notify would exit first, and systemd
    // drops notifications from processes that are already gone). It lives in the extra bind.
    fs::write(
        persist.join("fake-c0re.py"),
        r#"import os, socket, time
open("/var/lib/hive/boots", "a").write("boot\n")
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)
time.sleep(1e6)
"#,
    )
    .unwrap();
    fs::write(
        units.join("systemd/system/hive-c0re.service"),
        "[Unit]\nDescription=stand-in hive-c0re for testhost's own tests\n\
         [Service]\nType=notify\nExecStart=/usr/bin/python3 /var/lib/hive/fake-c0re.py\n",
    )
    .unwrap();
    fs::write(
        units.join("systemd/system/hive-rewrite.service"),
        "[Service]\nExecStart=-/usr/bin/hivectl --version\n",
    )
    .unwrap();
    fs::write(
        units.join("dbus-1/system.d/org.hyperhive.Test.conf"),
        "<busconfig><policy user=\"root\"><allow own=\"org.hyperhive.Test\"/></policy></busconfig>\n",
    )
    .unwrap();
    fs::write(
        units.join("tmpfiles.d/hive-test.conf"),
        "d /run/hive-tmpfiles-test 0755 root root -\n",
    )
    .unwrap();
    fs::write(
        units.join("sysusers.d/hive-test.conf"),
        "u hive-test-user - \"hive test\"\n",
    )
    .unwrap();

    for boot in 1..=2 {
        let host = TestHost::boot(Options {
            bin_dir: Some(bin_dir()),
            units_dir: Some(units.clone()),
            start_daemon: true,
            extra_binds: vec![(persist.clone(), "/var/lib/hive".into())],
            ..Options::default()
        })
        .expect("boot");
        println!(
            "{}: booted with daemon in {:?}",
            host.name(),
            host.boot_time()
        );
        // No waiting: boot() returned after the daemon's READY=1.
        assert_eq!(host.show("hive-c0re.service", "ActiveState"), "active");
        let unit = host.run_ok(&["cat", "/etc/systemd/system/hive-rewrite.service"]);
        let want = format!("ExecStart=-{}/hivectl --version", bin_dir().display());
        assert!(unit.contains(&want), "not rewritten: {unit}");
        host.run_ok(&["test", "-f", "/etc/dbus-1/system.d/org.hyperhive.Test.conf"]);
        host.run_ok(&["test", "-d", "/run/hive-tmpfiles-test"]);
        host.run_ok(&["getent", "passwd", "hive-test-user"]);
        assert_eq!(
            fs::read_to_string(persist.join("boots"))
                .unwrap()
                .lines()
                .count(),
            boot
        );
    }
}

/// Removed even when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
