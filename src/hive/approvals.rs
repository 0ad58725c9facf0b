//! Approvals in the daemon: agents ask through their socket, admins decide over D-Bus,
//! the store remembers everything (src/store). Every transition is one journald entry
//! carrying HIVE_APPROVAL_ID.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::changes::{Change, Changes};
use super::files::write_synced;
use super::specs::load_spec;
use super::Error;
use crate::journal::{self, fields, Event};
use crate::paths::Roots;
use crate::spec::request::{AgentRequest, MAX_PAYLOAD};
use crate::spec::{AgentName, AgentSpec};
use crate::store::{
    Approval, ApprovalKind, DecideError, Decision, FinishError, ListFilter, Outcome, Status, Store,
    ORPHAN_NOTE,
};

/// Pending approvals one agent may have at once. An agent asks for a change and waits for
/// an admin; a handful is normal, 32 is more than an admin would read through, and with
/// [`MAX_PAYLOAD`] it bounds what one agent parks in the store to 128 KiB.
pub const MAX_PENDING: usize = 32;

/// The note of pending approvals of an agent that was destroyed: they are kept for audit,
/// and never applied to a later agent of the same name.
pub const DESTROYED_NOTE: &str = "agent destroyed";

/// How often a broken store is tried again, at most: an admin may repair or restore it
/// while the daemon runs, and a flood of requests must not turn into a flood of opens.
const REOPEN_EVERY: Duration = Duration::from_secs(5);

pub struct Approvals {
    store: Mutex<Slot>,
    roots: Roots,
    /// Where every new approval and change of status is published.
    changes: Changes,
}

/// The store, or why it cannot be used and when that was last tried.
enum Slot {
    Open(Store),
    Broken { why: String, tried: Instant },
}

