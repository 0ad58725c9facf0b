//! The approvals store: one SQLite file (production: `/var/lib/hyperhive/hive.sqlite`)
//! that keeps every approval ever requested, whatever becomes of it.
//!
//! Several processes may open the same file (the daemon, a second daemon racing it at
//! boot, tests); correctness never depends on there being one. Every change is a single
//! UPDATE guarded by the status it starts from, inside an IMMEDIATE transaction, so two
//! admins deciding at once end with exactly one decision.
//!
//! Nothing is ever deleted: the rows are the audit trail, and from schema version 2 on a
//! trigger refuses a DELETE even from outside hyperhive.

mod approval;
mod open;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql, TransactionBehavior};

pub use approval::{
    Approval, ApprovalKind, DecideError, Decision, FinishError, IllegalTransition, ListFilter,
    Outcome, Status, Transition, IN_PLACE_NOTE,
};

use crate::spec::AgentName;

/// The note an approval gets when its agent's state dir vanished before anyone decided;
/// the text is part of the contract (docs/approvals.md), so admins can grep for it.
pub const ORPHAN_NOTE: &str = "agent state dir missing";

/// How long a writer waits for another process's transaction before giving up; long
/// enough for any transaction we run, short enough that a wedged peer surfaces as an
/// error instead of a hung `hivectl`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns in the order [`approval_from_row`] reads them.
const COLUMNS: &str =
    "id, agent, kind, payload, status, note, decided_by, created_at, decided_at, finished_at";

/// An open store: one SQLite connection. Writes take `&mut self` because a connection
/// runs one transaction at a time; share a `Store` behind a mutex, or open one per
/// thread or process (they coordinate through SQLite's locks).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Why a guarded transition matched no row.
enum Refused {
    NotFound,
    InStatus(Status),
}

