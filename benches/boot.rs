//! Creating and starting N booted agent containers, on a real systemd test host:
//!
//! - hyperhive: N `hivectl create NAME --root / --volatile yes`, C at a time. Each returns
//!   when the daemon has validated, saved the spec, bound the agent's socket, created the
//!   container unit, seen its start job finish (the container booted: the unit is
//!   Type=notify with nspawn's --notify-ready=yes) and brought the harness up inside it,
//!   connected to its socket.
//! - baseline: N raw StartTransientUnit calls of the same container unit — the very
//!   properties `hyperhive::plan::container_unit` plans for the daemon's host (checked
//!   against the HIVE_PLAN hash the daemon stamps), turned into D-Bus values here — on
//!   one D-Bus connection, C in flight, each waiting for its JobRemoved. No harness (and
//!   no egress socket: only its directory, which the unit binds). The
//!   units are named `bench-raw-*` so that the daemon, which watches `hive-agent-*`, has
//!   nothing to do with them.
//!
//! hivectl runs on this machine against the test host's bus (DBUS_SYSTEM_BUS_ADDRESS), as
//! the baseline's connection does, so neither pays for entering the test host.
//! Every round starts from nothing: the previous round's agents are destroyed (`hivectl
//! destroy --purge`) or its raw units stopped, reset, their machines unregistered and
//! their directories removed, and the bench waits until machined lists no machine and
//! systemd no such unit. Runs alternate which side goes first. Reports wall time for all
//! N, per agent, each call's own latency, the ratio hyperhive / baseline, each call's
//! time line (prep, boot, harness, return, from systemd's unit timestamps) and the CPU
//! each party used, the containers' own included. Asserts no timings.
//!
//! Booted containers each hold several inotify instances as root on this machine: the
//! bench raises `fs.inotify.max_user_instances` to 8192 while it runs (never lowers it)
//! and puts the old value back at the end, on a panic and on Ctrl-C (see
//! `common::InotifyLimit` for what happens when other test hosts share the machine).
//! C is 8 unless `--concurrency` says otherwise (`all`: N at once), capped at 128
//! (systemd's limit of replies in flight per connection; pending jobs stay far below its
//! ~512).
//!
//! cargo bench --bench boot [-- --agents 1,10,50 --concurrency 8|all --runs 3]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dbus_properties, Cpu, CpuMeter, InotifyLimit, RawJobs};
use hyperhive::paths::Roots;
use hyperhive::plan::{self, Host, UnitPlan, DEFAULT_BASE_PATH};
use hyperhive::spec::{AgentName, AgentSpec, SpecFile, Volatile};
use hyperhive::systemd::proxies::{MachinedProxy, ManagerProxy};
use testhost::{Options, TestHost};
use tokio::sync::Semaphore;

const INOTIFY_INSTANCES: u64 = 8192;
/// Longer than any sane boot of 50 containers on 2 cores; a hang fails the bench instead
/// of stalling it.
const TIMEOUT: Duration = Duration::from_secs(300);
const RAW_PREFIX: &str = "bench-raw-";

/// The host facts hive-c0re computes for itself in the test host (no flags, no
/// environment in its unit): nspawn from /usr/bin, hive-c0re and hive-harness where the
/// test host's bin dir is bound, the default PATH.
fn daemon_host(bin: &Path) -> Host {
    let hive_c0re = bin.join("hive-c0re").canonicalize().unwrap();
    Host {
        roots: Roots::default(),
        nspawn: "/usr/bin/systemd-nspawn".into(),
        hive_harness: hive_c0re.with_file_name("hive-harness"),
        hive_c0re,
        base_path: DEFAULT_BASE_PATH.iter().map(PathBuf::from).collect(),
        // The test host keeps a persistent journal, so hive-c0re there plans each agent's
        // idmapped journal directory.
        journal: Some("/var/log/journal".into()),
        // As hive-c0re there reckons them: no hive.toml, the host's (shared) memory.
        defaults: hyperhive::spec::bounds::Defaults::shipped(mem_total()),
        disk_images: false,
    }
}

