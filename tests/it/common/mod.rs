//! Shared fixtures for integration tests: a test host with hive-c0re running as its real
//! unit, and helpers that drive hivectl inside it. The oracle is always systemd's own
//! tools (systemctl, machinectl, journalctl) run inside the test host.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub use testhost::{Options, TestHost};

pub const HIVECTL: &str = env!("CARGO_BIN_EXE_hivectl");

pub fn bin_dir() -> PathBuf {
    Path::new(HIVECTL).parent().unwrap().to_path_buf()
}

pub fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("units")
}

/// A fresh test host whose boot waited for hive-c0re.service's READY=1.
pub fn hive() -> TestHost {
    TestHost::boot(Options {
        bin_dir: Some(bin_dir()),
        units_dir: Some(units_dir()),
        start_daemon: true,
        ..Default::default()
    })
    .expect("booting the test host")
}

pub trait HiveExt {
    fn hivectl(&self, args: &[&str]) -> Output;
    fn hivectl_ok(&self, args: &[&str]) -> String;
    fn create(&self, name: &str, extra: &[&str]) -> String;
    fn unit_show(&self, name: &str, prop: &str) -> String;
    fn invocation(&self, name: &str) -> String;
    fn machines(&self) -> Vec<String>;
    fn agent_units(&self) -> Vec<String>;
    fn in_agent(&self, name: &str, argv: &[&str]) -> Output;
    fn wait_active(&self, name: &str);
}

impl HiveExt for TestHost {
    fn hivectl(&self, args: &[&str]) -> Output {
        let mut argv = vec![HIVECTL];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    fn hivectl_ok(&self, args: &[&str]) -> String {
        let out = self.hivectl(args);
        assert!(
            out.status.success(),
            "hivectl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `hivectl create NAME --root / --volatile yes EXTRA...`: an ephemeral copy of the
    /// test host's own tree, as the demo does.
    fn create(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["create", name, "--root", "/", "--volatile", "yes"];
        args.extend_from_slice(extra);
        self.hivectl_ok(&args)
    }

    fn unit_show(&self, name: &str, prop: &str) -> String {
        self.show(&format!("hive-agent-{name}.service"), prop)
    }

    fn invocation(&self, name: &str) -> String {
        self.unit_show(name, "InvocationID")
    }

    /// Machine names machined lists.
    fn machines(&self) -> Vec<String> {
        let out = self.run_ok(&["machinectl", "list", "--no-legend", "--no-pager"]);
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// Loaded hive-agent-* units, any state.
    fn agent_units(&self) -> Vec<String> {
        let out = self.run_ok(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--no-pager",
            "hive-agent-*",
        ]);
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// Runs a command inside the agent's container over machined, as an admin would.
    fn in_agent(&self, name: &str, argv: &[&str]) -> Output {
        let machine = format!("h-{name}");
        let mut full = vec![
            "systemd-run",
            "-M",
            &machine,
            "--wait",
            "--pipe",
            "--quiet",
            "--",
        ];
        full.extend_from_slice(argv);
        self.run(&full)
    }

    fn wait_active(&self, name: &str) {
        self.wait_for(
            &format!("hive-agent-{name}.service active/running"),
            Duration::from_secs(30),
            || {
                self.unit_show(name, "ActiveState") == "active"
                    && self.unit_show(name, "SubState") == "running"
            },
        );
    }
}

/// The test host's journal entries matching `matches`, as JSON objects.
pub fn entries(h: &TestHost, matches: &[&str]) -> Vec<serde_json::Value> {
    let mut argv = vec!["journalctl", "--merge", "-o", "json", "--no-pager"];
    argv.extend_from_slice(matches);
    h.run_ok(&argv)
        .lines()
        .map(|l| serde_json::from_str(l).expect("journal json"))
        .collect()
}

/// The last entry matching `matches`, waiting up to 30 s for one.
pub fn wait_entry(h: &TestHost, what: &str, matches: &[&str]) -> serde_json::Value {
    let mut found = None;
    h.wait_for(what, Duration::from_secs(30), || {
        found = entries(h, matches).pop();
        found.is_some()
    });
    found.unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Asserts hivectl refused with exit 2 and exactly one line of reason.
pub fn assert_bad_input(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: expected exit 2, got {} / {}",
        out.status,
        stderr(out)
    );
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{what}: one line expected: {err:?}");
    assert!(err.starts_with("hivectl: "), "{what}: {err}");
}

/// Listening unix sockets at the agent's socket path held by this host's hive-c0re.
/// Test hosts share the machine's network namespace, so `ss` lists other hosts' sockets
/// too; only this host's processes are visible to `-p` from inside it.
pub fn listeners(h: &TestHost, agent: &str) -> usize {
    let path = format!("/run/hyperhive/{agent}/hive.sock ");
    h.run_ok(&["ss", "-xlpH"])
        .lines()
        .filter(|l| l.contains(&path) && l.contains("\"hive-c0re\""))
        .count()
}

/// Established connections to the agent's socket, daemon side, in this host. The
/// daemon's end of an accepted unix connection belongs to the network namespace of the
/// client: the harness's is in the agent's namespace (unless `network = "host"`), a test's
/// own in the test host's, so both are counted (once when they are the same).
pub fn connections(h: &TestHost, agent: &str) -> usize {
    let path = format!("/run/hyperhive/{agent}/hive.sock ");
    let count = |argv: &[&str]| {
        let out = h.run(argv);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&path) && l.contains("\"hive-c0re\""))
            .count()
    };
    let mut n = count(&["ss", "-xpH", "state", "connected"]);
    let leader = h.run(&[
        "machinectl",
        "show",
        &format!("h-{agent}"),
        "-p",
        "Leader",
        "--value",
    ]);
    let leader = String::from_utf8_lossy(&leader.stdout).trim().to_owned();
    if !leader.is_empty() {
        let ns = |pid: &str| {
            String::from_utf8_lossy(&h.run(&["readlink", &format!("/proc/{pid}/ns/net")]).stdout)
                .trim()
                .to_owned()
        };
        if ns(&leader) != ns("1") {
            n += count(&[
                "nsenter",
                "-t",
                &leader,
                "-n",
                "ss",
                "-xpH",
                "state",
                "connected",
            ]);
        }
    }
    n
}

/// The agent's socket as seen from the machine running the tests.
pub fn socket_path(h: &TestHost, agent: &str) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/root/run/hyperhive/{agent}/hive.sock",
        h.leader()
    ))
}