impl Store {
    /// Records a new pending approval. `payload` must be JSON: it is stored as given, and
    /// `--json` readers rely on being able to parse it.
    pub fn request(
        &mut self,
        agent: &AgentName,
        kind: ApprovalKind,
        payload: &str,
    ) -> Result<Approval> {
        serde_json::from_str::<serde::de::IgnoredAny>(payload)
            .with_context(|| format!("payload of a {kind} request from {agent} is not JSON"))?;
        self.writable()?;
        let sql = format!(
            "INSERT INTO approvals (agent, kind, payload, status, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {COLUMNS}"
        );
        // One autocommit statement: it takes the write lock up front, so busy_timeout
        // applies and concurrent requesters queue instead of failing.
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_row(
                    params![
                        agent.as_str(),
                        kind.as_str(),
                        payload,
                        Status::Pending.as_str(),
                        now_micros()
                    ],
                    approval_from_row,
                )
            })
            .with_context(|| {
                format!(
                    "recording a {kind} request from {agent} in {}",
                    self.path.display()
                )
            })
    }

    /// Records a new pending approval unless the agent already has an identical one
    /// pending (then that one is returned, with `false`), or already has `max_pending`
    /// pending (then it is refused with a one-line reason). One IMMEDIATE transaction, so
    /// two racing requests cannot both slip under the cap.
    pub fn request_bounded(
        &mut self,
        agent: &AgentName,
        kind: ApprovalKind,
        payload: &str,
        max_pending: usize,
    ) -> Result<(Approval, bool)> {
        serde_json::from_str::<serde::de::IgnoredAny>(payload)
            .with_context(|| format!("payload of a {kind} request from {agent} is not JSON"))?;
        self.writable()?;
        let path = self.path.display().to_string();
        let pending = Status::Pending.as_str();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_context(|| format!("recording a {kind} request from {agent} in {path}"))?;
        // Both queries go through the partial index on pending rows, which the cap keeps
        // small however many rows the table holds.
        let same = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE status = '{pending}' \
                 AND agent = ?1 AND kind = ?2 AND payload = ?3 ORDER BY id LIMIT 1"
            ))
            .and_then(|mut st| {
                st.query_row(
                    params![agent.as_str(), kind.as_str(), payload],
                    approval_from_row,
                )
                .optional()
            })
            .with_context(|| format!("looking up {agent}'s pending requests in {path}"))?;
        if let Some(a) = same {
            tx.commit()?;
            return Ok((a, false));
        }
        let count: i64 = tx
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM approvals WHERE status = '{pending}' AND agent = ?1"
            ))
            .and_then(|mut st| st.query_row([agent.as_str()], |r| r.get(0)))
            .with_context(|| format!("counting {agent}'s pending requests in {path}"))?;
        if count as usize >= max_pending {
            bail!(
                "agent {agent} already has {count} pending approvals, the most an agent may \
                 have; ask again once an admin has decided some"
            );
        }
        let a = tx
            .prepare_cached(&format!(
                "INSERT INTO approvals (agent, kind, payload, status, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {COLUMNS}"
            ))
            .and_then(|mut st| {
                st.query_row(
                    params![
                        agent.as_str(),
                        kind.as_str(),
                        payload,
                        pending,
                        now_micros()
                    ],
                    approval_from_row,
                )
            })
            .with_context(|| format!("recording a {kind} request from {agent} in {path}"))?;
        tx.commit()
            .with_context(|| format!("recording a {kind} request from {agent} in {path}"))?;
        Ok((a, true))
    }

    /// The approval with this id, if there is one.
    pub fn get(&self, id: i64) -> Result<Option<Approval>> {
        get_in(&self.conn, id)
            .with_context(|| format!("reading approval {id} from {}", self.path.display()))
    }

    /// The newest approval's id, 0 when there is none. Ids are handed out in order and
    /// rows are never deleted, so the newest n approvals are the ids above this minus n.
    pub fn last_id(&self) -> Result<i64> {
        self.conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM approvals")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .with_context(|| format!("reading the newest approval id in {}", self.path.display()))
    }

    /// How many approvals are pending, without reading them (STATUS= asks on every unit
    /// state change).
    pub fn count_pending(&self) -> Result<usize> {
        let sql = format!(
            "SELECT COUNT(*) FROM approvals WHERE status = '{}'",
            Status::Pending.as_str()
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map(|n| n as usize)
            .with_context(|| format!("counting pending approvals in {}", self.path.display()))
    }

    /// The approvals `filter` selects, oldest first.
    pub fn list(&self, filter: ListFilter<'_>) -> Result<Vec<Approval>> {
        let (sql, agent) = match filter {
            // A literal, not a parameter, so SQLite can use the partial index on pending.
            ListFilter::Pending => (
                format!(
                    "SELECT {COLUMNS} FROM approvals WHERE status = '{}' ORDER BY id",
                    Status::Pending.as_str()
                ),
                None,
            ),
            ListFilter::All => (format!("SELECT {COLUMNS} FROM approvals ORDER BY id"), None),
            ListFilter::Approved => (
                format!(
                    "SELECT {COLUMNS} FROM approvals WHERE status = '{}' ORDER BY id",
                    Status::Approved.as_str()
                ),
                None,
            ),
            ListFilter::Agent(a) => (
                format!("SELECT {COLUMNS} FROM approvals WHERE agent = ?1 ORDER BY id"),
                Some(a.as_str()),
            ),
        };
        let read = || -> rusqlite::Result<Vec<Approval>> {
            let mut st = self.conn.prepare_cached(&sql)?;
            let rows = match agent {
                Some(a) => st.query_map([a], approval_from_row)?,
                None => st.query_map([], approval_from_row)?,
            };
            rows.collect()
        };
        read().with_context(|| format!("listing approvals in {}", self.path.display()))
    }

    /// At most `limit` approvals `filter` selects with an id above `after`, oldest first:
    /// one page of a listing, so no reply has to hold the whole table.
    pub fn list_page(
        &self,
        filter: ListFilter<'_>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Approval>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (sql, agent) = match filter {
            ListFilter::Pending => (
                format!(
                    "SELECT {COLUMNS} FROM approvals WHERE status = '{}' AND id > ?1 \
                     ORDER BY id LIMIT ?2",
                    Status::Pending.as_str()
                ),
                None,
            ),
            ListFilter::All => (
                format!("SELECT {COLUMNS} FROM approvals WHERE id > ?1 ORDER BY id LIMIT ?2"),
                None,
            ),
            ListFilter::Approved => (
                format!(
                    "SELECT {COLUMNS} FROM approvals WHERE status = '{}' AND id > ?1 \
                     ORDER BY id LIMIT ?2",
                    Status::Approved.as_str()
                ),
                None,
            ),
            ListFilter::Agent(a) => (
                format!(
                    "SELECT {COLUMNS} FROM approvals WHERE agent = ?3 AND id > ?1 \
                     ORDER BY id LIMIT ?2"
                ),
                Some(a.as_str()),
            ),
        };
        let read = || -> rusqlite::Result<Vec<Approval>> {
            let mut st = self.conn.prepare_cached(&sql)?;
            let rows = match agent {
                Some(a) => st.query_map(params![after, limit, a], approval_from_row)?,
                None => st.query_map(params![after, limit], approval_from_row)?,
            };
            rows.collect()
        };
        read().with_context(|| format!("listing approvals in {}", self.path.display()))
    }

    /// Fails every pending approval of `agent` with `note` (e.g. when it is destroyed, so
    /// no later agent of that name inherits them); the rows stay for audit. Returns the
    /// ids it marked, oldest first.
    pub fn fail_pending_of(&mut self, agent: &AgentName, note: &str) -> Result<Vec<i64>> {
        self.mark_orphans_with(|a| a != agent, note)
            .with_context(|| {
                format!(
                    "failing the pending approvals of {agent} in {}",
                    self.path.display()
                )
            })
    }

    /// Records an admin's decision on a pending approval. Exactly one of any number of
    /// concurrent deciders wins; the others get [`DecideError::AlreadyDecided`] with the
    /// status the winner left.
    pub fn decide(
        &mut self,
        id: i64,
        decision: Decision,
        by: &str,
        note: Option<&str>,
    ) -> Result<Approval, DecideError> {
        let outcome = self.step(
            id,
            decision.transition(),
            "decided_by = ?4, note = ?5, decided_at = ?6",
            &[&by, &note, &now_micros()],
        );
        match outcome
            .with_context(|| format!("deciding approval {id} in {}", self.path.display()))?
        {
            Ok(a) => Ok(a),
            Err(Refused::NotFound) => Err(DecideError::NotFound(id)),
            Err(Refused::InStatus(status)) => Err(DecideError::AlreadyDecided { id, status }),
        }
    }

    /// Records what became of an approved change. A failure's error becomes the note,
    /// after the admin's note if they gave one, so neither is lost.
    pub fn finish(&mut self, id: i64, outcome: Outcome) -> Result<Approval, FinishError> {
        let now = now_micros();
        let stepped = match &outcome {
            Outcome::Applied => self.step(id, Transition::Apply, "finished_at = ?4", &[&now]),
            Outcome::AppliedInPlace => self.step(
                id,
                Transition::Apply,
                "finished_at = ?4, note = COALESCE(note || '; ', '') || ?5",
                &[&now, &approval::IN_PLACE_NOTE],
            ),
            Outcome::Failed(error) => self.step(
                id,
                Transition::Fail,
                "finished_at = ?4, note = COALESCE(note || '; ', '') || ?5",
                &[&now, error],
            ),
        };
        match stepped.with_context(|| {
            format!(
                "recording the outcome of approval {id} in {}",
                self.path.display()
            )
        })? {
            Ok(a) => Ok(a),
            Err(Refused::NotFound) => Err(FinishError::NotFound(id)),
            Err(Refused::InStatus(status)) => Err(FinishError::NotApproved { id, status }),
        }
    }

    /// Fails every pending approval whose agent `exists` says is gone (its state dir
    /// vanished), with the note [`ORPHAN_NOTE`]; the rows stay for audit. Returns the ids
    /// it marked, oldest first.
    pub fn mark_orphans(&mut self, exists: impl Fn(&AgentName) -> bool) -> Result<Vec<i64>> {
        self.mark_orphans_with(exists, ORPHAN_NOTE)
            .with_context(|| format!("marking orphaned approvals in {}", self.path.display()))
    }

    fn mark_orphans_with(
        &mut self,
        exists: impl Fn(&AgentName) -> bool,
        note: &str,
    ) -> Result<Vec<i64>> {
        // `exists` touches the filesystem, so it runs before taking the write lock; an
        // approval decided in between is skipped by the guarded UPDATE below.
        let mut alive: HashMap<AgentName, bool> = HashMap::new();
        let candidates: Vec<i64> = self
            .list(ListFilter::Pending)?
            .into_iter()
            .filter(|a| {
                !*alive
                    .entry(a.agent.clone())
                    .or_insert_with(|| exists(&a.agent))
            })
            .map(|a| a.id)
            .collect();
        if candidates.is_empty() {
            return Ok(candidates);
        }
        self.writable()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_micros();
        let mut marked = Vec::with_capacity(candidates.len());
        for id in candidates {
            if step_in(
                &tx,
                id,
                Transition::Orphan,
                "note = ?4, finished_at = ?5",
                &[&note, &now],
            )?
            .is_ok()
            {
                marked.push(id);
            }
        }
        tx.commit()?;
        Ok(marked)
    }

    /// Takes transition `t` on approval `id` in its own IMMEDIATE transaction.
    fn step(
        &mut self,
        id: i64,
        t: Transition,
        set: &str,
        extra: &[&dyn ToSql],
    ) -> Result<Result<Approval, Refused>> {
        self.writable()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stepped = step_in(&tx, id, t, set, extra)?;
        // Commit even a refusal: it changed nothing, and ending the transaction either way
        // keeps the code to one path.
        tx.commit()?;
        Ok(stepped)
    }
}