/// MemTotal in bytes, as hive-c0re reads it (the test host shares this kernel).
fn mem_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}

/// What `hivectl create NAME --root / --volatile yes` has the daemon plan.
fn container_plan(name: &str, host: &Host) -> UnitPlan {
    let file = SpecFile {
        root: Some("/".into()),
        volatile: Some(Volatile::Yes),
        ..Default::default()
    };
    let spec = AgentSpec::validate(&AgentName::parse(name).unwrap(), &file).unwrap();
    plan::container_unit(&spec, host)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Hyperhive,
    Raw,
}

/// One measured round: wall time for all N, each call's own time, CPU per party, and
/// where each call's time went.
struct Round {
    wall: Duration,
    calls: Vec<Duration>,
    cpu: Cpu,
    /// CPU the round's container units used, everything in them included (for
    /// hyperhive: the harness, and the container's systemd and bus serving the daemon).
    containers: Duration,
    phases: Vec<Phases>,
}

/// One call's time line (ms), from systemd's own realtime timestamps of the units:
/// `prep` call → container unit's start (InactiveExitTimestamp), `boot` → its
/// ActiveEnterTimestamp (READY=1), `harness` → the harness unit active in the container
/// (hyperhive only), `rest` → the call returned.
#[derive(Clone, Copy, Default)]
struct Phases {
    prep: f64,
    boot: f64,
    harness: f64,
    rest: f64,
}

/// When one call started (realtime, µs since the epoch, as systemd's timestamps) and how
/// long it took.
struct Call {
    start_us: u64,
    took: Duration,
}

fn realtime_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// InactiveExitTimestamp and ActiveEnterTimestamp of a loaded unit.
async fn unit_times(conn: &zbus::Connection, unit: &str) -> (u64, u64) {
    let manager = ManagerProxy::new(conn).await.unwrap();
    let path = manager.get_unit(unit).await.unwrap();
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination("org.freedesktop.systemd1")
        .unwrap()
        .path(path)
        .unwrap()
        .build()
        .await
        .unwrap();
    let iface =
        zbus::names::InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");
    let mut t = [0u64; 2];
    for (k, name) in ["InactiveExitTimestamp", "ActiveEnterTimestamp"]
        .iter()
        .enumerate()
    {
        t[k] = u64::try_from(props.get(iface.clone(), name).await.unwrap()).unwrap();
    }
    (t[0], t[1])
}

struct Bench<'a> {
    h: &'a TestHost,
    conn: zbus::Connection,
    hivectl: &'a str,
    bus: String,
    plan_host: Host,
    manager: ManagerProxy<'static>,
    machined: MachinedProxy<'static>,
    cpu: CpuMeter,
}

