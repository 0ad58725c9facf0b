//! Store tests on real SQLite files in unique temp dirs. Fast: no timing assertions,
//! only counts and contents. Long (~860 lines) because every guarded transition, race and
//! broken-file case of the store is here, sharing the temp-dir and racing helpers at the
//! top; it tests one concern, the store's contract.

use std::cell::Cell;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use rusqlite::{params, Connection, OpenFlags};

use super::*;

/// A fresh directory under the system temp dir, removed on drop; unique per process and
/// test so tests can run in parallel.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hyperhive-store-{tag}-{}-{n}", std::process::id()));
        // A leftover from a crashed run with a recycled pid would make the test lie.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("hive.sqlite")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

// ---------------------------------------------------------------- opening, migrations

#[test]
fn open_creates_a_private_wal_store_and_its_parents() {
    let dir = TempDir::new("create");
    let path = dir.0.join("var/lib/hyperhive/hive.sqlite");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    for side in ["hive.sqlite-wal", "hive.sqlite-shm"] {
        assert_eq!(mode(&path.with_file_name(side)), 0o600, "{side}");
    }

    let conn = &store.conn;
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = conn
        .pragma_query_value(None, "busy_timeout", |r| r.get(0))
        .unwrap();
    assert_eq!(busy, 5000);
    assert_eq!(schema::version(conn).unwrap(), schema::latest());
}

#[test]
fn open_accepts_an_empty_file_and_reopens_without_loss() {
    let dir = TempDir::new("empty");
    std::fs::write(dir.db(), b"").unwrap();
    let a = {
        let mut s = Store::open(dir.db()).unwrap();
        s.request(&name("alice"), ApprovalKind::SpecChange, "{}")
            .unwrap()
    };
    let s = Store::open(dir.db()).unwrap();
    assert_eq!(s.list(ListFilter::All).unwrap(), [a]);
}

#[test]
fn open_names_the_path_when_the_file_is_not_a_store() {
    let dir = TempDir::new("garbage");
    std::fs::write(dir.db(), vec![b'x'; 4096]).unwrap();
    let err = format!("{:#}", Store::open(dir.db()).unwrap_err());
    assert!(
        err.starts_with(&format!("opening store {}: ", dir.db().display())),
        "{err}"
    );
    assert!(err.contains("not a database"), "{err}");
}

#[test]
fn a_store_from_a_newer_hyperhive_is_refused_and_left_alone() {
    let dir = TempDir::new("newer");
    drop(Store::open(dir.db()).unwrap());
    let newer = schema::latest() + 1;
    raw(&dir.db())
        .pragma_update(None, "user_version", newer)
        .unwrap();

    let err = format!("{:#}", Store::open(dir.db()).unwrap_err());
    assert!(err.contains(&dir.db().display().to_string()), "{err}");
    assert!(
        err.contains(&format!("schema version {newer} is newer")),
        "{err}"
    );
    assert_eq!(schema::version(&raw(&dir.db())).unwrap(), newer);
}

