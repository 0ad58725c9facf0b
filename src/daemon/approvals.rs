//! Approvals in the daemon: agents ask through their socket, admins decide over D-Bus,
//! the store remembers everything (src/store). Every transition is one journald entry
//! carrying HIVE_APPROVAL_ID.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api::{self, Error};
use crate::journal::{self, Event};
use crate::paths::Roots;
use crate::socket::server::Handler;
use crate::spec::{AgentName, AgentSpec};
use crate::store::{
    Approval, DecideError, Decision, FinishError, ListFilter, Outcome, Status, Store, ORPHAN_NOTE,
};

/// The kinds of request an agent may make.
pub const SPEC_CHANGE: &str = "spec_change";

pub struct Approvals {
    store: Mutex<Store>,
    roots: Roots,
    /// For AgentNew-style signals on changes that start outside a D-Bus call.
    conn: zbus::Connection,
}

fn event(e: Event, a: &Approval, extra: &[(&str, String)], msg: &str) {
    let mut fields = vec![
        ("HIVE_APPROVAL_ID", a.id.to_string()),
        ("HIVE_APPROVAL_KIND", a.kind.clone()),
    ];
    fields.extend(extra.iter().cloned());
    journal::emit(
        e,
        Some(&a.agent),
        Some(&a.agent.container_unit()),
        &fields,
        msg,
    );
}