impl Bench<'_> {
    fn agent(side: Side, i: usize) -> String {
        match side {
            Side::Hyperhive => format!("a{i}"),
            Side::Raw => format!("r{i}"),
        }
    }

    async fn hivectl(&self, args: &[&str]) {
        let run = tokio::process::Command::new(self.hivectl)
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .stdin(std::process::Stdio::null())
            .output();
        let out = tokio::time::timeout(TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("hivectl {args:?}: no answer in {TIMEOUT:?}"))
            .unwrap();
        assert!(
            out.status.success(),
            "hivectl {args:?} failed ({}): {} (fs.inotify.max_user_instances is {} now)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            InotifyLimit::current()
        );
    }

    /// Runs `op(i)` for i in 0..n, `c` at a time; returns the wall time and each call.
    async fn fan_out<F, Fut>(n: usize, c: usize, op: F) -> (Duration, Vec<Call>)
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let slots = Arc::new(Semaphore::new(c));
        let t = Instant::now();
        let calls = futures_util::future::join_all((0..n).map(|i| {
            let slots = slots.clone();
            let fut = op(i);
            async move {
                let _permit = slots.acquire_owned().await.unwrap();
                let start_us = realtime_us();
                let t = Instant::now();
                fut.await;
                Call {
                    start_us,
                    took: t.elapsed(),
                }
            }
        }))
        .await;
        (t.elapsed(), calls)
    }

    async fn round(&self, side: Side, n: usize, c: usize) -> Round {
        match side {
            Side::Hyperhive => {
                let names: Vec<String> = (0..n).map(|i| Self::agent(side, i)).collect();
                let cpu = self.cpu.now();
                let (wall, calls) = Self::fan_out(n, c, |i| {
                    let name = names[i].clone();
                    async move {
                        self.hivectl(&["create", "-q", &name, "--root", "/", "--volatile", "yes"])
                            .await
                    }
                })
                .await;
                let cpu = self.cpu.since(cpu);
                // Before reading the time lines, which talk to the containers' buses.
                let containers = self.containers_cpu(side, n);
                let phases = self.phases(side, &calls).await;
                Round {
                    wall,
                    calls: calls.iter().map(|c| c.took).collect(),
                    cpu,
                    containers,
                    phases,
                }
            }
            Side::Raw => {
                let plans: Vec<UnitPlan> = (0..n).map(|i| self.raw_plan(i)).collect();
                // The bind sources the daemon creates for its agents (state, credentials).
                let mut mkdir = vec!["mkdir", "-p", "-m", "0700"];
                let dirs: Vec<String> = (0..n)
                    .flat_map(|i| {
                        let a = AgentName::parse(&Self::agent(side, i)).unwrap();
                        let roots = &self.plan_host.roots;
                        [roots.state_dir(&a), roots.claude_dir(&a)]
                    })
                    .map(|p| p.display().to_string())
                    .collect();
                mkdir.extend(dirs.iter().map(String::as_str));
                self.h.run_ok(&mkdir);
                // And each one's journal directory, as the daemon makes it (0755).
                let mut mkdir = vec!["mkdir".to_string(), "-p".into(), "-m".into(), "0755".into()];
                mkdir.extend((0..n).map(|i| {
                    let a = AgentName::parse(&Self::agent(side, i)).unwrap();
                    format!("/var/log/journal/{}", plan::agent_machine_id(&a))
                }));
                let mkdir: Vec<&str> = mkdir.iter().map(String::as_str).collect();
                self.h.run_ok(&mkdir);
                // And, for an agent on its private network (the default), the directory the
                // daemon makes for its egress proxy, bound into the container, with the
                // login shells' proxy variables in it as the daemon writes them. No socket
                // unit (the proxy behind it would not start before the agent reaches out).
                for i in 0..n {
                    let a = AgentName::parse(&Self::agent(side, i)).unwrap();
                    let dir = plan::egress::dir(&self.plan_host.roots, &a);
                    let file = dir.join(plan::egress::PROFILE_FILE);
                    self.h.run_ok(&[
                        "sh",
                        "-c",
                        "mkdir -p -m 0755 \"$1\" && printf %s \"$2\" > \"$3\"",
                        "sh",
                        &dir.display().to_string(),
                        &plan::egress::profile_script(),
                        &file.display().to_string(),
                    ]);
                }
                let jobs = RawJobs::new(&self.manager).await;
                let cpu = self.cpu.now();
                let (wall, calls) = Self::fan_out(n, c, |i| {
                    let plan = &plans[i];
                    let jobs = &jobs;
                    async move {
                        let props = dbus_properties(plan);
                        let job = self
                            .manager
                            .start_transient_unit(&plan.unit, "fail", &props, &[])
                            .await
                            .unwrap_or_else(|e| panic!("starting {}: {e}", plan.unit));
                        let result = tokio::time::timeout(TIMEOUT, jobs.wait(job))
                            .await
                            .unwrap_or_else(|_| panic!("{}: no JobRemoved", plan.unit));
                        assert_eq!(
                            result,
                            "done",
                            "start job of {} (fs.inotify.max_user_instances is {} now)",
                            plan.unit,
                            InotifyLimit::current()
                        );
                    }
                })
                .await;
                let cpu = self.cpu.since(cpu);
                // Before reading the time lines, which talk to the containers' buses.
                let containers = self.containers_cpu(side, n);
                let phases = self.phases(side, &calls).await;
                Round {
                    wall,
                    calls: calls.iter().map(|c| c.took).collect(),
                    cpu,
                    containers,
                    phases,
                }
            }
        }
    }

    /// CPU used so far by the side's N container units (all of it since each was created).
    fn containers_cpu(&self, side: Side, n: usize) -> Duration {
        (0..n)
            .map(|i| {
                let unit = match side {
                    Side::Hyperhive => AgentName::parse(&Self::agent(side, i))
                        .unwrap()
                        .container_unit(),
                    Side::Raw => self.raw_plan(i).unit,
                };
                common::test_host_unit_cpu(self.h.name(), plan::SLICE, &unit)
            })
            .sum()
    }

    /// Each call's time line, read from systemd (untimed, before the teardown).
    async fn phases(&self, side: Side, calls: &[Call]) -> Vec<Phases> {
        let mut out = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            let agent = Self::agent(side, i);
            let unit = match side {
                Side::Hyperhive => AgentName::parse(&agent).unwrap().container_unit(),
                Side::Raw => self.raw_plan(i).unit,
            };
            let (started, booted) = unit_times(&self.conn, &unit).await;
            let end = call.start_us + call.took.as_micros() as u64;
            let ms = |a: u64, b: u64| (b as f64 - a as f64) / 1000.0;
            let mut p = Phases {
                prep: ms(call.start_us, started),
                boot: ms(started, booted),
                harness: 0.0,
                rest: ms(booted, end),
            };
            if side == Side::Hyperhive {
                // The container's own systemd, reached as an admin would (`systemctl -M`,
                // which joins the container's namespaces as the daemon does).
                let machine = format!("h-{agent}");
                let ready: u64 = self
                    .h
                    .run_ok(&[
                        "busctl",
                        "-M",
                        &machine,
                        "get-property",
                        "org.freedesktop.systemd1",
                        "/org/freedesktop/systemd1/unit/hive_2dharness_2eservice",
                        "org.freedesktop.systemd1.Unit",
                        "ActiveEnterTimestamp",
                    ])
                    .trim_start_matches("t ")
                    .parse()
                    .unwrap_or_else(|e| panic!("{machine}: harness ready time: {e}"));
                p.harness = ms(booted, ready);
                p.rest = ms(ready, end);
            }
            out.push(p);
        }
        out
    }

    fn raw_plan(&self, i: usize) -> UnitPlan {
        let agent = Self::agent(Side::Raw, i);
        let mut p = container_plan(&agent, &self.plan_host);
        p.unit = format!("{RAW_PREFIX}{agent}.service");
        p
    }

    /// Back to nothing: no agent, no unit, no machine, no leftover directory.
    async fn teardown(&self, side: Side, n: usize, c: usize) {
        match side {
            Side::Hyperhive => {
                Self::fan_out(n, c, |i| {
                    let name = Self::agent(side, i);
                    async move { self.hivectl(&["destroy", "-q", "--purge", &name]).await }
                })
                .await;
            }
            Side::Raw => {
                let jobs = RawJobs::new(&self.manager).await;
                Self::fan_out(n, c, |i| {
                    let plan = self.raw_plan(i);
                    let jobs = &jobs;
                    async move {
                        if let Ok(job) = self.manager.stop_unit(&plan.unit, "replace").await {
                            let _ = tokio::time::timeout(TIMEOUT, jobs.wait(job)).await;
                        }
                        let _ = self.manager.reset_failed_unit(&plan.unit).await;
                        if let Some(m) = &plan.machine {
                            let _ = self.machined.unregister_machine(m).await;
                        }
                    }
                })
                .await;
                self.h.run_ok(&[
                    "sh",
                    "-c",
                    "rm -rf /run/hyperhive/r[0-9]* /var/lib/hyperhive/agents/r[0-9]* /run/private/hyperhive-egress/r[0-9]*",
                ]);
            }
        }
        self.settle().await;
    }

    /// Waits until machined has no machine and systemd no agent or raw unit loaded.
    async fn settle(&self) {
        let t = Instant::now();
        loop {
            let machines = self.h.run_ok(&["machinectl", "list", "--no-legend"]);
            let units = self.h.run_ok(&[
                "systemctl",
                "list-units",
                "--all",
                "--no-legend",
                "hive-agent-*",
                &format!("{RAW_PREFIX}*"),
            ]);
            if machines.is_empty() && units.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "teardown did not settle in 60 s:\n{machines}\n{units}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let journald and the page cache catch up before the next round is timed.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn parse_agents() -> Vec<usize> {
    common::arg("--agents")
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("--agents N,N,..."))
                .collect()
        })
        .unwrap_or_else(|| vec![1, 10, 50])
}