#[test]
fn concurrent_first_opens_migrate_once() {
    let dir = TempDir::new("firstopen");
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (db, barrier) = (dir.db(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                Store::open(db).map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(schema::version(&raw(&dir.db())).unwrap(), schema::latest());
}

/// A store as an older schema version left it. `seed` writes rows with the SQL that
/// version's code used and returns what the current code must read back after upgrading.
struct Fixture {
    version: u32,
    seed: fn(&Connection) -> Vec<Approval>,
}

/// One per schema version we must upgrade from. Appending a migration makes
/// `fixtures_cover_every_older_version` fail until the version it leaves behind has one.
const FIXTURES: &[Fixture] = &[Fixture {
    version: 1,
    seed: seed_v1,
}];

fn seed_v1(conn: &Connection) -> Vec<Approval> {
    let rows = [
        ("alice", "pending", None, None, None, None),
        ("alice", "approved", None, Some("uid 0"), Some(20), None),
        (
            "bob",
            "denied",
            Some("too broad"),
            Some("uid 1000"),
            Some(30),
            None,
        ),
        ("bob", "applied", None, Some("uid 0"), Some(40), Some(41)),
        ("carol", "failed", Some(ORPHAN_NOTE), None, None, Some(50)),
    ];
    let mut want = Vec::new();
    for (i, (agent, status, note, by, decided, finished)) in rows.into_iter().enumerate() {
        let payload = format!(r#"{{"path":["/nix/store/{i}-tool/bin"]}}"#);
        conn.execute(
            "INSERT INTO approvals (agent, kind, payload, status, note, decided_by, \
             created_at, decided_at, finished_at) \
             VALUES (?1, 'spec_change', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                agent,
                payload,
                status,
                note,
                by,
                10 + i as i64,
                decided,
                finished
            ],
        )
        .unwrap();
        want.push(Approval {
            id: conn.last_insert_rowid(),
            agent: name(agent),
            kind: ApprovalKind::SpecChange,
            payload,
            status: Status::parse(status).unwrap(),
            note: note.map(Into::into),
            decided_by: by.map(Into::into),
            created_at: 10 + i as i64,
            decided_at: decided,
            finished_at: finished,
        });
    }
    want
}

#[test]
fn fixtures_cover_every_older_version() {
    let have: Vec<u32> = FIXTURES.iter().map(|f| f.version).collect();
    let need: Vec<u32> = (1..schema::latest()).collect();
    assert_eq!(
        have, need,
        "add a Fixture for each schema version left behind"
    );
}

#[test]
fn upgrades_from_every_older_version_keep_every_row() {
    for f in FIXTURES {
        let dir = TempDir::new(&format!("v{}", f.version));
        let want = {
            let mut conn = raw(&dir.db());
            schema::migrate_to(&mut conn, f.version).unwrap();
            assert_eq!(schema::version(&conn).unwrap(), f.version);
            (f.seed)(&conn)
        };

        let mut store = Store::open(dir.db()).unwrap();
        assert_eq!(schema::version(&store.conn).unwrap(), schema::latest());
        assert_eq!(store.list(ListFilter::All).unwrap(), want, "v{}", f.version);

        // The upgraded store works, and AUTOINCREMENT kept counting from the old rows.
        let max_old = want.iter().map(|a| a.id).max().unwrap();
        let new = store
            .request(&name("dave"), ApprovalKind::SpecChange, "{}")
            .unwrap();
        assert!(new.id > max_old, "v{}: id {} reused", f.version, new.id);
        let old_pending = want.iter().find(|a| a.status == Status::Pending).unwrap();
        store
            .decide(old_pending.id, Decision::Approve, "uid 0", None)
            .unwrap();
    }
}

#[test]
fn pending_listing_uses_its_index() {
    let dir = TempDir::new("plan");
    let store = Store::open(dir.db()).unwrap();
    let plan: Vec<String> = store
        .conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM approvals WHERE status = 'pending' ORDER BY id"
        ))
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|l| l.contains("approvals_pending")),
        "{plan:?}"
    );
}

#[test]
fn the_schema_refuses_deletion() {
    let dir = TempDir::new("nodelete");
    let mut store = Store::open(dir.db()).unwrap();
    let a = store
        .request(&name("alice"), ApprovalKind::SpecChange, "{}")
        .unwrap();
    // The trigger is what stands between a stray `sqlite3` session and the audit trail.
    let err = store
        .conn
        .execute("DELETE FROM approvals WHERE id = ?1", [a.id])
        .unwrap_err();
    assert!(err.to_string().contains("never deleted"), "{err}");
    assert_eq!(store.get(a.id).unwrap(), Some(a));
}

// ---------------------------------------------------------------- requests and listing

