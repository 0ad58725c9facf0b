//! The store's schema as an append-only list of migrations, tracked in SQLite's
//! `PRAGMA user_version`.
//!
//! Rules for changing it: never edit a released step, only append one; every step must
//! keep existing rows; and add a fixture for the version being left behind in
//! `store::tests::FIXTURES`, which a test insists on.

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, TransactionBehavior};

/// Step `i` takes the schema from version `i` to version `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2];

/// STRICT so a value of the wrong type is refused at write time instead of surfacing as
/// a decode error in some later listing. The status column has no CHECK: adding a status
/// would then need a table rebuild, and only `Status::as_str` ever writes it.
const V1: &str = "
CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    note        TEXT,
    decided_by  TEXT,
    created_at  INTEGER NOT NULL,
    decided_at  INTEGER,
    finished_at INTEGER
) STRICT;
";

/// The table only ever grows, so the two listings that run often get indexes, and the
/// audit promise is enforced below the code too, against a stray `sqlite3` session.
const V2: &str = "
CREATE INDEX approvals_pending ON approvals (id) WHERE status = 'pending';
CREATE INDEX approvals_agent ON approvals (agent, id);
CREATE TRIGGER approvals_never_deleted BEFORE DELETE ON approvals
BEGIN
    SELECT RAISE(ABORT, 'approvals are never deleted: they are the audit trail');
END;
";

/// The schema version this build writes.
pub(super) fn latest() -> u32 {
    // The list is a handful of entries; this cannot truncate.
    MIGRATIONS.len() as u32
}

/// Brings the schema up to [`latest`].
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, latest())
}

/// Runs the steps up to `target`, one transaction each, so a crash mid-upgrade leaves a
/// consistent older version that the next start continues from. Tests stop early to
/// build fixtures of old versions.
pub(super) fn migrate_to(conn: &mut Connection, target: u32) -> Result<()> {
    let mut found = version(conn)?;
    refuse_newer(found)?;
    while found < target {
        let next = found + 1;
        // IMMEDIATE takes the write lock before reading the version, so two processes
        // starting together cannot both run the same step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_context(|| format!("locking the store to migrate to schema version {next}"))?;
        found = version(&tx)?;
        refuse_newer(found)?;
        if found >= next {
            continue;
        }
        tx.execute_batch(MIGRATIONS[found as usize])
            .with_context(|| format!("migrating to schema version {next}"))?;
        tx.pragma_update(None, "user_version", next)
            .with_context(|| format!("recording schema version {next}"))?;
        tx.commit()
            .with_context(|| format!("committing schema version {next}"))?;
        found = next;
    }
    Ok(())
}

/// The version recorded in the file; 0 for a new, empty one.
pub(super) fn version(conn: &Connection) -> Result<u32> {
    let raw: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .context("reading the schema version")?;
    u32::try_from(raw).with_context(|| format!("schema version {raw} is not a version"))
}

/// A newer hyperhive may have changed the meaning of rows; guessing could lose an
/// approval, so an older build keeps its hands off.
fn refuse_newer(found: u32) -> Result<()> {
    if found > latest() {
        bail!(
            "schema version {found} is newer than this hyperhive understands (up to {}); \
             run the newer hyperhive that wrote it, or restore a backup",
            latest()
        );
    }
    Ok(())
}