fn main() {
    let agents = parse_agents();
    // None: all N at once.
    let concurrency: Option<usize> = match common::arg("--concurrency").as_deref() {
        Some("all") => None,
        Some(c) => Some(c.parse().expect("--concurrency N|all")),
        None => Some(8),
    };
    let runs: usize = common::arg("--runs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    // Raised before the test host boots; dropped (restored) after it is torn down.
    let _inotify = InotifyLimit::raise(INOTIFY_INSTANCES);
    let hivectl = env!("CARGO_BIN_EXE_hivectl");
    let bin = Path::new(hivectl).parent().unwrap().to_path_buf();
    let h = TestHost::boot(Options {
        bin_dir: Some(bin.clone()),
        units_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("units")),
        start_daemon: true,
        ..Default::default()
    })
    .expect("booting the test host");
    let name = h.name().to_string();
    common::on_signal(move || {
        let _ = testhost::down(&name);
    });
    let load_before = common::load_average();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows: Vec<(usize, usize, Vec<Round>, Vec<Round>)> = Vec::new();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(h.bus_address().as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let bench = Bench {
            h: &h,
            conn: conn.clone(),
            hivectl,
            bus: h.bus_address(),
            plan_host: daemon_host(&bin),
            manager: ManagerProxy::new(&conn).await.unwrap(),
            machined: MachinedProxy::new(&conn).await.unwrap(),
            cpu: CpuMeter::new(h.name(), h.leader()),
        };

        // Warm-up, untimed, and the check that the baseline starts the daemon's very unit:
        // the daemon stamps the hash of its plan's properties into the unit's environment.
        bench.round(Side::Hyperhive, 1, 1).await;
        let env = h.show("hive-agent-a0.service", "Environment");
        let ours = container_plan("a0", &bench.plan_host).hash;
        assert!(
            env.split_whitespace()
                .any(|e| e == format!("HIVE_PLAN={ours}")),
            "the baseline's plan (HIVE_PLAN={ours}) differs from the daemon's unit: {env}"
        );
        bench.teardown(Side::Hyperhive, 1, 1).await;
        bench.round(Side::Raw, 1, 1).await;
        bench.teardown(Side::Raw, 1, 1).await;

        for &n in &agents {
            let c = concurrency
                .unwrap_or(n)
                .min(n)
                .clamp(1, common::MAX_IN_FLIGHT);
            let (mut ours, mut raw) = (Vec::new(), Vec::new());
            for run in 0..runs {
                let order = if run % 2 == 0 {
                    [Side::Raw, Side::Hyperhive]
                } else {
                    [Side::Hyperhive, Side::Raw]
                };
                for side in order {
                    InotifyLimit::ensure(INOTIFY_INSTANCES);
                    let r = bench.round(side, n, c).await;
                    eprintln!(
                        "N={n} C={c} run {}/{runs} {}: {:.2} s",
                        run + 1,
                        if side == Side::Raw {
                            "raw"
                        } else {
                            "hyperhive"
                        },
                        r.wall.as_secs_f64()
                    );
                    match side {
                        Side::Hyperhive => ours.push(r),
                        Side::Raw => raw.push(r),
                    }
                    bench.teardown(side, n, c).await;
                }
            }
            rows.push((n, c, ours, raw));
        }
    });
    drop(rt);
    report(&rows, runs, &load_before);
}

