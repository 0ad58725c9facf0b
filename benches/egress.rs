//! `cargo bench --bench egress`: an agent's egress proxy (`hive-c0re egress-proxy`, run here
//! as a child process on this machine's loopback, its socket passed by
//! `systemd-socket-activate`) next to a direct connection to the
//! same upstream, in one run: bulk throughput of 100 MiB (goal: through the proxy ≥ 0.8× of
//! direct), the time to first byte a new connection adds (goal: p50 ≤ 2 ms), and the
//! proxy's resident memory afterwards (goal: ≤ 8 MiB). A third column takes the agent's
//! whole way: the in-container forwarder (`hive-harness egress-forward`) in front of the
//! proxy. The tunnel is what TLS traffic takes (CONNECT); the allowlist names the
//! upstream's address, as an admin's entry would.
//!
//! Prints a table; asserts nothing, because timings on shared CI machines are noise.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BULK: usize = 100 << 20;
const TTFB_RUNS: usize = 200;
const BULK_RUNS: usize = 3;

/// The upstream: one command byte per connection, `T` → one byte, `B` → [`BULK`] bytes.
fn upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let chunk = vec![0x5au8; 256 << 10];
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut cmd = [0u8];
                if s.read_exact(&mut cmd).is_err() {
                    return;
                }
                match cmd[0] {
                    b'T' => {
                        let _ = s.write_all(b"x");
                    }
                    _ => {
                        let mut left = BULK;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            if s.write_all(&chunk[..n]).is_err() {
                                return;
                            }
                            left -= n;
                        }
                    }
                }
            });
        }
    });
    port
}

enum Via<'a> {
    Direct,
    /// The proxy's socket itself, as the container sees it.
    Proxy(&'a Path),
    /// The agent's whole way: the forwarder's port inside the container, then the proxy.
    Forward(u16),
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn open(via: &Via<'_>, port: u16) -> Box<dyn Stream> {
    match via {
        Via::Direct => {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_nodelay(true).unwrap();
            Box::new(s)
        }
        Via::Proxy(sock) => connect(UnixStream::connect(sock).unwrap(), port),
        Via::Forward(fport) => {
            let s = TcpStream::connect(("127.0.0.1", *fport)).unwrap();
            s.set_nodelay(true).unwrap();
            connect(s, port)
        }
    }
}

/// CONNECT through the proxy, up to the blank line of its answer.
fn connect<S: Stream + 'static>(mut s: S, port: u16) -> Box<dyn Stream> {
    write!(
        s,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    // Byte by byte: it is short.
    let mut head = Vec::new();
    let mut b = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Box::new(s)
}

fn ttfb(via: &Via<'_>, port: u16) -> Duration {
    let t0 = Instant::now();
    let mut s = open(via, port);
    s.write_all(b"T").unwrap();
    let mut b = [0u8];
    s.read_exact(&mut b).unwrap();
    t0.elapsed()
}

fn bulk(via: &Via<'_>, port: u16) -> f64 {
    let mut s = open(via, port);
    let t0 = Instant::now();
    s.write_all(b"B").unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0;
    while got < BULK {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "short read at {got}");
        got += n;
    }
    BULK as f64 / t0.elapsed().as_secs_f64() / (1 << 20) as f64
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A `/proc/<pid>/status` field in KiB: `VmRSS:` counts the binary's text pages too (page
/// cache, shared by every agent's proxy), `RssAnon:` what this process holds alone.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let port = upstream();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allow"), format!("127.0.0.1:{port}\n")).unwrap();
    let sock = dir.path().join("proxy.sock");
    // systemd's own tool binds the socket and passes it, as the .socket unit does.
    let mut proxy = Command::new("systemd-socket-activate")
        .arg(format!("--listen={}", sock.display()))
        .args([
            env!("CARGO_BIN_EXE_hive-c0re"),
            "egress-proxy",
            "--agent=bench",
            "--dir",
        ])
        .arg(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The forwarder as it runs inside a container, on a port of its own.
    let fport = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut forward = Command::new("systemd-socket-activate")
        .arg(format!("--listen=127.0.0.1:{fport}"))
        .args([env!("CARGO_BIN_EXE_hive-harness"), "egress-forward"])
        .arg(format!("--to={}", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", fport)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "forwarder did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let vias = [Via::Direct, Via::Proxy(&sock), Via::Forward(fport)];
    let idle_rss = status_kib(proxy.id(), "VmRSS:");

    // Warm every path, then alternate so drift hits all alike.
    for via in &vias {
        ttfb(via, port);
    }
    let mut t: [Vec<Duration>; 3] = Default::default();
    for _ in 0..TTFB_RUNS {
        for (i, via) in vias.iter().enumerate() {
            t[i].push(ttfb(via, port));
        }
    }
    let t50 = t.map(p50);
    let mut b = [0f64; 3];
    for _ in 0..BULK_RUNS {
        for (i, via) in vias.iter().enumerate() {
            b[i] = b[i].max(bulk(via, port));
        }
    }
    let rss = status_kib(proxy.id(), "VmRSS:");
    let anon = status_kib(proxy.id(), "RssAnon:");
    let frss = status_kib(forward.id(), "VmRSS:");
    for child in [&mut proxy, &mut forward] {
        let _ = child.kill();
        let _ = child.wait();
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("egress proxy vs direct, 127.0.0.1 upstream (best of {BULK_RUNS} × 100 MiB; p50 of {TTFB_RUNS} new connections)");
    println!("  proxy: its unix socket, as the container sees it; + forwarder: the agent's whole way (127.0.0.1:3128 inside, then the proxy)");
    println!(
        "{:<28} {:>11} {:>11} {:>13} {:>9}",
        "", "direct", "proxy", "+ forwarder", "goal"
    );
    println!(
        "{:<28} {:>6.0} MiB/s {:>6.0} MiB/s {:>8.0} MiB/s {:>9}",
        "bulk throughput", b[0], b[1], b[2], ""
    );
    println!(
        "{:<28} {:>11} {:>11.2} {:>13.2} {:>9}",
        "  ratio to direct",
        "",
        b[1] / b[0],
        b[2] / b[0],
        "≥ 0.8×"
    );
    println!(
        "{:<28} {:>8.3} ms {:>8.3} ms {:>10.3} ms {:>9}",
        "time to first byte (p50)",
        ms(t50[0]),
        ms(t50[1]),
        ms(t50[2]),
        ""
    );
    println!(
        "{:<28} {:>11} {:>8.3} ms {:>10.3} ms {:>9}",
        "  added",
        "",
        ms(t50[1].saturating_sub(t50[0])),
        ms(t50[2].saturating_sub(t50[0])),
        "≤ 2 ms"
    );
    println!(
        "{:<28} {:>11} {:>7.1} MiB {:>13} {:>9}",
        "proxy RSS idle",
        "",
        idle_rss as f64 / 1024.0,
        "",
        ""
    );
    println!(
        "{:<28} {:>11} {:>7.1} MiB {:>9.1} MiB {:>9}",
        "RSS after (proxy, forwarder)",
        "",
        rss as f64 / 1024.0,
        frss as f64 / 1024.0,
        "≤ 8 MiB"
    );
    println!(
        "{:<28} {:>11} {:>7.1} MiB {:>13} {:>9}",
        "  of which its own (RssAnon)",
        "",
        anon as f64 / 1024.0,
        "",
        ""
    );
}
