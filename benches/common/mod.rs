//! What the benches' raw baselines share: planned properties turned into D-Bus values by
//! hand (not through hyperhive's systemd module, which is what is being measured), a
//! JobRemoved tracker of their own, command-line parsing, and the inotify limit that many
//! booted containers need. Each bench uses some of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use hyperhive::plan::{Prop, UnitPlan};
use hyperhive::systemd::proxies::ManagerProxy;
use tokio::sync::oneshot;
use zbus::zvariant::{OwnedObjectPath, Value};

/// systemd answers at most 128 calls in flight per connection (LimitsExceeded above).
pub const MAX_IN_FLIGHT: usize = 128;

/// The plan's properties in the shapes systemd expects, written out here the way a client
/// using nothing but zbus would: `s`, `b`, `t`, `as`, `a(sasb)`, `aay`, `(aiai)`, `a(ss)`, `(bas)`,
/// `a(iayu)`, `a(ssbt)`.
pub fn dbus_properties(plan: &UnitPlan) -> Vec<(&str, Value<'_>)> {
    plan.properties
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Prop::Str(s) => Value::from(s.as_str()),
                Prop::Bool(b) => Value::from(*b),
                Prop::U64(n) => Value::from(*n),
                Prop::U32(n) => Value::from(*n),
                Prop::Strv(v) => Value::from(v.iter().map(String::as_str).collect::<Vec<_>>()),
                Prop::Exec(cmds) => Value::from(
                    cmds.iter()
                        .map(|c| {
                            (
                                c.path.as_str(),
                                c.argv.iter().map(String::as_str).collect::<Vec<_>>(),
                                c.ignore_failure,
                            )
                        })
                        .collect::<Vec<_>>(),
                ),
                Prop::Bytes(v) => Value::from(v.iter().map(Vec::as_slice).collect::<Vec<_>>()),
                Prop::ExitStatus(codes) => Value::from((codes.clone(), Vec::<i32>::new())),
                Prop::Pairs(pairs) => Value::from(
                    pairs
                        .iter()
                        .map(|(a, b)| (a.as_str(), b.as_str()))
                        .collect::<Vec<_>>(),
                ),
                Prop::AddressFamilies(f) => Value::from((true, f.clone())),
                Prop::IpPrefixes(nets) => Value::from(
                    nets.iter()
                        .map(|(addr, prefix)| match addr {
                            std::net::IpAddr::V4(a) => {
                                (2i32, a.octets().to_vec(), u32::from(*prefix))
                            }
                            std::net::IpAddr::V6(a) => {
                                (10i32, a.octets().to_vec(), u32::from(*prefix))
                            }
                        })
                        .collect::<Vec<_>>(),
                ),
                Prop::Binds(binds) => Value::from(
                    binds
                        .iter()
                        .map(|(src, dst)| (src.as_str(), dst.as_str(), false, 16384u64))
                        .collect::<Vec<_>>(),
                ),
            };
            (k.as_str(), value)
        })
        .collect()
}

/// Job results by job path, for the raw baselines: one JobRemoved stream on the connection,
/// results that arrive before their waiter kept for it (as any client of JobRemoved must).
pub struct RawJobs {
    inner: Arc<Mutex<Inner>>,
    listener: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<OwnedObjectPath, oneshot::Sender<String>>,
    finished: HashMap<OwnedObjectPath, String>,
}

impl RawJobs {
    /// Subscribes (once per connection; later calls find it subscribed) and listens.
    pub async fn new(manager: &ManagerProxy<'static>) -> RawJobs {
        let _ = manager.subscribe().await;
        let mut removed = manager.receive_job_removed().await.unwrap();
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let w = inner.clone();
        let listener = tokio::spawn(async move {
            while let Some(sig) = removed.next().await {
                let args = sig.args().unwrap();
                let job = OwnedObjectPath::from(args.job.to_owned());
                let result = args.result.to_string();
                let mut g = w.lock().unwrap();
                match g.waiting.remove(&job) {
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => {
                        g.finished.insert(job, result);
                    }
                }
            }
        });
        RawJobs { inner, listener }
    }

    /// The job's result (`done`, `failed`, ...).
    pub async fn wait(&self, job: OwnedObjectPath) -> String {
        let rx = {
            let mut g = self.inner.lock().unwrap();
            if let Some(r) = g.finished.remove(&job) {
                return r;
            }
            let (tx, rx) = oneshot::channel();
            g.waiting.insert(job, tx);
            rx
        };
        rx.await.unwrap_or_else(|_| "disconnected".into())
    }
}

impl Drop for RawJobs {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// `--name VALUE` from the bench's arguments (cargo bench adds `--bench`, ignored).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            let prefix = format!("{name}=");
            args.iter()
                .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
        })
}

