//! N transient units through hyperhive's planner and its systemd module (property
//! conversion, StartTransientUnit, waiting for each job through the shared JobRemoved
//! tracker) against raw StartTransientUnit calls on one connection, each waiting for its
//! JobRemoved, at the same concurrency — the orchestrator's cost isolated from container
//! boots: every unit runs `sleep` instead of systemd-nspawn.
//!
//! Two baselines: the same planned properties (~15: runtime dirs, ExecStopPost,
//! LogExtraFields, environment, ...) turned into D-Bus values by hand here, so that the
//! ratio shows hyperhive's own cost; and the old two-property unit (Type, ExecStart), which
//! shows what systemd's extra work for those properties costs. Every variant runs in every
//! round, in rotating order, each starting from nothing: the previous variant's units are
//! stopped (jobs waited for) and their runtime dirs removed first, untimed.
//!
//! A second table shows the CPU each party used per round (this process — the client —,
//! the test host's systemd, its dbus-daemon, the whole test host): wall time on a shared
//! 2-core machine is noisy, CPU time says where the work is.
//!
//! Concurrency stays under systemd's limits (128 replies in flight per connection; far
//! below ~512 pending jobs). Prints a table; asserts no timings. Needs root (boots a test
//! host).
//!
//! cargo bench --bench orchestrator [-- [UNITS] [--runs R] [--concurrency C]]
//! (default 200 units, 5 runs, 64 in flight)

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dbus_properties, RawJobs};
use hyperhive::paths::Roots;
use hyperhive::plan::{self, ExecCommand, Host, Prop};
use hyperhive::spec::{AgentName, AgentSpec, SpecFile};
use hyperhive::systemd::proxies::ManagerProxy;
use hyperhive::systemd::Systemd;
use testhost::{Options, TestHost};
use tokio::sync::Semaphore;
use zbus::zvariant::Value;

const SLEEP: &str = "/usr/bin/sleep";

fn host() -> Host {
    Host {
        roots: Roots::default(),
        nspawn: "/usr/bin/systemd-nspawn".into(),
        hive_c0re: "/usr/bin/true".into(),
        hive_harness: "/usr/bin/true".into(),
        base_path: vec!["/usr/bin".into()],
        journal: None,
        defaults: hyperhive::spec::bounds::Defaults::shipped(8 << 30),
        disk_images: false,
    }
}

/// The planner's unit for agent `name`, with a trivial command in place of nspawn.
fn trivial_plan(name: &str) -> plan::UnitPlan {
    let file = SpecFile {
        root: Some("/".into()),
        volatile: Some(hyperhive::spec::Volatile::Yes),
        ..Default::default()
    };
    let spec = AgentSpec::validate(&AgentName::parse(name).unwrap(), &file).unwrap();
    let mut p = plan::container_unit(&spec, &host());
    for (k, v) in p.properties.iter_mut() {
        match k.as_str() {
            "Type" => *v = Prop::Str("exec".into()),
            "ExecStart" => {
                *v = Prop::Exec(vec![ExecCommand {
                    path: SLEEP.into(),
                    argv: vec![SLEEP.into(), "infinity".into()],
                    ignore_failure: false,
                }])
            }
            _ => {}
        }
    }
    p
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Hyperhive,
    RawSame,
    RawTwo,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Hyperhive, Variant::RawSame, Variant::RawTwo];

    fn prefix(self) -> &'static str {
        match self {
            Variant::Hyperhive => "h",
            Variant::RawSame => "s",
            Variant::RawTwo => "t",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Hyperhive => "hyperhive: planner + systemd module (job tracker)",
            Variant::RawSame => "baseline: raw, the same planned properties",
            Variant::RawTwo => "baseline: raw, 2 properties (Type, ExecStart)",
        }
    }
}

struct Bench {
    conn: zbus::Connection,
    cpu: common::CpuMeter,
    manager: ManagerProxy<'static>,
    units: usize,
    concurrency: usize,
}