fn report(rows: &[(usize, usize, Vec<Round>, Vec<Round>)], runs: usize, load_before: &str) {
    println!(
        "machine load average (1 min): {load_before} before, {} after; {runs} runs per row",
        common::load_average()
    );
    println!(
        "{:<5} {:>4}  {:<34} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "N", "C", "create+start, booted", "min s", "p50 s", "max s", "ms/agent", "call p50"
    );
    for (n, c, ours, raw) in rows {
        for (label, rounds) in [
            ("hyperhive: hivectl create", ours),
            ("baseline: raw StartTransientUnit", raw),
        ] {
            let walls: Vec<Duration> = rounds.iter().map(|r| r.wall).collect();
            let calls: Vec<Duration> = rounds.iter().flat_map(|r| r.calls.clone()).collect();
            let (min, p50, max) = common::stats(&walls);
            println!(
                "{:<5} {:>4}  {:<34} {:>7.2} {:>7.2} {:>7.2} {:>9.0} {:>9.0}",
                n,
                c,
                label,
                min.as_secs_f64(),
                p50.as_secs_f64(),
                max.as_secs_f64(),
                common::ms(p50) / *n as f64,
                common::ms(common::stats(&calls).1)
            );
        }
        let p50 = |r: &[Round]| {
            common::stats(&r.iter().map(|r| r.wall).collect::<Vec<_>>())
                .1
                .as_secs_f64()
        };
        let mut paired: Vec<f64> = ours
            .iter()
            .zip(raw)
            .map(|(a, b)| a.wall.as_secs_f64() / b.wall.as_secs_f64())
            .collect();
        paired.sort_by(f64::total_cmp);
        // Issue 28: one create within 1.1x raw; many at once within 1.05x, where the
        // containers' own boot dominates.
        let goal = if *n == 1 { "1.1" } else { "1.05" };
        println!(
            "{:<5} {:>4}  ratio hyperhive/raw {:.2} (p50s; per run {}) goal <= {goal}",
            n,
            c,
            p50(ours) / p50(raw),
            paired
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!();
    println!(
        "{:<5} {:>4}  {:<34} {:>8} {:>8} {:>8} {:>8}",
        "N", "C", "one call's time line (ms, p50)", "prep", "boot", "harness", "return"
    );
    for (n, c, ours, raw) in rows {
        for (label, rounds) in [("hyperhive", ours), ("baseline", raw)] {
            let all: Vec<Phases> = rounds.iter().flat_map(|r| r.phases.clone()).collect();
            let p50 = |f: fn(&Phases) -> f64| {
                let mut v: Vec<f64> = all.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{:<5} {:>4}  {:<34} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
                n,
                c,
                label,
                p50(|p| p.prep),
                p50(|p| p.boot),
                p50(|p| p.harness),
                p50(|p| p.rest)
            );
        }
    }
    println!();
    println!(
        "{:<5} {:>4}  {:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "N", "C", "CPU per round (ms, p50)", "client", "systemd", "dbus", "c0re", "agents", "host"
    );
    for (n, c, ours, raw) in rows {
        for (label, rounds) in [("hyperhive", ours), ("baseline", raw)] {
            let p50 = |f: fn(&Cpu) -> Duration| {
                let v: Vec<Duration> = rounds.iter().map(|r| f(&r.cpu)).collect();
                common::ms(common::stats(&v).1)
            };
            let containers: Vec<Duration> = rounds.iter().map(|r| r.containers).collect();
            println!(
                "{:<5} {:>4}  {:<34} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
                n,
                c,
                label,
                p50(|c| c.client),
                p50(|c| c.systemd),
                p50(|c| c.bus),
                p50(|c| c.daemon),
                common::ms(common::stats(&containers).1),
                p50(|c| c.host)
            );
        }
    }
}
