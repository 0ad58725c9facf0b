//! `cargo bench --bench store`: how long `hivectl approvals --all --json` spends in the
//! store once the audit trail has grown to 10,000 approvals, next to the floor SQLite
//! itself sets (a raw SELECT into tuples) in the same run on the same file, so a slow
//! machine shows up in both lines instead of as a regression. Goal: < 100 ms.
//!
//! Prints a table; asserts nothing, because timings on shared CI machines are noise.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyperhive::store::{ListFilter, Store};
use rusqlite::{params, Connection};

const ROWS: usize = 10_000;
const RUNS: usize = 20;
const GOAL: Duration = Duration::from_millis(100);

type RawRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
);

/// One timed thing; boxed so the table loop can treat them alike.
type Case<'a> = Box<dyn Fn() -> Result<()> + 'a>;

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("hyperhive-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = run(dir.join("hive.sqlite"));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(path: PathBuf) -> Result<()> {
    let store = Store::open(&path)?;
    seed(&path)?;
    let raw = Connection::open(&path)?;

    let json_len = serde_json::to_string(&store.list(ListFilter::All)?)?.len();
    let cases: [(&str, Case); 3] = [
        (
            "baseline: SELECT * into tuples",
            Box::new(|| {
                let mut st = raw.prepare("SELECT * FROM approvals")?;
                let rows = st
                    .query_map([], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                            r.get(9)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<RawRow>>>()?;
                black_box(rows);
                Ok(())
            }),
        ),
        (
            "Store::list(All)",
            Box::new(|| {
                black_box(store.list(ListFilter::All)?);
                Ok(())
            }),
        ),
        (
            "Store::list(All) + serde_json",
            Box::new(|| {
                let json = serde_json::to_string(&store.list(ListFilter::All)?)?;
                black_box(json);
                Ok(())
            }),
        ),
    ];

    println!(
        "store bench: {ROWS} approvals (mixed statuses, {json_len} bytes of JSON), {RUNS} runs each after one warm-up"
    );
    println!();
    println!(
        "| {:<32} | {:>9} | {:>9} | {:>9} |",
        "case", "min ms", "p50 ms", "max ms"
    );
    println!("|{:-<34}|{:->11}|{:->11}|{:->11}|", "", "", "", "");
    let mut json_p50 = Duration::ZERO;
    for (label, case) in &cases {
        case()?;
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            case()?;
            times.push(start.elapsed());
        }
        times.sort();
        let p50 = times[RUNS / 2];
        json_p50 = p50;
        println!(
            "| {label:<32} | {:>9.2} | {:>9.2} | {:>9.2} |",
            ms(times[0]),
            ms(p50),
            ms(times[RUNS - 1])
        );
    }
    println!();
    println!(
        "goal: list + JSON p50 < {} ms: {}",
        GOAL.as_millis(),
        if json_p50 < GOAL { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Writes the rows in one transaction straight through SQL: going through
/// `Store::request` would cost a commit (an fsync) per row and measure nothing we report.
fn seed(path: &Path) -> Result<()> {
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO approvals (agent, kind, payload, status, note, decided_by, \
             created_at, decided_at, finished_at) \
             VALUES (?1, 'spec_change', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let t0: i64 = 1_750_000_000_000_000;
        for i in 0..ROWS {
            let agent = format!("agent-{}", i % 12);
            // A realistic spec change: one store path on PATH and one bind.
            let payload = format!(
                r#"{{"path":["/nix/store/{i:032x}-ripgrep-14.1.0/bin"],"bind":[{{"src":"/srv/data/{i}","dst":"/data","ro":true}}]}}"#
            );
            let t = t0 + i as i64 * 1_000_000;
            let (status, note, by, decided, finished) = match i % 5 {
                0 => ("pending", None, None, None, None),
                1 => ("approved", None, Some("uid 0"), Some(t + 10), None),
                2 => (
                    "denied",
                    Some("too broad"),
                    Some("uid 1000"),
                    Some(t + 10),
                    None,
                ),
                3 => ("applied", None, Some("uid 0"), Some(t + 10), Some(t + 20)),
                _ => (
                    "failed",
                    Some("agent state dir missing"),
                    None,
                    None,
                    Some(t + 20),
                ),
            };
            insert.execute(params![
                agent, payload, status, note, by, t, decided, finished
            ])?;
        }
    }
    tx.commit().context("seeding approvals")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