impl Approvals {
    pub fn open(roots: &Roots, conn: &zbus::Connection) -> Result<Self> {
        let store = Store::open(roots.store())?;
        Ok(Self {
            store: Mutex::new(store),
            roots: roots.clone(),
            conn: conn.clone(),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("store lock")
    }

    fn signal_changed(&self, a: &Approval) {
        let conn = self.conn.clone();
        let (id, status) = (a.id, a.status.as_str().to_owned());
        tokio::spawn(async move {
            let _ = conn
                .emit_signal(
                    None::<()>,
                    api::MANAGER_PATH,
                    api::MANAGER_INTERFACE,
                    "ApprovalChanged",
                    &(id, status),
                )
                .await;
        });
    }

    /// Marks pending approvals whose agent's state dir is gone as failed (seed gotcha:
    /// orphans are kept for audit, not deleted) and journals each.
    pub fn mark_orphans(&self) -> Result<()> {
        let ids = self
            .store()
            .mark_orphans(|agent| self.roots.state_dir(agent).is_dir())?;
        for id in ids {
            if let Some(a) = self.store().get(id)? {
                event(
                    Event::ApprovalFailed,
                    &a,
                    &[("HIVE_ERROR", ORPHAN_NOTE.into())],
                    &format!("approval {id} of agent {}: {ORPHAN_NOTE}", a.agent),
                );
                self.signal_changed(&a);
            }
        }
        Ok(())
    }

    pub fn list(&self, all: bool) -> Result<Vec<Approval>, Error> {
        self.mark_orphans().map_err(Error::failed)?;
        let filter = if all {
            ListFilter::All
        } else {
            ListFilter::Pending
        };
        self.store().list(filter).map_err(Error::failed)
    }

    pub fn get(&self, id: i64) -> Result<Approval, Error> {
        self.store()
            .get(id)
            .map_err(Error::failed)?
            .ok_or_else(|| Error::NoSuchApproval(format!("no approval with id {id}")))
    }

    pub fn pending(&self) -> usize {
        self.store().count_pending().unwrap_or(0)
    }

    /// Records an admin's decision; exactly one of two racing decisions wins.
    pub fn decide(
        &self,
        id: i64,
        decision: Decision,
        by: &str,
        note: Option<&str>,
    ) -> Result<Approval, Error> {
        self.mark_orphans().map_err(Error::failed)?;
        if decision == Decision::Approve {
            self.check_can_apply(id)?;
        }
        let a = self
            .store()
            .decide(id, decision, by, note)
            .map_err(|e| match e {
                DecideError::NotFound(id) => {
                    Error::NoSuchApproval(format!("no approval with id {id}"))
                }
                DecideError::AlreadyDecided { id, status } => Error::AlreadyDecided(format!(
                    "approval {id} is already {status}; nothing changed"
                )),
                DecideError::Store(e) => {
                    Error::failed(e.context(format!("recording the decision on approval {id}")))
                }
            })?;
        let (e, verb) = match decision {
            Decision::Approve => (Event::ApprovalApproved, "approved"),
            Decision::Deny => (Event::ApprovalDenied, "denied"),
        };
        event(
            e,
            &a,
            &[("HIVE_DECIDED_BY", by.to_owned())],
            &format!("approval {id} of agent {}: {verb} by {by}", a.agent),
        );
        self.signal_changed(&a);
        Ok(a)
    }

    /// An approval recorded as approved never goes back to pending, so before one is
    /// recorded, make sure applying it can begin: the store takes changes, and the new spec
    /// can be written where applying writes it (it is written beside the spec in full,
    /// synced, and removed). A read-only or full state dir then refuses the approve and the
    /// approval stays pending, rather than the decision being recorded and its change
    /// failing at once, which would end the approval `failed` and use up the request.
    ///
    /// The store alone cannot tell: its files stay open, so SQLite may still write after
    /// the mount under it turned read-only, and once its WAL has wrapped around it rewrites
    /// space it already holds on a full filesystem.
    fn check_can_apply(&self, id: i64) -> Result<(), Error> {
        let Some(a) = self.store().get(id).map_err(Error::failed)? else {
            // The store's own decide names what is wrong with the id.
            return Ok(());
        };
        if a.status != Status::Pending {
            return Ok(());
        }
        let pending = |why: String| Error::Failed(format!("approval {id} stays pending: {why}"));
        self.store()
            .writable()
            .map_err(|e| pending(format!("{e:#}")))?;
        // A change that no longer lays over the agent's spec is applying's to report: the
        // approval then fails with the reason, as before.
        let Some(text) = new_spec(&self.roots, &a) else {
            return Ok(());
        };
        // The saved spec's own directory: that is where applying writes it.
        let dir = self.roots.agent_dir(&a.agent);
        let trial = dir.join(format!(".spec.toml.approval-{id}"));
        let written = write_synced(&trial, text.as_bytes());
        let _ = std::fs::remove_file(&trial);
        written.map_err(|e| {
            pending(format!(
                "agent {}: cannot write its new spec in {}: {}",
                a.agent,
                dir.display(),
                super::preflight::io_reason(&e)
            ))
        })
    }

    /// Records how applying an approved change ended.
    pub fn finish(&self, id: i64, outcome: Outcome) -> Result<Approval, Error> {
        let failed = match &outcome {
            Outcome::Failed(e) => Some(e.clone()),
            Outcome::Applied => None,
        };
        let a = self.store().finish(id, outcome).map_err(|e| match e {
            FinishError::NotFound(id) => Error::NoSuchApproval(format!("no approval with id {id}")),
            FinishError::NotApproved { id, status } => {
                Error::AlreadyDecided(format!("approval {id} is {status}, not approved"))
            }
            FinishError::Store(e) => {
                Error::failed(e.context(format!("recording the outcome of approval {id}")))
            }
        })?;
        match failed {
            None => event(
                Event::ApprovalApplied,
                &a,
                &[],
                &format!("approval {id} of agent {}: applied", a.agent),
            ),
            Some(err) => event(
                Event::ApprovalFailed,
                &a,
                &[("HIVE_ERROR", err.clone())],
                &format!("approval {id} of agent {}: failed: {err}", a.agent),
            ),
        }
        self.signal_changed(&a);
        Ok(a)
    }

    fn request(&self, agent: &AgentName, kind: &str, payload: &Value) -> Result<Approval> {
        if kind != SPEC_CHANGE {
            anyhow::bail!("unknown request kind {kind:?} (known: {SPEC_CHANGE})");
        }
        // Refuse what could never be applied now, rather than leave it for an admin.
        let change = AgentSpec::change_from_json(payload).map_err(anyhow::Error::msg)?;
        let current =
            super::hive::load_spec(&self.roots, agent).map_err(|e| anyhow::anyhow!("{e}"))?;
        current.with_change(&change).map_err(anyhow::Error::msg)?;
        let a = self
            .store()
            .request(agent, kind, &payload.to_string())
            .with_context(|| format!("agent {agent}: recording the request"))?;
        event(
            Event::ApprovalRequested,
            &a,
            &[("HIVE_PAYLOAD", a.payload.clone())],
            &format!(
                "approval {} requested by agent {agent}: {kind} {}",
                a.id, a.payload
            ),
        );
        let conn = self.conn.clone();
        let (id, name) = (a.id, agent.to_string());
        tokio::spawn(async move {
            let _ = conn
                .emit_signal(
                    None::<()>,
                    api::MANAGER_PATH,
                    api::MANAGER_INTERFACE,
                    "ApprovalNew",
                    &(id, name),
                )
                .await;
        });
        Ok(a)
    }
}

/// The spec applying `a` would write, if its change still lays over the agent's spec.
fn new_spec(roots: &Roots, a: &Approval) -> Option<String> {
    if a.kind != SPEC_CHANGE {
        return None;
    }
    let payload: Value = serde_json::from_str(&a.payload).ok()?;
    let change = AgentSpec::change_from_json(&payload).ok()?;
    let current = super::hive::load_spec(roots, &a.agent).ok()?;
    let spec = current.with_change(&change).ok()?;
    Some(spec.to_file().to_toml())
}

/// Writes `data` to a new or truncated file at `path` and syncs it, as applying writes a
/// spec: a full disk may only show at the sync.
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

impl Handler for Approvals {
    fn request_approval(
        &self,
        agent: &AgentName,
        kind: &str,
        payload: &Value,
    ) -> Result<i64, String> {
        self.request(agent, kind, payload)
            .map(|a| a.id)
            .map_err(|e| format!("{e:#}"))
    }
}
