//! Attacks from inside an agent, on a real test host. An agent is root in its container
//! and runs whatever it likes; each test here is one thing it tries, and asserts what
//! systemd, machinectl and the filesystem say afterwards — not what hyperhive says.

use std::time::{Duration, Instant};

use crate::common::*;

/// Runs a shell script inside the agent's container, as its root.
fn agent_sh(h: &TestHost, agent: &str, script: &str) -> std::process::Output {
    h.in_agent(agent, &["sh", "-c", script])
}

/// Whether the test host's own systemd has a unit of that name loaded.
fn host_has_unit(h: &TestHost, unit: &str) -> bool {
    h.show(unit, "LoadState") != "not-found"
}

fn restart_daemon(h: &TestHost) {
    h.run_ok(&["systemctl", "restart", "hive-c0re.service"]);
}

/// The agent's view of its own user namespace: `inside outside count`.
fn uid_map(h: &TestHost, agent: &str) -> Vec<u64> {
    let out = agent_sh(h, agent, "cat /proc/self/uid_map");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn an_agent_is_not_host_root_and_its_files_stay_usable() {
    let h = hive();
    h.create("alice", &[]);
    // Container root is an unprivileged host range, not the identity map.
    let map = uid_map(&h, "alice");
    assert_eq!(map.len(), 3, "{map:?}");
    assert_eq!(map[0], 0);
    assert!(map[1] >= 0x80000 && map[2] == 65536, "{map:?}");
    // The leader's map as the host sees it agrees.
    let leader = h.run_ok(&["machinectl", "show", "h-alice", "-p", "Leader", "--value"]);
    let host_view = h.run_ok(&["cat", &format!("/proc/{leader}/uid_map")]);
    assert_eq!(
        host_view.split_whitespace().nth(1).unwrap(),
        map[1].to_string()
    );

    // hivectl status shows it.
    let status: serde_json::Value =
        serde_json::from_str(&h.hivectl_ok(&["status", "alice", "--json"])).unwrap();
    assert_eq!(status["user_namespace"]["host_uid"], map[1]);
    assert_eq!(status["user_namespace"]["count"], 65536);
    assert!(h
        .hivectl_ok(&["status", "alice"])
        .contains(&format!("container root is host uid {}", map[1])));

    // It still writes its state and credentials, and owns them inside.
    let out = agent_sh(
        &h,
        "alice",
        "echo note > /state/n && echo tok > /root/.claude/c && stat -c %u /state/n /root/.claude/c",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0\n0\n",
        "{}",
        stderr(&out)
    );
    // On the host the files sit in 0700 directories of root's: no other host user can
    // reach them, whatever modes the agent gives them.
    for dir in ["state", "claude"] {
        assert_eq!(
            h.run_ok(&[
                "stat",
                "-c",
                "%a %u",
                &format!("/var/lib/hyperhive/agents/alice/{dir}")
            ]),
            "700 0"
        );
    }
    // The range is stable for the agent (nspawn picks it from the machine name): a new
    // container of hers gets the same one, and her files still read as hers.
    h.hivectl_ok(&["restart", "alice"]);
    h.wait_active("alice");
    assert_eq!(uid_map(&h, "alice"), map, "the range after a restart");
    let out = agent_sh(&h, "alice", "stat -c %u /state/n && cat /state/n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0\nnote\n",
        "{}",
        stderr(&out)
    );
    // A setuid file planted in /state is out of every other host user's reach.
    agent_sh(
        &h,
        "alice",
        "cp /bin/true /state/suid && chmod 4755 /state/suid",
    );
    // (Through a shell: setpriv itself resolves its program before dropping privileges.)
    let nobody = h.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        "/var/lib/hyperhive/agents/alice/state/suid",
    ]);
    assert!(
        !nobody.status.success(),
        "nobody ran the agent's setuid file"
    );
}