/// The first bare number among the arguments (the older benches' `-- N`).
pub fn bare_number() -> Option<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut skip_next = false;
    for a in &args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if a.starts_with("--") {
            skip_next = !a.contains('=') && a != "--bench";
            continue;
        }
        if let Ok(n) = a.parse() {
            return Some(n);
        }
    }
    None
}

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";
/// The value found before any bench raised the limit, kept until one puts it back: another
/// bench (or test) on this machine may start while the limit is raised and must not take
/// the raised value for the original.
const INOTIFY_ORIGINAL: &str = "/var/tmp/hyperhive-bench-inotify.orig";

/// The value we set, for whoever restores it (Drop, a signal).
static RAISED_TO: OnceLock<u64> = OnceLock::new();

fn read_limit() -> u64 {
    std::fs::read_to_string(INOTIFY_INSTANCES)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn recorded_original() -> Option<u64> {
    std::fs::read_to_string(INOTIFY_ORIGINAL)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Test hosts that are up on this machine now (ours is gone by the time this is asked).
fn live_test_hosts() -> Vec<String> {
    let Ok(dirs) = std::fs::read_dir(testhost::STATE_ROOT) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| {
            let name = d.file_name().to_str()?.to_owned();
            let record = std::fs::read_to_string(d.path().join("host.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&record).ok()?;
            let pid = v.get("nspawn_pid")?.as_u64()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            (state != "Z").then_some(name)
        })
        .collect()
}

/// Raises `fs.inotify.max_user_instances` for the bench's lifetime: every booted container
/// holds several inotify instances as root on this machine, and the kernel's default of
/// 128 stops nspawn (exit 255) at about 20 of them. Never lowers it. Put back on drop and
/// on SIGINT/SIGTERM/SIGHUP (see [`on_signal`]) — unless someone changed it meanwhile, or
/// another test host is still up (its containers may need it; lowering the limit under a
/// neighbour's run breaks its next boots): then it is left raised, the original stays
/// recorded in INOTIFY_ORIGINAL, and the next bench that ends alone puts it back.
pub struct InotifyLimit(());

impl InotifyLimit {
    pub fn raise(to: u64) -> InotifyLimit {
        let now = read_limit();
        if now < to {
            // Below the target, so no bench holds it raised: this is the original (a record
            // left from earlier is stale).
            std::fs::write(INOTIFY_ORIGINAL, format!("{now}\n"))
                .unwrap_or_else(|e| panic!("recording {INOTIFY_ORIGINAL}: {e}"));
            std::fs::write(INOTIFY_INSTANCES, format!("{to}\n"))
                .unwrap_or_else(|e| panic!("raising {INOTIFY_INSTANCES} to {to} (root?): {e}"));
            eprintln!("fs.inotify.max_user_instances: {now} -> {to} while the bench runs");
        }
        // Set also when it was raised already: a run that found it raised by an earlier,
        // interrupted or overlapping bench puts the recorded original back all the same.
        if now <= to && recorded_original().is_some() {
            let _ = RAISED_TO.set(to);
        }
        InotifyLimit(())
    }

    /// Raises it again if someone lowered it meanwhile (a neighbour's bench or test that
    /// raised it before us and has ended, putting its original back): called before each
    /// round, so that our next containers can boot. Returns the value found.
    pub fn ensure(to: u64) -> u64 {
        let now = read_limit();
        if now < to {
            std::fs::write(INOTIFY_ORIGINAL, format!("{now}\n"))
                .unwrap_or_else(|e| panic!("recording {INOTIFY_ORIGINAL}: {e}"));
            std::fs::write(INOTIFY_INSTANCES, format!("{to}\n"))
                .unwrap_or_else(|e| panic!("raising {INOTIFY_INSTANCES} to {to}: {e}"));
            let _ = RAISED_TO.set(to);
            eprintln!(
                "fs.inotify.max_user_instances: lowered to {now} by someone else during the run, \
                 raised to {to} again"
            );
        }
        now
    }

    /// The limit now, for failure messages.
    pub fn current() -> u64 {
        read_limit()
    }

    /// Puts the original value back (idempotent).
    pub fn restore() {
        let (Some(&to), Some(was)) = (RAISED_TO.get(), recorded_original()) else {
            return;
        };
        if read_limit() != to {
            return; // changed by someone else since: theirs now
        }
        let others = live_test_hosts();
        if !others.is_empty() {
            eprintln!(
                "fs.inotify.max_user_instances: left at {to}, test hosts {others:?} are still up; \
                 the original {was} is in {INOTIFY_ORIGINAL} (put back by the next bench that \
                 ends alone, or: echo {was} > {INOTIFY_INSTANCES}; rm {INOTIFY_ORIGINAL})"
            );
            return;
        }
        if std::fs::write(INOTIFY_INSTANCES, format!("{was}\n")).is_ok() {
            let _ = std::fs::remove_file(INOTIFY_ORIGINAL);
            eprintln!("fs.inotify.max_user_instances: back to {was}");
        }
    }
}

impl Drop for InotifyLimit {
    fn drop(&mut self) {
        Self::restore();
    }
}

/// On SIGINT, SIGTERM or SIGHUP: run `cleanup` (tear down the test host), put the inotify
/// limit back, exit 130. Without it a Ctrl-C would skip every Drop.
pub fn on_signal(cleanup: impl FnOnce() + Send + 'static) {
    static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // The teardown pulls the test host from under the main thread, which then fails: that
    // failure is no news.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            hook(info);
        }
    }));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = signal(SignalKind::interrupt()).unwrap();
            let mut term = signal(SignalKind::terminate()).unwrap();
            let mut hup = signal(SignalKind::hangup()).unwrap();
            let _ = ready_tx.send(());
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        });
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("interrupted: tearing down the test host");
        cleanup();
        InotifyLimit::restore();
        std::process::exit(130);
    });
    // The handlers are in place before anything worth interrupting starts.
    let _ = ready_rx.recv();
}

