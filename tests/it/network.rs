//! An agent's network (issue 23): by default its own namespace with only `lo`. Attacks run
//! from inside a default agent; each is judged by what the test host sees (the listener's
//! own log in the host's journal, `ip`), never by hyperhive's words.

use std::time::Duration;

use crate::common::*;

/// A free TCP/UDP port on the test host's loopback (which is this machine's: the test
/// host shares its network namespace), so parallel tests do not collide.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `script` (python3) as a transient unit in the test host; its stdout lands in the
/// host's journal under the unit. Waits until it printed `ready`.
fn host_listener(h: &TestHost, unit: &str, script: &str) {
    h.run_ok(&[
        "systemd-run",
        &format!("--unit={unit}"),
        "--property=StandardOutput=journal",
        "--",
        "/usr/bin/python3",
        "-u",
        "-c",
        script,
    ]);
    h.wait_for(&format!("{unit} ready"), Duration::from_secs(10), || {
        unit_log(h, unit).contains("ready")
    });
}

/// What a test host unit printed.
fn unit_log(h: &TestHost, unit: &str) -> String {
    h.run_ok(&["journalctl", "-u", unit, "-o", "cat", "--no-pager"])
}

#[test]
fn a_default_agent_has_its_own_network_with_only_lo() {
    let h = hive();
    h.create("alice", &[]);
    assert!(h
        .unit_show("alice", "ExecStart")
        .contains("--private-network"));
    let leader = h.run_ok(&["machinectl", "show", "h-alice", "-p", "Leader", "--value"]);
    assert_ne!(
        h.run_ok(&["readlink", "/proc/1/ns/net"]),
        h.run_ok(&["readlink", &format!("/proc/{leader}/ns/net")])
    );
    // Seen from the host, inside the agent's namespace: lo only, and no route at all.
    let links = h.run_ok(&["nsenter", "-t", &leader, "-n", "ip", "-o", "link"]);
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(names, vec!["lo"], "{links}");
    let routes = h.run_ok(&["nsenter", "-t", &leader, "-n", "ip", "route", "show"]);
    assert_eq!(routes, "", "a route out of a private agent");
    // `hivectl status` says so.
    let status = h.hivectl_ok(&["status", "alice"]);
    assert!(status.contains("Network: private"), "{status}");
}

#[test]
fn host_network_stays_an_admins_explicit_choice_and_says_what_it_shares() {
    let h = hive();
    h.create("bob", &["--network", "host"]);
    assert!(!h.unit_show("bob", "ExecStart").contains("network"));
    let leader = h.run_ok(&["machinectl", "show", "h-bob", "-p", "Leader", "--value"]);
    assert_eq!(
        h.run_ok(&["readlink", "/proc/1/ns/net"]),
        h.run_ok(&["readlink", &format!("/proc/{leader}/ns/net")])
    );
    let status = h.hivectl_ok(&["status", "bob"]);
    assert!(
        status.contains("Network: host") && status.contains("abstract unix sockets"),
        "{status}"
    );
    // `hivectl plan` warns about it where it lists the host checks.
    let plan = h.hivectl_ok(&["plan", "--all"]);
    assert!(plan.contains("loopback services"), "{plan}");
}

#[test]
fn a_default_agent_reaches_no_host_loopback_service_abstract_socket_or_dns() {
    let h = hive();
    let tcp = free_port();
    let udp = free_port();
    // A host-only service on 127.0.0.1 that logs every connection it accepts.
    host_listener(
        &h,
        "upstream-tcp",
        &format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('127.0.0.1',{tcp}))\ns.listen()\nprint('ready')\n\
             while True:\n c,a=s.accept()\n print('accepted',a)\n c.close()\n"
        ),
    );
    // A host abstract unix socket (it belongs to the network namespace, not a filesystem).
    host_listener(
        &h,
        "upstream-abstract",
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.bind('\\0hive-test-abstract')\n\
         s.listen()\nprint('ready')\n\
         while True:\n c,a=s.accept()\n print('accepted')\n c.close()\n",
    );
    // A resolver on the host's loopback (as 127.0.0.53 would be) that logs each query.
    host_listener(
        &h,
        "upstream-dns",
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('127.0.0.1',{udp}))\nprint('ready')\n\
             while True:\n d,a=s.recvfrom(512)\n print('query',len(d),a)\n"
        ),
    );
    // The host itself reaches them: the listeners work.
    h.run_ok(&[
        "python3",
        "-c",
        &format!(
            "import socket\nsocket.create_connection(('127.0.0.1',{tcp}),2).close()\n\
             u=socket.socket(socket.AF_UNIX)\nu.connect('\\0hive-test-abstract')\nu.close()\n\
             socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'probe',('127.0.0.1',{udp}))\n"
        ),
    ]);
    h.wait_for("the host's own probes", Duration::from_secs(10), || {
        unit_log(&h, "upstream-tcp").contains("accepted")
            && unit_log(&h, "upstream-abstract").contains("accepted")
            && unit_log(&h, "upstream-dns").contains("query")
    });
    let before = |u: &str| unit_log(&h, u).lines().count();
    let (t0, a0, d0) = (
        before("upstream-tcp"),
        before("upstream-abstract"),
        before("upstream-dns"),
    );

    h.create("alice", &[]);
    let attack = format!(
        r#"
import socket
def attempt(what, f):
    try:
        f()
        print(what, 'REACHED')
    except OSError as e:
        print(what, 'refused', e)
def tcp():
    socket.create_connection(('127.0.0.1', {tcp}), 2).close()
def abstract():
    u = socket.socket(socket.AF_UNIX)
    u.settimeout(2)
    u.connect('\0hive-test-abstract')
def dns():
    # A DNS query for a name to a resolver on the host's loopback, then a lookup through
    # whatever the container's resolver configuration says.
    q = bytes.fromhex('abcd01000001000000000000') + b'\x05leak1\x07example\x03com\x00\x00\x01\x00\x01'
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, ('127.0.0.1', {udp}))
    s.recvfrom(512)
def lookup():
    socket.getaddrinfo('leak2.example.com', 443)
for what, f in [('tcp', tcp), ('abstract', abstract), ('dns', dns), ('lookup', lookup)]:
    attempt(what, f)
"#
    );
    let out = h.in_agent("alice", &["python3", "-c", &attack]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!said.contains("REACHED"), "{said}");
    // The judge: the host's listeners saw nothing more than the host's own probes.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        before("upstream-tcp"),
        t0,
        "{}",
        unit_log(&h, "upstream-tcp")
    );
    assert_eq!(
        before("upstream-abstract"),
        a0,
        "{}",
        unit_log(&h, "upstream-abstract")
    );
    assert_eq!(
        before("upstream-dns"),
        d0,
        "{}",
        unit_log(&h, "upstream-dns")
    );

    // The same from an agent on the host's network reaches all three: the test shows the
    // hole the default closes, not a listener that answers nobody.
    h.create("bob", &["--network", "host"]);
    let out = h.in_agent("bob", &["python3", "-c", &attack]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("tcp REACHED"), "{said}");
    assert!(said.contains("abstract REACHED"), "{said}");
    h.wait_for(
        "bob's connections seen by the host",
        Duration::from_secs(10),
        || before("upstream-tcp") > t0 && before("upstream-abstract") > a0,
    );
}