#[test]
fn request_records_a_pending_approval() {
    let dir = TempDir::new("request");
    let mut store = Store::open(dir.db()).unwrap();
    let payload = r#"{"path":["/nix/store/abc-ripgrep/bin"]}"#;
    let a = store
        .request(&name("alice"), ApprovalKind::SpecChange, payload)
        .unwrap();
    assert_eq!(a.agent, name("alice"));
    assert_eq!(
        (a.kind, a.payload.as_str()),
        (ApprovalKind::SpecChange, payload)
    );
    assert_eq!(a.status, Status::Pending);
    assert_eq!((a.note.as_ref(), a.decided_by.as_ref()), (None, None));
    assert_eq!((a.decided_at, a.finished_at), (None, None));
    assert!(a.created_at > 0);
    assert_eq!(store.get(a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.get(a.id + 1).unwrap(), None);

    let json: serde_json::Value = serde_json::to_value(&a).unwrap();
    assert_eq!(json["agent"], "alice");
    assert_eq!(json["status"], "pending");
    assert_eq!(json["payload"], payload);
    assert!(json["note"].is_null());
}

#[test]
fn request_refuses_a_payload_that_is_not_json() {
    let dir = TempDir::new("badjson");
    let mut store = Store::open(dir.db()).unwrap();
    let err = store
        .request(&name("alice"), ApprovalKind::SpecChange, "{path:")
        .unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
    assert!(store.list(ListFilter::All).unwrap().is_empty());
}

#[test]
fn list_filters() {
    let dir = TempDir::new("list");
    let mut store = Store::open(dir.db()).unwrap();
    let (alice, bob) = (name("alice"), name("bob"));
    let a1 = store
        .request(&alice, ApprovalKind::SpecChange, "{}")
        .unwrap();
    let b1 = store.request(&bob, ApprovalKind::SpecChange, "{}").unwrap();
    let a2 = store
        .request(&alice, ApprovalKind::SpecChange, "{}")
        .unwrap();
    let a1 = store.decide(a1.id, Decision::Deny, "uid 0", None).unwrap();

    let ids = |f| -> Vec<i64> { store.list(f).unwrap().iter().map(|a| a.id).collect() };
    assert_eq!(ids(ListFilter::All), [a1.id, b1.id, a2.id]);
    assert_eq!(ids(ListFilter::Pending), [b1.id, a2.id]);
    assert_eq!(ids(ListFilter::Agent(&alice)), [a1.id, a2.id]);
    assert_eq!(ids(ListFilter::Agent(&bob)), [b1.id]);
    assert_eq!(ids(ListFilter::Agent(&name("carol"))), Vec::<i64>::new());
}

// ---------------------------------------------------------------- the state machine, stored

/// Drives one transition through the store's public API; `Err` carries the status the
/// store reported when it refused.
fn take(store: &mut Store, a: &Approval, t: Transition) -> Result<Approval, Status> {
    let by = "uid 0";
    match t {
        Transition::Approve | Transition::Deny => {
            let d = if t == Transition::Approve {
                Decision::Approve
            } else {
                Decision::Deny
            };
            match store.decide(a.id, d, by, Some("why not")) {
                Ok(a) => Ok(a),
                Err(DecideError::AlreadyDecided { id, status }) if id == a.id => Err(status),
                Err(e) => panic!("{t:?} on {}: {e:#}", a.id),
            }
        }
        Transition::Apply | Transition::Fail => {
            let o = if t == Transition::Apply {
                Outcome::Applied
            } else {
                Outcome::Failed("nix build failed".into())
            };
            match store.finish(a.id, o) {
                Ok(a) => Ok(a),
                Err(FinishError::NotApproved { id, status }) if id == a.id => Err(status),
                Err(e) => panic!("{t:?} on {}: {e:#}", a.id),
            }
        }
        Transition::Orphan => {
            let marked = store.mark_orphans(|n| n != &a.agent).unwrap();
            let now = store.get(a.id).unwrap().unwrap();
            if marked == [a.id] {
                Ok(now)
            } else {
                assert_eq!(marked, Vec::<i64>::new());
                Err(now.status)
            }
        }
    }
}

#[test]
fn every_transition_from_every_stored_status() {
    use Transition::*;
    // How to reach each status from pending; failed is reachable two ways.
    let paths: &[&[Transition]] = &[
        &[],
        &[Approve],
        &[Deny],
        &[Approve, Apply],
        &[Approve, Fail],
        &[Orphan],
    ];
    let dir = TempDir::new("machine");
    let mut store = Store::open(dir.db()).unwrap();
    let mut n = 0;
    for path in paths {
        for t in Transition::ALL {
            // One agent per row, so marking orphans touches only the row under test.
            n += 1;
            let agent = name(&format!("agent-{n}"));
            let mut a = store
                .request(&agent, ApprovalKind::SpecChange, "{}")
                .unwrap();
            for step in *path {
                a = take(&mut store, &a, *step).unwrap();
            }
            let before = a.clone();
            match (take(&mut store, &a, t), a.status.then(t)) {
                (Ok(after), Ok(want)) => {
                    assert_eq!(after.status, want, "{path:?} then {t:?}");
                    assert_eq!(store.get(a.id).unwrap(), Some(after));
                }
                (Err(reported), Err(_)) => {
                    assert_eq!(reported, before.status, "{path:?} then {t:?}");
                    assert_eq!(store.get(a.id).unwrap(), Some(before), "row changed");
                }
                (got, want) => panic!("{path:?} then {t:?}: store {got:?}, machine {want:?}"),
            }
        }
    }
}

#[test]
fn decisions_and_outcomes_record_who_when_and_why() {
    let dir = TempDir::new("fields");
    let mut store = Store::open(dir.db()).unwrap();
    let alice = name("alice");

    let a = store
        .request(&alice, ApprovalKind::SpecChange, "{}")
        .unwrap();
    let a = store
        .decide(a.id, Decision::Approve, "uid 0", Some("ok for today"))
        .unwrap();
    assert_eq!(a.decided_by.as_deref(), Some("uid 0"));
    assert_eq!(a.note.as_deref(), Some("ok for today"));
    assert!(a.decided_at.unwrap() >= a.created_at);
    let a = store
        .finish(a.id, Outcome::Failed("nix build failed".into()))
        .unwrap();
    assert_eq!(a.status, Status::Failed);
    // The admin's note survives next to the error.
    assert_eq!(a.note.as_deref(), Some("ok for today; nix build failed"));
    assert!(a.finished_at.unwrap() >= a.decided_at.unwrap());

    let b = store
        .request(&alice, ApprovalKind::SpecChange, "{}")
        .unwrap();
    store
        .decide(b.id, Decision::Approve, "uid 0", None)
        .unwrap();
    let b = store
        .finish(b.id, Outcome::Failed("nix build failed".into()))
        .unwrap();
    assert_eq!(b.note.as_deref(), Some("nix build failed"));

    let c = store
        .request(&alice, ApprovalKind::SpecChange, "{}")
        .unwrap();
    store
        .decide(c.id, Decision::Approve, "uid 0", None)
        .unwrap();
    let c = store.finish(c.id, Outcome::Applied).unwrap();
    assert_eq!((c.status, c.note), (Status::Applied, None));

    // Applied in place: said after the admin's note, and only then.
    let d = store
        .request(&alice, ApprovalKind::SpecChange, "{}")
        .unwrap();
    store
        .decide(d.id, Decision::Approve, "uid 0", Some("ok"))
        .unwrap();
    let d = store.finish(d.id, Outcome::AppliedInPlace).unwrap();
    assert_eq!(d.status, Status::Applied);
    assert_eq!(
        d.note.as_deref(),
        Some("ok; applied in place, without a restart")
    );
}

#[test]
fn double_decide_keeps_the_first_decision() {
    let dir = TempDir::new("double");
    let mut store = Store::open(dir.db()).unwrap();
    let a = store
        .request(&name("alice"), ApprovalKind::SpecChange, "{}")
        .unwrap();
    let first = store
        .decide(a.id, Decision::Deny, "uid 1000", Some("too broad"))
        .unwrap();
    for d in [Decision::Deny, Decision::Approve] {
        match store.decide(a.id, d, "uid 0", None) {
            Err(DecideError::AlreadyDecided { id, status }) => {
                assert_eq!((id, status), (a.id, Status::Denied));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(store.get(a.id).unwrap(), Some(first));
}

#[test]
fn unknown_ids_are_not_found() {
    let dir = TempDir::new("notfound");
    let mut store = Store::open(dir.db()).unwrap();
    assert!(matches!(
        store.decide(42, Decision::Approve, "uid 0", None),
        Err(DecideError::NotFound(42))
    ));
    assert!(matches!(
        store.finish(42, Outcome::Applied),
        Err(FinishError::NotFound(42))
    ));
    assert_eq!(
        DecideError::NotFound(42).to_string(),
        "no approval with id 42"
    );
}

// ---------------------------------------------------------------- concurrency

#[test]
fn concurrent_decides_end_with_exactly_one_decision() {
    let dir = TempDir::new("race");
    let id = Store::open(dir.db())
        .unwrap()
        .request(&name("alice"), ApprovalKind::SpecChange, "{}")
        .unwrap()
        .id;
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (db, barrier) = (dir.db(), barrier.clone());
            thread::spawn(move || {
                // Its own connection, as a second process would have.
                let mut store = Store::open(db).unwrap();
                let d = if i % 2 == 0 {
                    Decision::Approve
                } else {
                    Decision::Deny
                };
                barrier.wait();
                store.decide(id, d, &format!("uid {i}"), None)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let winners: Vec<&Approval> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0];
    for r in &results {
        match r {
            Ok(_) => {}
            Err(DecideError::AlreadyDecided { id: i, status }) => {
                assert_eq!((*i, *status), (id, winner.status));
            }
            Err(e) => panic!("{e:#}"),
        }
    }
    let stored = Store::open(dir.db()).unwrap().get(id).unwrap().unwrap();
    assert_eq!(&stored, winner);
}

#[test]
fn concurrent_requests_from_three_agents_are_all_kept() {
    const TOTAL: usize = 1000;
    let dir = TempDir::new("flood");
    drop(Store::open(dir.db()).unwrap());
    let agents = ["alice", "bob", "carol"];
    let barrier = Arc::new(Barrier::new(agents.len()));
    let handles: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            // 334 + 333 + 333
            let count = TOTAL / agents.len() + usize::from(i < TOTAL % agents.len());
            let (db, barrier, agent) = (dir.db(), barrier.clone(), name(agent));
            thread::spawn(move || {
                let mut store = Store::open(db).unwrap();
                barrier.wait();
                (0..count)
                    .map(|n| {
                        store
                            .request(&agent, ApprovalKind::SpecChange, &format!(r#"{{"n":{n}}}"#))
                            .unwrap()
                            .id
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let returned: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    let store = Store::open(dir.db()).unwrap();
    let all = store.list(ListFilter::All).unwrap();
    assert_eq!(all.len(), TOTAL);
    let ids: HashSet<i64> = all.iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), TOTAL, "ids unique");
    assert_eq!(
        ids,
        returned.into_iter().collect(),
        "every returned id stored"
    );
    for (i, agent) in agents.iter().enumerate() {
        let count = TOTAL / agents.len() + usize::from(i < TOTAL % agents.len());
        let mine = store.list(ListFilter::Agent(&name(agent))).unwrap();
        let payloads: HashSet<String> = mine.into_iter().map(|a| a.payload).collect();
        let want: HashSet<String> = (0..count).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        assert_eq!(payloads, want, "{agent}");
    }
}

// ---------------------------------------------------------------- orphans

#[test]
fn orphans_fail_with_the_note_and_stay() {
    let dir = TempDir::new("orphans");
    let mut store = Store::open(dir.db()).unwrap();
    let (alice, bob) = (name("alice"), name("bob"));
    let a = store
        .request(&alice, ApprovalKind::SpecChange, "{}")
        .unwrap();
    let b1 = store.request(&bob, ApprovalKind::SpecChange, "{}").unwrap();
    let b2 = store.request(&bob, ApprovalKind::SpecChange, "{}").unwrap();
    let b3 = store.request(&bob, ApprovalKind::SpecChange, "{}").unwrap();
    let b3 = store
        .decide(b3.id, Decision::Approve, "uid 0", None)
        .unwrap();

    let checks = Cell::new(0);
    let marked = store
        .mark_orphans(|n| {
            checks.set(checks.get() + 1);
            n == &alice
        })
        .unwrap();
    assert_eq!(marked, [b1.id, b2.id]);
    assert_eq!(checks.get(), 2, "one check per agent, not per approval");

    for id in [b1.id, b2.id] {
        let o = store.get(id).unwrap().unwrap();
        assert_eq!(o.status, Status::Failed);
        assert_eq!(o.note.as_deref(), Some("agent state dir missing"));
        assert_eq!(o.decided_by, None, "nobody decided");
        assert!(o.finished_at.is_some());
    }
    // Approved work is the applier's to finish, not an orphan.
    assert_eq!(store.get(b3.id).unwrap(), Some(b3.clone()));

    let all: Vec<i64> = store
        .list(ListFilter::All)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(all, [a.id, b1.id, b2.id, b3.id]);
    let pending: Vec<i64> = store
        .list(ListFilter::Pending)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, [a.id]);

    assert_eq!(store.mark_orphans(|_| false).unwrap(), [a.id]);
    assert_eq!(store.mark_orphans(|_| false).unwrap(), Vec::<i64>::new());
}

// ---------------------------------------------------------------- read-only

#[test]
fn deciding_on_a_read_only_store_is_a_clear_error_and_changes_nothing() {
    let dir = TempDir::new("readonly");
    let mut store = Store::open(dir.db()).unwrap();
    let a = store
        .request(&name("alice"), ApprovalKind::SpecChange, "{}")
        .unwrap();

    // Tests run as root, and root writes through a chmod 0400 file and 0500 dir alike, so
    // the read-only file is simulated with `PRAGMA query_only=ON`: SQLite then refuses
    // every write with the same SQLITE_READONLY error a read-only file or mount gives.
    store.conn.pragma_update(None, "query_only", true).unwrap();

    match store.decide(a.id, Decision::Approve, "uid 0", None) {
        Err(DecideError::Store(e)) => {
            let msg = format!("{e:#}");
            assert!(
                msg.starts_with(&format!(
                    "deciding approval {} in {}: ",
                    a.id,
                    dir.db().display()
                )),
                "{msg}"
            );
            assert!(msg.contains("readonly"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    let err = store
        .request(&name("alice"), ApprovalKind::SpecChange, "{}")
        .unwrap_err();
    assert!(format!("{err:#}").contains("readonly"), "{err:#}");

    let fresh = Store::open(dir.db()).unwrap();
    assert_eq!(fresh.list(ListFilter::All).unwrap(), [a]);
}

#[test]
fn a_connection_sqlite_opened_read_only_is_reopened_for_the_next_change() {
    let dir = TempDir::new("reopen");
    let a = Store::open(dir.db())
        .unwrap()
        .request(&name("alice"), ApprovalKind::SpecChange, "{}")
        .unwrap();

    // What SQLite falls back to by itself when the file is on a read-only mount: a
    // connection that stays read-only after the mount is writable again.
    let conn = Connection::open_with_flags(
        dir.db(),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let mut store = Store {
        conn,
        path: dir.db(),
    };
    assert!(store.read_only().unwrap());
    assert_eq!(
        store.list(ListFilter::Pending).unwrap(),
        std::slice::from_ref(&a)
    );

    // The next change reopens it, and goes through exactly once.
    let approved = store
        .decide(a.id, Decision::Approve, "uid 0", None)
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert!(!store.read_only().unwrap());
    let b = store
        .request(&name("alice"), ApprovalKind::SpecChange, "{}")
        .unwrap();
    assert_eq!(store.list(ListFilter::All).unwrap(), [approved, b]);
    store.writable().unwrap();
}

// ---------------------------------------------------------------- bounds (issue 13)

#[test]
fn synchronous_is_pinned_to_full() {
    let dir = TempDir::new("sync");
    let store = Store::open(dir.db()).unwrap();
    let level: i64 = store
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(level, 2, "FULL");
}

#[test]
fn an_agent_has_at_most_the_cap_pending_and_a_repeat_gets_the_same_id() {
    let dir = TempDir::new("cap");
    let mut store = Store::open(dir.db()).unwrap();
    let (alice, bob) = (name("alice"), name("bob"));
    let mut ids = Vec::new();
    for i in 0..4 {
        let (a, new) = store
            .request_bounded(
                &alice,
                ApprovalKind::SpecChange,
                &format!("{{\"n\":{i}}}"),
                4,
            )
            .unwrap();
        assert!(new);
        ids.push(a.id);
    }
    let (again, new) = store
        .request_bounded(&alice, ApprovalKind::SpecChange, "{\"n\":2}", 4)
        .unwrap();
    assert_eq!(
        (again.id, new),
        (ids[2], false),
        "identical pending request"
    );
    let err = store
        .request_bounded(&alice, ApprovalKind::SpecChange, "{\"n\":9}", 4)
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("agent alice already has 4 pending"), "{err}");
    assert!(!err.contains('\n'));
    // Others are not affected; a decision frees a slot.
    assert!(
        store
            .request_bounded(&bob, ApprovalKind::SpecChange, "{}", 4)
            .unwrap()
            .1
    );
    store.decide(ids[0], Decision::Deny, "uid 0", None).unwrap();
    assert!(
        store
            .request_bounded(&alice, ApprovalKind::SpecChange, "{\"n\":9}", 4)
            .unwrap()
            .1
    );
    // A decided request asked again is a new one.
    let (a, new) = store
        .request_bounded(&alice, ApprovalKind::SpecChange, "{\"n\":0}", 5)
        .unwrap();
    assert!(new && a.id != ids[0]);
}

#[test]
fn pages_cover_every_row_once_in_order() {
    let dir = TempDir::new("pages");
    let mut store = Store::open(dir.db()).unwrap();
    for i in 0..25 {
        let agent = if i % 2 == 0 {
            name("alice")
        } else {
            name("bob")
        };
        store
            .request(&agent, ApprovalKind::SpecChange, &format!("{i}"))
            .unwrap();
    }
    store.decide(3, Decision::Deny, "uid 0", None).unwrap();
    for (filter, want) in [(ListFilter::All, 25), (ListFilter::Pending, 24)] {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = store.list_page(filter, after, 7).unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last() else { break };
            after = last.id;
            seen.extend(page.iter().map(|a| a.id));
        }
        assert_eq!(seen.len(), want);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let all: Vec<i64> = store.list(filter).unwrap().iter().map(|a| a.id).collect();
        assert_eq!(seen, all);
    }
    let alice = name("alice");
    assert_eq!(
        store
            .list_page(ListFilter::Agent(&alice), 0, 100)
            .unwrap()
            .len(),
        13
    );
}

#[test]
fn failing_an_agents_pending_approvals_keeps_them_and_touches_no_other() {
    let dir = TempDir::new("destroyed");
    let mut store = Store::open(dir.db()).unwrap();
    let (alice, bob) = (name("alice"), name("bob"));
    let a1 = store
        .request(&alice, ApprovalKind::SpecChange, "1")
        .unwrap()
        .id;
    let a2 = store
        .request(&alice, ApprovalKind::SpecChange, "2")
        .unwrap()
        .id;
    let b1 = store
        .request(&bob, ApprovalKind::SpecChange, "3")
        .unwrap()
        .id;
    store.decide(a2, Decision::Deny, "uid 0", None).unwrap();
    assert_eq!(
        store.fail_pending_of(&alice, "agent destroyed").unwrap(),
        [a1]
    );
    let a = store.get(a1).unwrap().unwrap();
    assert_eq!(a.status, Status::Failed);
    assert_eq!(a.note.as_deref(), Some("agent destroyed"));
    assert_eq!(store.get(a2).unwrap().unwrap().status, Status::Denied);
    assert_eq!(store.get(b1).unwrap().unwrap().status, Status::Pending);
    assert!(store
        .fail_pending_of(&alice, "agent destroyed")
        .unwrap()
        .is_empty());
}

#[test]
fn the_approved_filter_finds_only_what_a_restart_must_resume() {
    let dir = TempDir::new("approved");
    let mut store = Store::open(dir.db()).unwrap();
    let alice = name("alice");
    for i in 0..6 {
        store
            .request(&alice, ApprovalKind::SpecChange, &format!("{i}"))
            .unwrap();
    }
    store.decide(2, Decision::Approve, "uid 0", None).unwrap();
    store.decide(4, Decision::Approve, "uid 0", None).unwrap();
    store.finish(4, Outcome::Applied).unwrap();
    store.decide(5, Decision::Deny, "uid 0", None).unwrap();
    let ids = |v: Vec<Approval>| v.iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(ListFilter::Approved).unwrap()), [2]);
    assert_eq!(
        ids(store.list_page(ListFilter::Approved, 0, 10).unwrap()),
        [2]
    );
    assert!(store
        .list_page(ListFilter::Approved, 2, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn last_id_is_the_newest_and_ids_are_dense() {
    let dir = TempDir::new("last-id");
    let mut store = Store::open(dir.db()).unwrap();
    assert_eq!(store.last_id().unwrap(), 0);
    for i in 0..5 {
        store
            .request(&name("alice"), ApprovalKind::SpecChange, &format!("{i}"))
            .unwrap();
    }
    store.decide(2, Decision::Deny, "uid 0", None).unwrap();
    assert_eq!(store.last_id().unwrap(), 5);
    // The newest two are the ids above last - 2, as the Cockpit page reads them.
    let page = store.list_page(ListFilter::All, 3, 2).unwrap();
    assert_eq!(page.iter().map(|a| a.id).collect::<Vec<_>>(), [4, 5]);
}

#[test]
fn approval_kinds_keep_their_text_in_the_column_and_on_the_wire() {
    assert_eq!(ApprovalKind::SpecChange.as_str(), "spec_change");
    assert_eq!(ApprovalKind::ToolUse.as_str(), "tool_use");
    for k in ApprovalKind::ALL {
        assert_eq!(ApprovalKind::parse(k.as_str()), Some(k));
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            format!("\"{}\"", k.as_str())
        );
    }
    assert_eq!(ApprovalKind::parse("Spec_Change"), None);
    assert_eq!(ApprovalKind::parse(""), None);
}
