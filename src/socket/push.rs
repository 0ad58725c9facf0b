//! The daemon's side of pushes: which connections of which agent subscribed, and handing
//! each a [`Push`] without ever waiting on the agent. Every subscriber has a bounded
//! queue; one that is full (its agent does not read its socket) is dropped, which closes
//! its connection, and nothing is lost by that: a harness that subscribes again is sent
//! its agent's recent decisions anew (see `Request::Subscribe`).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::protocol::Push;
use crate::spec::AgentName;

/// Pushes queued for one subscriber before it counts as not reading. Decisions come at
/// an admin's pace; 64 unread means the agent stopped reading.
pub const QUEUE: usize = 64;

/// Subscribed connections per agent; the oldest is dropped for a new one (a harness that
/// reconnects leaves its old subscription behind until the daemon notices it is gone).
pub const MAX_SUBSCRIBERS: usize = 4;

#[derive(Default)]
pub struct Pushes {
    subscribers: Mutex<HashMap<AgentName, Vec<mpsc::Sender<Push>>>>,
}

impl Pushes {
    /// A new subscription for `agent`: the receiving end, for its connection to write out.
    pub fn subscribe(&self, agent: &AgentName) -> mpsc::Receiver<Push> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut subs = self.subscribers.lock().expect("pushes lock");
        let list = subs.entry(agent.clone()).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() >= MAX_SUBSCRIBERS {
            list.remove(0);
        }
        list.push(tx);
        rx
    }

    /// Queues `push` for every subscriber of `agent`, never waiting: a subscriber whose
    /// queue is full or whose connection ended is dropped. Returns how many got it.
    pub fn send(&self, agent: &AgentName, push: &Push) -> usize {
        let mut subs = self.subscribers.lock().expect("pushes lock");
        let Some(list) = subs.get_mut(agent) else {
            return 0;
        };
        list.retain(|s| match s.try_send(push.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                log::warn!(
                    "agent {agent}: {QUEUE} pushes unread on its socket; closing that connection \
                     (its harness is sent the decisions again when it subscribes)"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        list.len()
    }

    /// Whether a harness of `agent` is subscribed (it hears pushes).
    pub fn listening(&self, agent: &AgentName) -> bool {
        self.subscribers
            .lock()
            .expect("pushes lock")
            .get(agent)
            .is_some_and(|l| l.iter().any(|s| !s.is_closed()))
    }

    /// Forgets `agent`'s subscribers (its socket is being unregistered).
    pub fn forget(&self, agent: &AgentName) {
        self.subscribers.lock().expect("pushes lock").remove(agent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(id: i64) -> Push {
        Push::ApprovalDecided {
            id,
            kind: "spec_change".into(),
            status: "approved".into(),
            note: String::new(),
        }
    }

    #[test]
    fn a_subscriber_that_does_not_read_is_dropped_without_waiting() {
        let p = Pushes::default();
        let alice = AgentName::parse("alice").unwrap();
        let bob = AgentName::parse("bob").unwrap();
        let _stuck = p.subscribe(&alice);
        let mut reading = p.subscribe(&bob);
        for i in 0..QUEUE as i64 {
            assert_eq!(p.send(&alice, &decided(i)), 1);
        }
        assert_eq!(p.send(&alice, &decided(99)), 0, "full: dropped");
        assert!(!p.listening(&alice));
        // Another agent is not affected.
        assert_eq!(p.send(&bob, &decided(1)), 1);
        assert_eq!(reading.try_recv().unwrap(), decided(1));
    }

    #[test]
    fn subscribers_are_bounded_and_closed_ones_forgotten() {
        let p = Pushes::default();
        let alice = AgentName::parse("alice").unwrap();
        let mut kept: Vec<_> = (0..MAX_SUBSCRIBERS + 2)
            .map(|_| p.subscribe(&alice))
            .collect();
        assert_eq!(p.send(&alice, &decided(1)), MAX_SUBSCRIBERS);
        kept.truncate(0);
        assert_eq!(p.send(&alice, &decided(2)), 0);
        assert_eq!(p.send(&AgentName::parse("carol").unwrap(), &decided(3)), 0);
    }
}