impl Bench {
    /// Starts `units` units the variant's way; returns the wall time, the CPU each party
    /// used meanwhile, and the unit names.
    async fn round(&self, v: Variant, round: usize) -> (Duration, common::Cpu, Vec<String>) {
        let agents: Vec<String> = (0..self.units)
            .map(|i| format!("{}{round}x{i}", v.prefix()))
            .collect();
        // hyperhive plans each unit inside the timing, as the daemon does per create; the
        // raw baselines are clients that know their properties already.
        let plans: Vec<_> = agents
            .iter()
            .map(|a| (v != Variant::Hyperhive).then(|| trivial_plan(a)))
            .collect();
        let names: Vec<String> = agents
            .iter()
            .map(|a| AgentName::parse(a).unwrap().container_unit())
            .collect();
        // Each variant sets up its own job tracking, outside the timing, so only one
        // JobRemoved listener runs in this process while a variant is measured.
        let (sd, jobs) = match v {
            Variant::Hyperhive => (Some(Systemd::manager(&self.conn).await.unwrap()), None),
            _ => (None, Some(Arc::new(RawJobs::new(&self.manager).await))),
        };
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let cpu = self.cpu.now();
        let t = Instant::now();
        let tasks: Vec<_> = plans
            .into_iter()
            .zip(agents)
            .map(|(p, agent)| {
                let slots = slots.clone();
                let sd = sd.clone();
                let manager = self.manager.clone();
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    let _permit = slots.acquire_owned().await.unwrap();
                    let p = p.unwrap_or_else(|| trivial_plan(&agent));
                    match v {
                        Variant::Hyperhive => sd.unwrap().start_transient(&p).await.unwrap(),
                        Variant::RawSame => {
                            let props = dbus_properties(&p);
                            let job = manager
                                .start_transient_unit(&p.unit, "fail", &props, &[])
                                .await
                                .unwrap();
                            let jobs = jobs.unwrap();
                            assert_eq!(jobs.wait(job).await, "done", "{}", p.unit);
                        }
                        Variant::RawTwo => {
                            let exec = vec![(SLEEP, vec![SLEEP, "infinity"], false)];
                            let props: Vec<(&str, Value<'_>)> = vec![
                                ("Type", Value::from("exec")),
                                ("ExecStart", Value::from(exec)),
                            ];
                            let job = manager
                                .start_transient_unit(&p.unit, "fail", &props, &[])
                                .await
                                .unwrap();
                            let jobs = jobs.unwrap();
                            assert_eq!(jobs.wait(job).await, "done", "{}", p.unit);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        (t.elapsed(), self.cpu.since(cpu), names)
    }

    /// Stops the units and waits for every stop job, so the next round starts from nothing.
    async fn teardown(&self, units: Vec<String>) {
        let jobs = Arc::new(RawJobs::new(&self.manager).await);
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tasks: Vec<_> = units
            .into_iter()
            .map(|u| {
                let slots = slots.clone();
                let manager = self.manager.clone();
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    let _permit = slots.acquire_owned().await.unwrap();
                    let job = manager.stop_unit(&u, "replace").await.unwrap();
                    jobs.wait(job).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
}

fn main() {
    let units = common::arg("--units")
        .and_then(|v| v.parse().ok())
        .or_else(common::bare_number)
        .unwrap_or(200);
    let runs: usize = common::arg("--runs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let concurrency: usize = common::arg("--concurrency")
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
        .clamp(1, common::MAX_IN_FLIGHT);
    let hivectl = env!("CARGO_BIN_EXE_hivectl");
    let h = TestHost::boot(Options {
        bin_dir: Some(Path::new(hivectl).parent().unwrap().to_path_buf()),
        ..Default::default()
    })
    .expect("booting the test host");
    let name = h.name().to_string();
    common::on_signal(move || {
        let _ = testhost::down(&name);
    });
    let load_before = common::load_average();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Variant::ALL.len()];
    let mut cpus: Vec<Vec<common::Cpu>> = vec![Vec::new(); Variant::ALL.len()];
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(h.bus_address().as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let manager = ManagerProxy::new(&conn).await.unwrap();
        let bench = Bench {
            conn,
            cpu: common::CpuMeter::new(h.name(), h.leader()),
            manager,
            units,
            concurrency,
        };
        // Warm-up: one untimed round of each, so the first measured one pays no cold caches.
        for v in Variant::ALL {
            let (_, _, names) = bench.round(v, runs).await;
            bench.teardown(names).await;
        }
        for round in 0..runs {
            // Rotating order, so drift on a noisy machine and position hit all alike.
            for k in 0..Variant::ALL.len() {
                let idx = (round + k) % Variant::ALL.len();
                let v = Variant::ALL[idx];
                let (d, cpu, names) = bench.round(v, round).await;
                times[idx].push(d);
                cpus[idx].push(cpu);
                bench.teardown(names).await;
                // RuntimeDirectoryPreserve=yes leaves the runtime dirs: remove them too.
                h.run_ok(&["sh", "-c", "rm -rf /run/hyperhive/*"]);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    println!(
        "machine load average (1 min): {load_before} before, {} after",
        common::load_average()
    );
    println!(
        "{:<52} {:>4} {:>8} {:>8} {:>8} {:>8}",
        format!("{units} transient units, {concurrency} in flight"),
        "runs",
        "min ms",
        "p50 ms",
        "max ms",
        "units/s"
    );
    let mut p50 = Vec::new();
    for (i, v) in Variant::ALL.iter().enumerate() {
        let (min, mid, max) = common::stats(&times[i]);
        p50.push(mid.as_secs_f64());
        println!(
            "{:<52} {:>4} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            v.label(),
            times[i].len(),
            common::ms(min),
            common::ms(mid),
            common::ms(max),
            units as f64 / mid.as_secs_f64()
        );
    }
    // Per round as well: variants of one round ran back to back on the same machine state.
    let mut per_round: Vec<f64> = (0..runs)
        .map(|r| times[0][r].as_secs_f64() / times[1][r].as_secs_f64())
        .collect();
    per_round.sort_by(f64::total_cmp);
    println!(
        "ratio hyperhive / same-property baseline: {:.2} (p50s; per round: p50 {:.2}, range {:.2}-{:.2}) goal <= 1.1",
        p50[0] / p50[1],
        per_round[per_round.len() / 2],
        per_round[0],
        per_round[per_round.len() - 1],
    );
    println!(
        "ratio hyperhive / 2-property baseline:    {:.2} (p50s)",
        p50[0] / p50[2]
    );
    println!();
    println!(
        "{:<52} {:>8} {:>8} {:>8} {:>8}",
        "CPU per round (ms, p50)", "client", "systemd", "dbus", "host"
    );
    for (i, v) in Variant::ALL.iter().enumerate() {
        let p50 = |f: fn(&common::Cpu) -> Duration| {
            let v: Vec<Duration> = cpus[i].iter().map(f).collect();
            common::ms(common::stats(&v).1)
        };
        println!(
            "{:<52} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            v.label(),
            p50(|c| c.client),
            p50(|c| c.systemd),
            p50(|c| c.bus),
            p50(|c| c.host)
        );
    }
}