/// A file in the agent's state dir (its /state), trimmed; empty if it is not there.
pub fn state_file(h: &TestHost, agent: &str, file: &str) -> String {
    let out = h.run(&[
        "cat",
        &format!("/var/lib/hyperhive/agents/{agent}/state/{file}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `systemctl -M h-<agent> show -P PROP hive-harness.service`: a property of the agent's
/// harness, read from the container's own systemd as an admin would.
fn harness_show_argv(agent: &str, prop: &str) -> Vec<String> {
    let machine = format!("h-{agent}");
    [
        "systemctl",
        "-M",
        &machine,
        "show",
        "-P",
        prop,
        "hive-harness.service",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A property of the agent's `hive-harness.service`; panics if it cannot be read.
pub fn harness_show(h: &TestHost, agent: &str, prop: &str) -> String {
    let argv = harness_show_argv(agent, prop);
    h.run_ok(&argv.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Like [`harness_show`], empty while the container's systemd cannot be reached (for
/// waits across restarts and outages).
pub fn harness_show_or_empty(h: &TestHost, agent: &str, prop: &str) -> String {
    let argv = harness_show_argv(agent, prop);
    let out = h.run(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The InvocationID of the agent's harness (see [`harness_show`]).
pub fn harness_invocation(h: &TestHost, agent: &str) -> String {
    harness_show(h, agent, "InvocationID")
}

/// A property of a unit inside the agent's container, read as an admin would.
pub fn inner_show(h: &TestHost, agent: &str, unit: &str, prop: &str) -> String {
    let machine = format!("h-{agent}");
    h.run_ok(&[
        "systemctl",
        "-M",
        &machine,
        "show",
        "-p",
        prop,
        "--value",
        unit,
    ])
}

/// hive-c0re's whole journal in the test host, message text only.
pub fn daemon_log(h: &TestHost) -> String {
    h.run_ok(&[
        "journalctl",
        "-u",
        "hive-c0re.service",
        "-o",
        "cat",
        "--no-pager",
    ])
}

/// SIGKILLs the agent's container process (nspawn) and waits until systemd has restarted
/// it (Restart=on-failure: a new InvocationID, running); returns the new InvocationID.
pub fn kill_container_and_await_restart(h: &TestHost, agent: &str) -> String {
    let invocation = h.invocation(agent);
    let pid = h.unit_show(agent, "MainPID");
    h.run_ok(&["kill", "-9", &pid]);
    let mut now = String::new();
    h.wait_for(
        &format!("{agent} restarted by systemd"),
        Duration::from_secs(30),
        || {
            now = h.invocation(agent);
            !now.is_empty() && now != invocation && h.unit_show(agent, "SubState") == "running"
        },
    );
    now
}

/// Sends `signal` to the main process of the agent's harness, through the container's own
/// systemd, as an admin would.
pub fn kill_harness(h: &TestHost, agent: &str, signal: &str) {
    let machine = format!("h-{agent}");
    h.run_ok(&[
        "systemctl",
        "-M",
        &machine,
        "kill",
        "-s",
        signal,
        "--kill-whom=main",
        "hive-harness.service",
    ]);
}

static NEXT_NETNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A network namespace the test makes inside the test host, reached from it over a veth
/// pair (a /30 of 10.213.0.0/16, never an address outside the test's own namespaces), its
/// address named `name` in the test host's /etc/hosts: where a test puts a server an
/// agent reaches through its egress proxy.
pub struct TestNetns {
    pub ip: String,
    pub netns: String,
    /// Unique per test process and namespace, for unit and link names.
    pub tag: u32,
}

impl TestNetns {
    pub fn new(h: &TestHost, name: &str) -> TestNetns {
        let n = NEXT_NETNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() * 8 + n) % 4000;
        let (third, fourth) = (tag / 60, (tag % 60) * 4);
        let host_ip = format!("10.213.{third}.{}", fourth + 1);
        let ip = format!("10.213.{third}.{}", fourth + 2);
        let netns = format!("hhup{tag}");
        let (vh, vu) = (format!("hhv{tag}h"), format!("hhv{tag}u"));
        let script = format!(
            "set -e\n\
             ip netns add {netns}\n\
             ip link add {vh} type veth peer name {vu} netns {netns}\n\
             ip addr add {host_ip}/30 dev {vh}\n\
             ip link set {vh} up\n\
             ip -n {netns} addr add {ip}/30 dev {vu}\n\
             ip -n {netns} link set {vu} up\n\
             ip -n {netns} link set lo up\n\
             echo '{ip} {name}' >> /etc/hosts\n"
        );
        h.run_ok(&["sh", "-c", &script]);
        // The route to it is the veth, never anything outside.
        let route = h.run_ok(&["ip", "route", "get", &ip]);
        assert!(route.contains(&format!("dev {vh}")), "{route}");
        TestNetns { ip, netns, tag }
    }

    /// Runs `argv` inside the namespace as the transient unit `unit` of the test host.
    pub fn serve(&self, h: &TestHost, unit: &str, argv: &[&str]) {
        let mut full = vec![
            "systemd-run".to_string(),
            format!("--unit={unit}"),
            "--quiet".into(),
            "--".into(),
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.netns.clone(),
        ];
        full.extend(argv.iter().map(|a| a.to_string()));
        h.run_ok(&full.iter().map(String::as_str).collect::<Vec<_>>());
    }

    pub fn remove(&self, h: &TestHost) {
        let _ = h.run(&["ip", "netns", "del", &self.netns]);
    }
}

/// The agent asks for `path` on its PATH through its own socket, as its harness would;
/// returns the approval's id.
pub fn request_path(h: &TestHost, agent: &str, path: &str) -> i64 {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(socket_path(h, agent)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let req = serde_json::json!({
        "type": "request_approval",
        "kind": "spec_change",
        "payload": {"path": [path]},
    });
    w.write_all(format!("{{\"type\":\"hello\",\"version\":1}}\n{req}\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("welcome"), "{line}");
    line.clear();
    r.read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["type"], "approval_pending", "{reply}");
    reply["id"].as_i64().unwrap()
}
