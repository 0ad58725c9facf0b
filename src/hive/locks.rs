//! The per-agent locks: two verbs on one agent (a create, a rebuild, an approval's apply, a
//! harness heal) never interleave. One shared [`AgentLocks`] is handed to every component
//! that acts on an agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::spec::AgentName;

#[derive(Default)]
pub(super) struct AgentLocks(Mutex<HashMap<AgentName, Arc<tokio::sync::Mutex<()>>>>);

impl AgentLocks {
    /// Waits for `name`'s lock; held until the guard drops.
    pub(super) async fn lock(&self, name: &AgentName) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .0
            .lock()
            .expect("agent locks")
            .entry(name.clone())
            .or_default()
            .clone();
        m.lock_owned().await
    }
}