fn event(e: Event, a: &Approval, extra: &[(&str, String)], msg: &str) {
    let mut fields = vec![
        (fields::APPROVAL_ID, a.id.to_string()),
        (fields::APPROVAL_KIND, a.kind.as_str().to_owned()),
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
    /// Opens the store. A store that cannot be opened (corrupt, unreadable, written by a
    /// newer hyperhive) does not stop the daemon: agents and the lifecycle API do not need
    /// it. The problem is journaled, shown in STATUS= (see [`Approvals::problem`]) and
    /// returned by every approvals call until the store opens again.
    pub fn open(roots: &Roots, changes: Changes) -> Self {
        let slot = match Store::open(roots.store()) {
            Ok(store) => Slot::Open(store),
            Err(e) => {
                let why = crate::spec::one_line(&format!("{e:#}"));
                store_unavailable(&why);
                Slot::Broken {
                    why,
                    tried: Instant::now(),
                }
            }
        };
        Self {
            store: Mutex::new(slot),
            roots: roots.clone(),
            changes,
        }
    }

    /// Runs `f` on the open store, reopening a broken one at most every [`REOPEN_EVERY`].
    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        let mut slot = self.store.lock().expect("store lock");
        if let Slot::Broken { tried, .. } = &*slot {
            if tried.elapsed() >= REOPEN_EVERY {
                *slot = match Store::open(self.roots.store()) {
                    Ok(store) => {
                        log::info!("store {} opened again", self.roots.store().display());
                        Slot::Open(store)
                    }
                    Err(e) => Slot::Broken {
                        why: crate::spec::one_line(&format!("{e:#}")),
                        tried: Instant::now(),
                    },
                };
            }
        }
        match &mut *slot {
            Slot::Open(store) => f(store),
            Slot::Broken { why, .. } => Err(anyhow::anyhow!("approvals store unavailable: {why}")),
        }
    }

    /// Why the store cannot be used, if it cannot (for STATUS=).
    pub fn problem(&self) -> Option<String> {
        match self.with_store(|_| Ok(())) {
            Ok(()) => None,
            Err(e) => Some(format!("{e:#}")),
        }
    }

    fn signal_changed(&self, a: &Approval) {
        self.changes.publish(Change::ApprovalChanged {
            id: a.id,
            status: a.status,
        });
    }

    /// Marks pending approvals whose agent's state dir is gone as failed (seed gotcha:
    /// orphans are kept for audit, not deleted) and journals each.
    pub fn mark_orphans(&self) -> Result<()> {
        let marked = self.with_store(|s| {
            let ids = s.mark_orphans(|agent| {
                // An image not mounted now (its agent down) is state all the same.
                self.roots.state_dir(agent).is_dir() || self.roots.disk_image(agent).is_file()
            })?;
            ids.into_iter()
                .filter_map(|id| s.get(id).transpose())
                .collect::<Result<Vec<_>>>()
        })?;
        for a in marked {
            event(
                Event::ApprovalFailed,
                &a,
                &[(fields::ERROR, ORPHAN_NOTE.into())],
                &format!("approval {} of agent {}: {ORPHAN_NOTE}", a.id, a.agent),
            );
            self.signal_changed(&a);
        }
        Ok(())
    }

    /// The agent is being destroyed: its pending approvals end `failed` with the note
    /// [`DESTROYED_NOTE`], kept for audit, so that none is ever applied to a later agent
    /// of the same name. A store that cannot be used is logged, not fatal: a destroy must
    /// go on without it.
    pub fn agent_destroyed(&self, agent: &AgentName) {
        let marked = self.with_store(|s| {
            let ids = s.fail_pending_of(agent, DESTROYED_NOTE)?;
            ids.into_iter()
                .filter_map(|id| s.get(id).transpose())
                .collect::<Result<Vec<_>>>()
        });
        match marked {
            Ok(marked) => {
                for a in marked {
                    event(
                        Event::ApprovalFailed,
                        &a,
                        &[(fields::ERROR, DESTROYED_NOTE.into())],
                        &format!("approval {} of agent {}: {DESTROYED_NOTE}", a.id, a.agent),
                    );
                    self.signal_changed(&a);
                }
            }
            Err(e) => log::error!("agent {agent}: failing its pending approvals: {e:#}"),
        }
    }

    /// Approvals recorded as approved but not finished (the daemon died in between).
    pub fn approved(&self) -> Result<Vec<Approval>, Error> {
        self.with_store(|s| s.list(ListFilter::Approved))
            .map_err(Error::failed)
    }

    /// One page of a listing: up to `limit` approvals with ids above `after`, oldest first.
    /// Orphans are marked when a listing starts (`after` 0), not on every page.
    pub fn page(&self, all: bool, after: i64, limit: usize) -> Result<Vec<Approval>, Error> {
        if after <= 0 {
            self.mark_orphans().map_err(Error::failed)?;
        }
        let filter = if all {
            ListFilter::All
        } else {
            ListFilter::Pending
        };
        self.with_store(|s| s.list_page(filter, after, limit))
            .map_err(Error::failed)
    }

    /// The newest approval's id (0: none yet), for reading the newest pages.
    pub fn last_id(&self) -> Result<i64, Error> {
        self.with_store(|s| s.last_id()).map_err(Error::failed)
    }

    pub fn get(&self, id: i64) -> Result<Approval, Error> {
        self.with_store(|s| s.get(id))
            .map_err(Error::failed)?
            .ok_or_else(|| Error::NoSuchApproval(format!("no approval with id {id}")))
    }

    pub fn pending(&self) -> usize {
        self.with_store(|s| s.count_pending()).unwrap_or(0)
    }

    /// The pending approvals, oldest first.
    pub fn pending_list(&self) -> Result<Vec<Approval>, Error> {
        self.with_store(|s| s.list(ListFilter::Pending))
            .map_err(Error::failed)
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
            .with_store(|s| Ok(s.decide(id, decision, by, note)))
            .map_err(Error::failed)?
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
            &[(fields::DECIDED_BY, by.to_owned())],
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
        let Some(a) = self.with_store(|s| s.get(id)).map_err(Error::failed)? else {
            // The store's own decide names what is wrong with the id.
            return Ok(());
        };
        if a.status != Status::Pending {
            return Ok(());
        }
        let pending = |why: String| Error::Failed(format!("approval {id} stays pending: {why}"));
        self.with_store(|s| s.writable())
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
            Outcome::Applied | Outcome::AppliedInPlace => None,
        };
        let a = self
            .with_store(|s| Ok(s.finish(id, outcome)))
            .map_err(Error::failed)?
            .map_err(|e| match e {
                FinishError::NotFound(id) => {
                    Error::NoSuchApproval(format!("no approval with id {id}"))
                }
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
                &[(fields::ERROR, err.clone())],
                &format!("approval {id} of agent {}: failed: {err}", a.agent),
            ),
        }
        self.signal_changed(&a);
        Ok(a)
    }

    /// An agent's request, refused at the door unless it is within what an agent may ask
    /// for (docs/approvals.md): a known kind, a payload of at most [`MAX_PAYLOAD`] bytes of
    /// allowlisted fields whose bind sources pass the host checks, and room under the
    /// agent's [`MAX_PENDING`]. An identical pending request is answered with its id.
    /// Every refusal is one line, journaled as `approval_refused`.
    pub fn request(&self, agent: &AgentName, kind: &str, payload: &Value) -> Result<i64, String> {
        match self.request_inner(agent, kind, payload) {
            Ok(id) => Ok(id),
            Err(e) => {
                let why = crate::spec::one_line(&format!("{e:#}"));
                let why = if why.starts_with(&format!("agent {agent}")) {
                    why
                } else {
                    format!("agent {agent}: {why}")
                };
                journal::emit(
                    Event::ApprovalRefused,
                    Some(agent),
                    Some(&agent.container_unit()),
                    &[
                        (fields::APPROVAL_KIND, shown_kind(kind)),
                        (fields::ERROR, why.clone()),
                    ],
                    &format!("request refused: {why}"),
                );
                Err(why)
            }
        }
    }

    fn request_inner(&self, agent: &AgentName, kind: &str, payload: &Value) -> Result<i64> {
        let Some(kind) = ApprovalKind::parse(kind) else {
            anyhow::bail!(
                "unknown request kind {} (known: {}, {})",
                shown_kind(kind),
                ApprovalKind::SpecChange,
                ApprovalKind::ToolUse
            );
        };
        let text = payload.to_string();
        if text.len() > MAX_PAYLOAD {
            anyhow::bail!(
                "request of {} bytes refused: a request may hold at most {MAX_PAYLOAD} bytes",
                text.len()
            );
        }
        // Refuse what an agent may not ask for, or what could never be applied now, rather
        // than leave it for an admin.
        match kind {
            ApprovalKind::ToolUse => super::tool_use::check(&self.roots, agent, payload),
            ApprovalKind::SpecChange => spec_change(&self.roots, agent, payload).map(|_| ()),
        }
        .map_err(anyhow::Error::msg)?;
        let (a, new) = self
            .with_store(|s| s.request_bounded(agent, kind, &text, MAX_PENDING))
            .with_context(|| format!("agent {agent}: recording the request"))?;
        if !new {
            return Ok(a.id);
        }
        event(
            Event::ApprovalRequested,
            &a,
            &[(fields::PAYLOAD, a.payload.clone())],
            &format!(
                "approval {} requested by agent {agent}: {kind} {}",
                a.id, a.payload
            ),
        );
        self.changes.publish(Change::ApprovalNew {
            id: a.id,
            agent: agent.clone(),
        });
        Ok(a.id)
    }
}

