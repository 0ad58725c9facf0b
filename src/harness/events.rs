//! The agent's durable event log, `/state/hyperhive-events.sqlite`: it lives in the
//! agent's state dir, so it survives destroy and recreate. Logging is best effort — a
//! harness that cannot write its log still serves its agent (and says so once).

use std::path::Path;
use std::sync::Mutex;

/// Now, as the log's `at_usec`: µs since the epoch.
pub fn now_usec() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub struct EventLog {
    conn: Option<Mutex<rusqlite::Connection>>,
}

impl EventLog {
    pub fn open(path: &Path) -> Self {
        let opened = (|| -> rusqlite::Result<rusqlite::Connection> {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(2))?;
            conn.execute_batch(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE IF NOT EXISTS events (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     at_usec INTEGER NOT NULL,
                     kind TEXT NOT NULL,
                     data TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY);",
            )?;
            Ok(conn)
        })();
        match opened {
            Ok(conn) => Self {
                conn: Some(Mutex::new(conn)),
            },
            Err(e) => {
                log::warn!("event log {}: {e}; continuing without it", path.display());
                Self { conn: None }
            }
        }
    }

    /// Records `kind` unless an event with `key` was recorded this way before (the daemon
    /// sends an agent's recent decisions again on every subscribe). Returns whether it is
    /// new; without a log, everything is.
    pub fn record_once(&self, kind: &str, key: &str, data: &serde_json::Value) -> bool {
        let Some(conn) = &self.conn else { return true };
        let inserted = conn
            .lock()
            .expect("event log lock")
            .execute("INSERT OR IGNORE INTO seen (key) VALUES (?1)", [key]);
        match inserted {
            Ok(0) => false,
            Ok(_) => {
                self.record(kind, data);
                true
            }
            Err(e) => {
                log::warn!("event log: {e}");
                self.record(kind, data);
                true
            }
        }
    }

    pub fn record(&self, kind: &str, data: &serde_json::Value) {
        self.record_at(now_usec(), kind, data);
    }

    /// Records an event that happened at `at_usec` (µs since the epoch), told later.
    pub fn record_at(&self, at_usec: i64, kind: &str, data: &serde_json::Value) {
        self.record_all(&[(at_usec, kind, data.clone())]);
    }

    /// Records events in one transaction: one write (and fsync) for all of them.
    pub fn record_all(&self, events: &[(i64, &str, serde_json::Value)]) {
        let Some(conn) = &self.conn else { return };
        let mut conn = conn.lock().expect("event log lock");
        let written = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for (at, kind, data) in events {
                tx.execute(
                    "INSERT INTO events (at_usec, kind, data) VALUES (?1, ?2, ?3)",
                    rusqlite::params![at, kind, data.to_string()],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = written {
            log::warn!("event log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_sent_again_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("events.sqlite"));
        let d = serde_json::json!({"id": 3, "status": "applied"});
        assert!(log.record_once("approval_decided", "approval 3 applied", &d));
        assert!(!log.record_once("approval_decided", "approval 3 applied", &d));
        assert!(log.record_once("approval_decided", "approval 3 approved", &d));
        let conn = log.conn.as_ref().unwrap().lock().unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE kind = 'approval_decided'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 2);
    }
}
