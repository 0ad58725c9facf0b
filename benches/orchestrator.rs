//! N transient units through hyperhive's planner and its systemd module (property
//! conversion, StartTransientUnit, waiting for each job through the shared JobRemoved
//! tracker) against N raw StartTransientUnit calls on one connection, each waiting for its
//! JobRemoved, at the same concurrency — the orchestrator's cost isolated from container
//! boots: every unit runs `sleep` instead of systemd-nspawn. Concurrency stays under
//! systemd's limits (128 replies in flight per connection; far below ~512 pending jobs).
//! Prints a table. Needs root (boots a test host).
//!
//! cargo bench --bench orchestrator [-- UNITS]   (default 200)

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyperhive::paths::Roots;
use hyperhive::plan::{self, ExecCommand, Host, Prop};
use hyperhive::spec::{AgentName, AgentSpec, SpecFile};
use hyperhive::systemd::proxies::ManagerProxy;
use hyperhive::systemd::Systemd;
use testhost::{Options, TestHost};
use tokio::sync::{oneshot, Semaphore};
use zbus::zvariant::{OwnedObjectPath, Value};

const CONCURRENCY: usize = 64;

/// Waiters by job path, and results that arrived before their waiter (as any client of
/// JobRemoved must keep).
type Waiters = Arc<
    Mutex<(
        HashMap<OwnedObjectPath, oneshot::Sender<()>>,
        HashMap<OwnedObjectPath, ()>,
    )>,
>;
const SLEEP: &str = "/usr/bin/sleep";

fn host() -> Host {
    Host {
        roots: Roots::default(),
        nspawn: "/usr/bin/systemd-nspawn".into(),
        hive_c0re: "/usr/bin/true".into(),
        hive_harness: "/usr/bin/true".into(),
        base_path: vec!["/usr/bin".into()],
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

async fn stop_all(sd: &Systemd, units: &[String]) {
    for u in units {
        let _ = sd.stop(u).await;
    }
}

async fn via_hyperhive(conn: &zbus::Connection, n: usize, round: usize) -> Duration {
    let sd = Systemd::manager(conn).await.unwrap();
    let plans: Vec<_> = (0..n)
        .map(|i| trivial_plan(&format!("h{round}x{i}")))
        .collect();
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let t = Instant::now();
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|p| {
            let sd = sd.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                let _permit = slots.acquire_owned().await.unwrap();
                sd.start_transient(&p).await.unwrap();
                p.unit
            })
        })
        .collect();
    let mut units = Vec::new();
    for t in tasks {
        units.push(t.await.unwrap());
    }
    let d = t.elapsed();
    stop_all(&sd, &units).await;
    d
}

async fn raw(conn: &zbus::Connection, n: usize, round: usize) -> Duration {
    let manager = ManagerProxy::new(conn).await.unwrap();
    // Later rounds share the connection, which is subscribed already.
    let _ = manager.subscribe().await;
    let waiters: Waiters = Arc::default();
    let mut removed = manager.receive_job_removed().await.unwrap();
    let w = waiters.clone();
    let listener = tokio::spawn(async move {
        while let Some(sig) = removed.next().await {
            let job = OwnedObjectPath::from(sig.args().unwrap().job.to_owned());
            let mut g = w.lock().unwrap();
            match g.0.remove(&job) {
                Some(tx) => {
                    let _ = tx.send(());
                }
                None => {
                    g.1.insert(job, ());
                }
            }
        }
    });
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let t = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let manager = manager.clone();
            let slots = slots.clone();
            let waiters = waiters.clone();
            tokio::spawn(async move {
                let _permit = slots.acquire_owned().await.unwrap();
                let unit = format!("raw{round}x{i}.service");
                let exec = vec![(
                    SLEEP.to_string(),
                    vec![SLEEP.to_string(), "infinity".to_string()],
                    false,
                )];
                let props: Vec<(&str, Value<'_>)> = vec![
                    ("Type", Value::from("exec")),
                    ("ExecStart", Value::from(exec)),
                ];
                let job = manager
                    .start_transient_unit(&unit, "fail", &props, &[])
                    .await
                    .unwrap();
                let rx = {
                    let mut g = waiters.lock().unwrap();
                    if g.1.remove(&job).is_some() {
                        None
                    } else {
                        let (tx, rx) = oneshot::channel();
                        g.0.insert(job, tx);
                        Some(rx)
                    }
                };
                if let Some(rx) = rx {
                    rx.await.unwrap();
                }
                unit
            })
        })
        .collect();
    let mut units = Vec::new();
    for t in tasks {
        units.push(t.await.unwrap());
    }
    let d = t.elapsed();
    listener.abort();
    let sd = Systemd::reader(conn).await.unwrap();
    for u in &units {
        let _ = manager.stop_unit(u, "replace").await;
    }
    let _ = sd;
    d
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let hivectl = env!("CARGO_BIN_EXE_hivectl");
    let h = TestHost::boot(Options {
        bin_dir: Some(Path::new(hivectl).parent().unwrap().to_path_buf()),
        ..Default::default()
    })
    .expect("booting the test host");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ours, theirs) = rt.block_on(async {
        let conn = zbus::connection::Builder::address(h.bus_address().as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        // Alternate, so drift on a noisy machine hits both alike.
        for round in 0..3 {
            theirs.push(raw(&conn, n, round).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
            ours.push(via_hyperhive(&conn, n, round).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (ours, theirs)
    });
    let show = |what: &str, mut v: Vec<Duration>| {
        v.sort();
        let p50 = v[v.len() / 2].as_secs_f64();
        println!(
            "{what:<58} {:>4} {:>9.0} {:>9.0}",
            v.len(),
            p50 * 1000.0,
            n as f64 / p50
        );
        p50
    };
    println!(
        "{:<58} {:>4} {:>9} {:>9}",
        format!("{n} transient units, {CONCURRENCY} in flight"),
        "runs",
        "p50 ms",
        "units/s"
    );
    let a = show("hyperhive: planner + systemd module (job tracker)", ours);
    let b = show("baseline: raw StartTransientUnit + JobRemoved", theirs);
    println!("ratio hyperhive/raw: {:.2} (goal <= 1.1)", a / b);
}