/// A kind as a log line may show it: an agent chose it.
fn shown_kind(kind: &str) -> String {
    let mut s: String = kind
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if kind.chars().count() > 64 {
        s.push('…');
    }
    format!("\"{s}\"")
}

/// Emits the journal entry for a store that cannot be used.
fn store_unavailable(why: &str) {
    journal::emit(
        Event::StoreUnavailable,
        None,
        None,
        &[(fields::ERROR, why.to_owned())],
        &format!(
            "approvals store unavailable, agents and the lifecycle API go on without it: {why}"
        ),
    );
}

/// The spec applying `a` would write, if its change still lays over the agent's spec.
fn new_spec(roots: &Roots, a: &Approval) -> Option<String> {
    let (_, spec) = requested_spec(roots, a).ok()?;
    Some(spec.to_file().to_toml())
}

/// The agent's spec now and the spec approving `a` would make of it, checked as the
/// request was when the agent made it (the allowlist, the limits, the bind sources on the
/// host as they are now). Applying uses this, so a request that no longer passes fails.
pub fn requested_spec(roots: &Roots, a: &Approval) -> Result<(AgentSpec, AgentSpec), String> {
    if a.kind != ApprovalKind::SpecChange {
        return Err(format!("unknown request kind {}", a.kind));
    }
    let payload: Value =
        serde_json::from_str(&a.payload).map_err(|e| format!("reading the request: {e}"))?;
    spec_change(roots, &a.agent, &payload)
}

/// The one place a requested change is laid over an agent's spec: the agent's spec now,
/// and the spec `payload` makes of it, if the change stays within what an agent may ask
/// for and its bind sources pass the host checks as the host is now. Run when the agent
/// asks, when an admin looks, when approving, and when applying.
fn spec_change(
    roots: &Roots,
    agent: &AgentName,
    payload: &Value,
) -> Result<(AgentSpec, AgentSpec), String> {
    let req = AgentRequest::parse(payload)?;
    let current = load_spec(roots, agent).map_err(|e| e.to_string())?;
    let spec = super::request_checks::check(&req, &current, roots)?;
    Ok((current, spec))
}

impl Approvals {
    /// Every approval of `agent`, oldest first (what it may see of the store).
    pub(super) fn of_agent(&self, agent: &AgentName) -> Result<Vec<Approval>> {
        self.with_store(|s| s.list(ListFilter::Agent(agent)))
    }

    pub(super) fn roots(&self) -> &Roots {
        &self.roots
    }
}
