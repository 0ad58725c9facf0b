//! `cargo bench --bench egress`: an agent's egress proxy (`hive-c0re egress-proxy`, run here
//! as a plain child process on this machine's loopback) next to a direct connection to the
//! same upstream, in one run: bulk throughput of 100 MiB (goal: through the proxy ≥ 0.8× of
//! direct), the time to first byte a new connection adds (goal: p50 ≤ 2 ms), and the
//! proxy's resident memory afterwards (goal: ≤ 8 MiB). The tunnel is what TLS traffic
//! takes (CONNECT); the allowlist names the upstream's address, as an admin's entry would.
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
    Proxy(&'a Path),
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
        Via::Proxy(sock) => {
            let mut s = UnixStream::connect(sock).unwrap();
            write!(
                s,
                "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            )
            .unwrap();
            // Read the proxy's answer up to its blank line, byte by byte (it is short).
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
    }
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let port = upstream();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allow"), format!("127.0.0.1:{port}\n")).unwrap();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
        .args(["egress-proxy", "--agent=bench", "--dir"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = dir.path().join("proxy.sock");
    let t0 = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let via = Via::Proxy(&sock);
    let idle_rss = rss_kib(proxy.id());

    // Warm both paths, then alternate so drift hits both alike.
    ttfb(&Via::Direct, port);
    ttfb(&via, port);
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..TTFB_RUNS {
        d.push(ttfb(&Via::Direct, port));
        p.push(ttfb(&via, port));
    }
    let (d50, p50v) = (p50(d), p50(p));
    let (mut bd, mut bp) = (0f64, 0f64);
    for _ in 0..BULK_RUNS {
        bd = bd.max(bulk(&Via::Direct, port));
        bp = bp.max(bulk(&via, port));
    }
    let rss = rss_kib(proxy.id());
    let _ = proxy.kill();
    let _ = proxy.wait();

    println!("egress proxy vs direct, 127.0.0.1 upstream (best of {BULK_RUNS} × 100 MiB; p50 of {TTFB_RUNS} new connections)");
    println!("{:<34} {:>12} {:>12} {:>10}", "", "direct", "proxy", "goal");
    println!(
        "{:<34} {:>9.0} MiB/s {:>6.0} MiB/s {:>10}",
        "bulk throughput", bd, bp, "≥ 0.8×"
    );
    println!("{:<34} {:>12.2}", "  ratio proxy/direct", bp / bd);
    println!(
        "{:<34} {:>9.3} ms {:>9.3} ms {:>10}",
        "time to first byte (p50)",
        d50.as_secs_f64() * 1e3,
        p50v.as_secs_f64() * 1e3,
        ""
    );
    println!(
        "{:<34} {:>12} {:>9.3} ms {:>10}",
        "  added by the proxy",
        "",
        (p50v.saturating_sub(d50)).as_secs_f64() * 1e3,
        "≤ 2 ms"
    );
    println!(
        "{:<34} {:>12} {:>8.1} MiB {:>10}",
        "proxy RSS idle / after",
        "",
        idle_rss as f64 / 1024.0,
        ""
    );
    println!(
        "{:<34} {:>12} {:>8.1} MiB {:>10}",
        "",
        "",
        rss as f64 / 1024.0,
        "≤ 8 MiB"
    );
}