/// The heart of every change: one UPDATE that only matches if the row is still in the
/// status `t` starts from. `set` assigns further columns from parameters `?4` onwards.
/// Run inside an IMMEDIATE transaction so that, when nothing matched, the status read
/// back is the one that beat us.
fn step_in(
    conn: &Connection,
    id: i64,
    t: Transition,
    set: &str,
    extra: &[&dyn ToSql],
) -> Result<Result<Approval, Refused>> {
    let sql = format!(
        "UPDATE approvals SET status = ?1, {set} WHERE id = ?2 AND status = ?3 RETURNING {COLUMNS}"
    );
    let (to, from) = (t.to().as_str(), t.from().as_str());
    let mut params: Vec<&dyn ToSql> = vec![&to, &id, &from];
    params.extend_from_slice(extra);
    let updated = conn
        .prepare_cached(&sql)?
        .query_row(params.as_slice(), approval_from_row)
        .optional()?;
    if let Some(a) = updated {
        return Ok(Ok(a));
    }
    Ok(Err(match get_in(conn, id)? {
        None => Refused::NotFound,
        Some(a) => Refused::InStatus(a.status),
    }))
}

fn get_in(conn: &Connection, id: i64) -> Result<Option<Approval>> {
    let sql = format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], approval_from_row)
        .optional()?)
}

/// Decodes a row selected with [`COLUMNS`]. A bad agent name or status (only possible if
/// someone edited the file by hand) is an error naming the row, not a panic.
fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<Approval> {
    let bad = |col: usize, why: String| {
        rusqlite::Error::FromSqlConversionFailure(col, Type::Text, why.into())
    };
    let id: i64 = row.get(0)?;
    let agent: String = row.get(1)?;
    let agent = AgentName::parse(&agent).map_err(|e| bad(1, format!("approval {id}: {e}")))?;
    let status: String = row.get(4)?;
    let status = Status::parse(&status)
        .ok_or_else(|| bad(4, format!("approval {id}: unknown status {status:?}")))?;
    let kind: String = row.get(2)?;
    let kind = ApprovalKind::parse(&kind)
        .ok_or_else(|| bad(2, format!("approval {id}: unknown kind {kind:?}")))?;
    Ok(Approval {
        id,
        agent,
        kind,
        payload: row.get(3)?,
        status,
        note: row.get(5)?,
        decided_by: row.get(6)?,
        created_at: row.get(7)?,
        decided_at: row.get(8)?,
        finished_at: row.get(9)?,
    })
}

/// Unix microseconds; a clock before 1970 reads as 0 rather than failing a request.
fn now_micros() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}