/// min, p50, max.
pub fn stats(v: &[Duration]) -> (Duration, Duration, Duration) {
    let mut v = v.to_vec();
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time used so far by this process (all threads), at nanosecond resolution.
pub fn self_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) of another process, from /proc (clock-tick resolution).
pub fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the comm: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// CPU time (user + system) of this process's waited-for children (clock ticks).
pub fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // cutime and cstime are fields 16 and 17 (1-based).
    let ticks: u64 = [13, 14]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// The PID (on this machine) of the process named `comm` that runs in the test host's
/// unit `unit` (e.g. dbus-daemon in dbus.service), not in an agent container.
pub fn test_host_process(host: &str, comm: &str, unit: &str) -> Option<u32> {
    let needle = format!("/hyperhive-testhost/{host}/");
    let suffix = format!("/system.slice/{unit}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        (name.trim() == comm
            && cgroup
                .lines()
                .any(|l| l.contains(&needle) && !l.contains("hive.slice") && l.ends_with(&suffix)))
        .then_some(pid)
    })
}

/// Everything the test host's cgroup has used: its systemd, bus, services and containers.
pub fn test_host_cpu(host: &str) -> Duration {
    let stat = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/unified/hyperhive-testhost/{host}/cpu.stat"
    ))
    .or_else(|_| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/hyperhive-testhost/{host}/cpu.stat"))
    })
    .unwrap_or_default();
    let usec = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Duration::from_micros(usec)
}

/// CPU used so far by the processes of unit `unit` in the test host (e.g. an agent's
/// container and everything in it), from the unit's cgroup; zero if it has none.
pub fn test_host_unit_cpu(host: &str, slice: &str, unit: &str) -> Duration {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .find_map(|root| {
            let stat = std::fs::read_to_string(format!(
                "{root}/hyperhive-testhost/{host}/payload/{slice}/{unit}/cpu.stat"
            ))
            .ok()?;
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_micros)
        })
        .unwrap_or_default()
}

/// CPU used by each party, read before and after something is measured.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    /// This process and the children it waited for (hivectl): the client side.
    pub client: Duration,
    /// The test host's systemd (PID 1 inside).
    pub systemd: Duration,
    /// The test host's dbus-daemon.
    pub bus: Duration,
    /// hive-c0re, if the test host runs it.
    pub daemon: Duration,
    /// The whole test host, containers included.
    pub host: Duration,
}

pub struct CpuMeter {
    host: String,
    leader: u32,
    bus: Option<u32>,
    daemon: Option<u32>,
}

impl CpuMeter {
    pub fn new(host: &str, leader: u32) -> CpuMeter {
        CpuMeter {
            host: host.to_string(),
            leader,
            bus: test_host_process(host, "dbus-daemon", "dbus.service"),
            daemon: test_host_process(host, "hive-c0re", "hive-c0re.service"),
        }
    }

    pub fn now(&self) -> Cpu {
        Cpu {
            client: self_cpu() + children_cpu(),
            systemd: proc_cpu(self.leader),
            bus: self.bus.map(proc_cpu).unwrap_or_default(),
            daemon: self.daemon.map(proc_cpu).unwrap_or_default(),
            host: test_host_cpu(&self.host),
        }
    }

    pub fn since(&self, before: Cpu) -> Cpu {
        let now = self.now();
        Cpu {
            client: now.client.saturating_sub(before.client),
            systemd: now.systemd.saturating_sub(before.systemd),
            bus: now.bus.saturating_sub(before.bus),
            daemon: now.daemon.saturating_sub(before.daemon),
            host: now.host.saturating_sub(before.host),
        }
    }
}

/// The machine's 1-minute load average: other work on a 2-core machine shows in every
/// timing, so the tables say how busy it was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