#[test]
fn a_symlinked_bus_leads_nowhere_on_the_host_nor_to_a_neighbour() {
    let h = hive();
    h.create("alice", &[]);
    h.create("bob", &[]);

    // The predecessor's escape: a bus socket that is a symlink to "the" system bus, and a
    // second try at the neighbour's bus as the host used to lay it out.
    let out = agent_sh(
        &h,
        "alice",
        "rm -f /run/dbus/system_bus_socket && \
         ln -s /run/dbus/system_bus_socket /run/dbus/system_bus_socket && \
         mkdir -p /run/hyperhive-x && ln -s ../hyperhive/bob.bus/system_bus_socket /run/dbus/neighbour",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    restart_daemon(&h);
    let _ = h.hivectl(&["reload"]);
    // Asked to make sure alice's harness runs, the daemon cannot reach her bus, and says so.
    let out = h.hivectl(&["start", "alice"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("agent alice") && err.contains("h-alice") && err.contains("symbolic links"),
        "{err}"
    );

    // Nothing was created on the host's own systemd …
    assert!(
        !host_has_unit(&h, HARNESS),
        "hive-harness.service appeared on the host"
    );
    assert!(h
        .run_ok(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--no-pager"
        ])
        .lines()
        .all(|l| !l.contains("hive-harness")));
    // … nor in bob: his one harness unit is his own, and nothing of alice's is there.
    let bob_env = inner_show(&h, "bob", HARNESS, "Environment");
    assert!(
        bob_env.contains("HIVE_AGENT=bob") && !bob_env.contains("alice"),
        "{bob_env}"
    );
    let bob_units = h.run_ok(&[
        "systemctl",
        "-M",
        "h-bob",
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "--no-pager",
    ]);
    assert!(!bob_units.contains("alice"), "{bob_units}");
    // alice's container stays up, untouched.
    assert_eq!(h.unit_show("alice", "ActiveState"), "active");
}

#[test]
fn the_agent_cannot_swap_its_socket_and_a_restart_rebinds_the_real_one() {
    let h = hive();
    h.create("alice", &[]);
    for script in [
        "rm /run/hyperhive/hive.sock",
        "ln -sf /etc/shadow /run/hyperhive/hive.sock",
        "touch /run/hyperhive/planted",
        "mount -o remount,rw /run/hyperhive",
        "umount -l /run/hyperhive",
    ] {
        let out = agent_sh(&h, "alice", script);
        assert!(!out.status.success(), "{script} succeeded inside the agent");
    }
    let shadow_before = h.run_ok(&["stat", "-c", "%a %u %i", "/etc/shadow"]);
    for _ in 0..2 {
        restart_daemon(&h);
        h.wait_for("alice's socket rebound", Duration::from_secs(20), || {
            listeners(&h, "alice") == 1
        });
    }
    assert_eq!(
        h.run_ok(&["stat", "-c", "%F", "/run/hyperhive/alice/hive.sock"]),
        "socket"
    );
    assert_eq!(
        h.run_ok(&["stat", "-c", "%a %u %i", "/etc/shadow"]),
        shadow_before
    );
    assert_eq!(
        h.run_ok(&["stat", "-c", "%a", "/run/hyperhive/alice"]),
        "700"
    );
    // The harness is connected through the socket it cannot touch.
    h.wait_for("alice's harness connected", Duration::from_secs(30), || {
        connections(&h, "alice") >= 1
    });
}

#[test]
fn a_silent_bus_hangs_no_verb_and_no_neighbour() {
    let h = hive();
    h.create("alice", &[]);
    // The agent's bus now accepts connections and never answers one.
    let out = h.run(&[
        "systemd-run",
        "-M",
        "h-alice",
        "--unit=silent",
        "--quiet",
        "sh",
        "-c",
        "mv /run/dbus/system_bus_socket /run/dbus/real && \
         exec systemd-socket-activate -l /run/dbus/system_bus_socket sleep infinity",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    h.wait_for(
        "the silent listener in alice",
        Duration::from_secs(10),
        || agent_sh_fallback_ready(&h),
    );

    let t = Instant::now();
    let out = h.hivectl(&["start", "alice"]);
    let took = t.elapsed();
    println!("start against a silent bus: {took:?}, {}", stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("alice") && err.contains("h-alice"), "{err}");
    // Bounded by the daemon's own timeout (10 s), far below systemd's 90 s job timeout.
    assert!(took < Duration::from_secs(30), "{took:?}");

    // A neighbour is created meanwhile, and a daemon restart completes.
    h.create("bob", &[]);
    assert_eq!(h.unit_show("bob", "ActiveState"), "active");
    restart_daemon(&h);
    assert_eq!(h.show("hive-c0re.service", "ActiveState"), "active");
    // The silent agent can still be stopped and destroyed.
    h.hivectl_ok(&["stop", "alice"]);
    assert_eq!(h.unit_show("alice", "ActiveState"), "inactive");
    h.hivectl_ok(&["destroy", "alice"]);
    assert_eq!(h.unit_show("alice", "LoadState"), "not-found");
}

/// The silent listener is up once the container's bus socket is no longer dbus's.
fn agent_sh_fallback_ready(h: &TestHost) -> bool {
    let leader = h.run_ok(&["machinectl", "show", "h-alice", "-p", "Leader", "--value"]);
    h.run(&["test", "-S", &format!("/proc/{leader}/root/run/dbus/real")])
        .status
        .success()
        && h.run(&[
            "test",
            "-S",
            &format!("/proc/{leader}/root/run/dbus/system_bus_socket"),
        ])
        .status
        .success()
}

#[test]
fn immutable_files_cannot_be_planted_and_purge_names_what_it_cannot_remove() {
    let h = hive();
    h.create("alice", &[]);
    // chattr +i needs CAP_LINUX_IMMUTABLE on the host: an agent cannot.
    let out = agent_sh(
        &h,
        "alice",
        "touch /state/locked && chattr +i /state/locked",
    );
    assert!(!out.status.success(), "chattr +i worked inside the agent");
    let dir = "/var/lib/hyperhive/agents/alice";
    let attrs = h.run_ok(&["lsattr", "-d", &format!("{dir}/state/locked")]);
    assert!(
        !attrs.split_whitespace().next().unwrap().contains('i'),
        "{attrs}"
    );

    // An agent run without a user namespace could; so purge must say exactly what is
    // left, remove everything else, and not follow the agent's symlinks.
    h.run_ok(&["mkdir", "-p", "/srv/outside"]);
    h.run_ok(&["touch", "/srv/outside/keep"]);
    h.run_ok(&["ln", "-s", "/srv/outside", &format!("{dir}/state/link")]);
    h.run_ok(&["chattr", "+i", &format!("{dir}/state/locked")]);
    let out = h.hivectl(&["destroy", "alice", "--purge"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{dir}/state/locked")), "{err}");
    assert!(err.contains("chattr -i"), "{err}");
    h.run_ok(&["test", "-e", "/srv/outside/keep"]);
    h.run_ok(&["test", "!", "-e", &format!("{dir}/claude")]);
    h.run_ok(&["test", "!", "-L", &format!("{dir}/state/link")]);
    assert_eq!(h.unit_show("alice", "LoadState"), "not-found");

    h.run_ok(&["chattr", "-i", &format!("{dir}/state/locked")]);
    h.hivectl_ok(&["destroy", "alice", "--purge"]);
    h.run_ok(&["test", "!", "-e", dir]);
    h.run_ok(&["test", "-e", "/srv/outside/keep"]);
}

#[test]
fn a_non_root_host_user_reads_no_secret_and_reaches_no_agent() {
    let h = hive();
    h.create("alice", &["--env", "API_TOKEN=hunter2-secret"]);
    let nobody = |argv: &[&str]| {
        let mut full = vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ];
        full.extend_from_slice(argv);
        h.run(&full)
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // The unit's properties are public on the bus: the secret is in none of them.
    let show = nobody(&["systemctl", "show", "hive-agent-alice.service"]);
    assert!(show.status.success());
    assert!(!text(&show).contains("hunter2"), "secret in systemctl show");
    // No command line on the host carries it.
    let cmdlines = h.run_ok(&[
        "sh",
        "-c",
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
    ]);
    assert!(!cmdlines.contains("hunter2"), "secret on a command line");
    // The agent's command still gets it.
    let env = inner_show(&h, "alice", HARNESS, "Environment");
    assert!(env.contains("API_TOKEN=hunter2-secret"), "{env}");

    // Not the spec, not the runtime dir or socket, not the container's bus.
    for argv in [
        vec!["cat", "/var/lib/hyperhive/agents/alice/spec.toml"],
        vec!["ls", "/run/hyperhive/alice"],
        vec!["ls", "/var/lib/hyperhive/agents/alice/state"],
        vec!["busctl", "-M", "h-alice", "list"],
        vec!["systemctl", "-M", "h-alice", "show", HARNESS],
        // Nor her egress socket (0666 itself, under the root-only /run/private).
        vec![
            "python3",
            "-c",
            "import socket; socket.socket(socket.AF_UNIX).connect('/run/private/hyperhive-egress/alice/proxy.sock')",
        ],
    ] {
        let out = nobody(&argv);
        assert!(
            !out.status.success() && !text(&out).contains("hunter2"),
            "{argv:?} worked as nobody: {}",
            text(&out)
        );
    }
}

#[test]
fn no_raw_sockets_links_or_immutable_bits_from_inside() {
    let h = hive();
    h.create("alice", &[]);
    // The dropped capabilities are gone from the container's bounding set.
    let out = agent_sh(&h, "alice", "grep CapBnd /proc/1/status");
    let bnd = String::from_utf8_lossy(&out.stdout);
    let bits = u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    for (cap, bit) in [
        ("CAP_LINUX_IMMUTABLE", 9),
        ("CAP_NET_BROADCAST", 11),
        ("CAP_NET_RAW", 13),
        ("CAP_SYS_TTY_CONFIG", 26),
        ("CAP_AUDIT_CONTROL", 30),
    ] {
        assert_eq!(bits & (1 << bit), 0, "{cap} kept: {bnd}");
    }
    // A raw packet socket on the host's network, and a new link, are refused.
    let out = agent_sh(
        &h,
        "alice",
        "python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'",
    );
    assert!(!out.status.success(), "raw socket opened inside the agent");
    assert!(stderr(&out).contains("PermissionError"), "{}", stderr(&out));
    let out = agent_sh(&h, "alice", "ip link add hh-attack type dummy");
    assert!(!out.status.success(), "ip link add worked inside the agent");
    let links = h.run_ok(&["ip", "-o", "link"]);
    assert!(!links.contains("hh-attack"), "{links}");

    // An admin may give one back, by name, in the spec.
    h.create("bob", &["--capability", "CAP_NET_RAW"]);
    let out = agent_sh(&h, "bob", "grep CapBnd /proc/1/status");
    let bnd = String::from_utf8_lossy(&out.stdout);
    let bits = u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(bits & (1 << 13), 0, "CAP_NET_RAW not kept: {bnd}");
}

#[test]
fn an_admin_may_run_an_agent_without_a_user_namespace() {
    let h = hive();
    h.create("alice", &["--private-users", "no"]);
    assert_eq!(uid_map(&h, "alice"), vec![0, 0, 4294967295]);
    assert!(h
        .hivectl_ok(&["status", "alice"])
        .contains("container root is host root"));
    assert!(!h
        .unit_show("alice", "ExecStart")
        .contains("--private-users"));
    // The harness is reached all the same (no user namespace to join).
    h.wait_for("alice's harness active", Duration::from_secs(30), || {
        inner_show(&h, "alice", HARNESS, "ActiveState") == "active"
    });
}

const HARNESS: &str = "hive-harness.service";

#[test]
fn an_admins_tools_still_reach_an_agent_in_its_user_namespace() {
    let h = hive();
    h.create("alice", &[]);
    h.wait_for("alice's harness active", Duration::from_secs(30), || {
        inner_show(&h, "alice", HARNESS, "ActiveState") == "active"
    });
    // machinectl shell, journalctl -M and systemctl -M, as on any nspawn container.
    let out = h.run(&[
        "machinectl",
        "shell",
        "-q",
        "h-alice",
        "/bin/sh",
        "-c",
        "cat /proc/self/uid_map",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let inside = String::from_utf8_lossy(&out.stdout);
    assert!(!inside.contains("4294967295"), "{inside}");
    let journal = h.run_ok(&[
        "journalctl",
        "-M",
        "h-alice",
        "--no-pager",
        "-o",
        "cat",
        "SYSLOG_IDENTIFIER=hive-harness",
    ]);
    assert!(journal.contains("connected"), "{journal}");
    // The host's merged journal reads the agent's own lines too (its idmapped journal
    // directory), with the agent's name on them.
    let lines = entries(&h, &["HIVE_AGENT=alice", "SYSLOG_IDENTIFIER=hive-harness"]);
    assert!(!lines.is_empty(), "no harness lines on the host");
    let machine_id = lines[0]["_MACHINE_ID"].as_str().unwrap().to_owned();
    h.run_ok(&["test", "-d", &format!("/var/log/journal/{machine_id}")]);
    assert_ne!(machine_id, h.run_ok(&["cat", "/etc/machine-id"]));
}

/// nspawn 256+ exports a container's sockets through a tmpfs it mounts on the host at
/// /run/systemd/nspawn/unix-export/h-<name> (the container's /run/host/unix-export), and
/// leaves it behind when it is killed; the agent unit's ExecStopPost (`hive-c0re
/// unregister-machine`) detaches and removes it, as root on the host. The agent writes in
/// that tmpfs: links it plants there must lead nowhere when the host cleans up.
#[test]
fn links_planted_in_the_unix_export_dir_are_not_followed_when_it_is_removed() {
    let h = hive();
    h.create("alice", &[]);
    let version = h.systemd_version();
    let export = "/run/systemd/nspawn/unix-export/h-alice";
    if version < 256 {
        // Stated reason, not a skip of the attack: before 256 nspawn has no such directory,
        // so there is nothing the agent could plant and nothing the host removes.
        assert!(!h.run(&["test", "-e", export]).status.success());
        return;
    }
    h.run_ok(&[
        "sh",
        "-c",
        "mkdir -p /srv/canary && echo keep > /srv/canary/file && echo keep > /srv/canary-file",
    ]);
    let planted = agent_sh(
        &h,
        "alice",
        "cd /run/host/unix-export && ln -s /srv/canary dir-link && ln -s /srv/canary-file file-link \
         && mkdir -p deep/er && ln -s /srv/canary deep/er/link && ln -s / root-link && touch plain",
    );
    assert!(
        planted.status.success(),
        "systemd {version}: the agent can write in its unix-export dir (the threat this test is about): {}",
        String::from_utf8_lossy(&planted.stderr)
    );
    kill_container_and_await_restart(&h, "alice");
    // Whatever the agent managed to plant, the cleanup removed the links, not their targets.
    assert_eq!(h.run_ok(&["cat", "/srv/canary/file"]), "keep");
    assert_eq!(h.run_ok(&["cat", "/srv/canary-file"]), "keep");
    assert!(h.run(&["test", "-d", "/etc"]).status.success());
    // The restarted container has a fresh export dir: nothing the agent planted survived.
    let left = h.run_ok(&["ls", "-A", export]);
    assert!(
        !left.contains("link") && !left.contains("plain"),
        "planted ({}): {left}",
        String::from_utf8_lossy(&planted.stderr)
    );
    h.wait_for("alice's harness back", Duration::from_secs(30), || {
        connections(&h, "alice") == 1
    });
}
