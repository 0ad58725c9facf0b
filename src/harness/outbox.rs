//! What the harness keeps while the daemon is unreachable: a bounded queue of events, and
//! the pause before the next reconnect attempt. Pure, so both are tested without a socket.

use std::collections::VecDeque;
use std::time::Duration;

/// Events waiting for the daemon, oldest first. Bounded: past `capacity` the oldest are
/// dropped, counted and named, and [`Outbox::take_dropped`] hands out one record of them to
/// deliver (and log) ahead of the rest, so nothing disappears without a trace.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    queue: VecDeque<(String, serde_json::Value)>,
    dropped: Vec<String>,
    dropped_count: u64,
}

/// Names of dropped events listed in the record; beyond it only the count grows.
const DROPPED_NAMES: usize = 32;

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "an outbox holds at least one event");
        Self {
            capacity,
            queue: VecDeque::new(),
            dropped: Vec::new(),
            dropped_count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn push(&mut self, name: &str, data: serde_json::Value) {
        if self.queue.len() == self.capacity {
            if let Some((old, _)) = self.queue.pop_front() {
                self.dropped_count += 1;
                if self.dropped.len() < DROPPED_NAMES {
                    self.dropped.push(old);
                }
            }
        }
        self.queue.push_back((name.to_owned(), data));
    }

    /// Puts an event ahead of the others (it may exceed the capacity by one: it is the
    /// record of what was dropped, and must not drop anything itself).
    pub fn push_front(&mut self, name: &str, data: serde_json::Value) {
        self.queue.push_front((name.to_owned(), data));
    }

    pub fn front(&self) -> Option<(&str, &serde_json::Value)> {
        self.queue.front().map(|(n, d)| (n.as_str(), d))
    }

    pub fn pop_front(&mut self) {
        self.queue.pop_front();
    }

    /// The record of events dropped since the last call, if any were.
    pub fn take_dropped(&mut self) -> Option<serde_json::Value> {
        if self.dropped_count == 0 {
            return None;
        }
        let record = serde_json::json!({
            "count": self.dropped_count,
            "oldest": std::mem::take(&mut self.dropped),
        });
        self.dropped_count = 0;
        Some(record)
    }

    pub fn names(&self) -> Vec<String> {
        self.queue.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Everything still queued, as `[{"name":…,"data":…}]`, emptying the queue.
    pub fn drain_all(&mut self) -> serde_json::Value {
        serde_json::Value::Array(
            self.queue
                .drain(..)
                .map(|(name, data)| serde_json::json!({ "name": name, "data": data }))
                .collect(),
        )
    }
}

/// Pause before the next reconnect attempt: doubles from [`Backoff::FIRST`] up to
/// [`Backoff::MAX`], so a daemon back after a restart is found within tens of
/// milliseconds (the restarted daemon adopts the agent on that sign of life, without
/// reaching into its container first) and a long outage costs one attempt every few
/// seconds (a refused connect() each: nothing for the host).
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(25);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_order_and_delivers_everything_within_capacity() {
        let mut o = Outbox::new(3);
        o.push("a", json!(1));
        o.push("b", json!(2));
        assert_eq!(o.names(), ["a", "b"]);
        assert_eq!(o.front(), Some(("a", &json!(1))));
        o.pop_front();
        assert_eq!(o.names(), ["b"]);
        assert!(o.take_dropped().is_none());
    }

    #[test]
    fn past_capacity_the_oldest_are_dropped_and_reported_once() {
        let mut o = Outbox::new(2);
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            o.push(n, json!(i));
        }
        assert_eq!(o.names(), ["c", "d"]);
        let rec = o.take_dropped().expect("a record of the drop");
        assert_eq!(rec, json!({ "count": 2, "oldest": ["a", "b"] }));
        assert!(o.take_dropped().is_none(), "reported once");
        o.push_front("events_dropped", rec);
        assert_eq!(o.names(), ["events_dropped", "c", "d"]);
    }

    #[test]
    fn the_dropped_record_names_a_bounded_number() {
        let mut o = Outbox::new(1);
        for i in 0..100 {
            o.push("e", json!(i));
        }
        let rec = o.take_dropped().unwrap();
        assert_eq!(rec["count"], 99);
        assert_eq!(rec["oldest"].as_array().unwrap().len(), DROPPED_NAMES);
    }

    #[test]
    fn drain_all_empties_and_names_each_event() {
        let mut o = Outbox::new(4);
        o.push("command_exited", json!({ "code": 3 }));
        assert_eq!(
            o.drain_all(),
            json!([{ "name": "command_exited", "data": { "code": 3 } }])
        );
        assert!(o.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new();
        let pauses: Vec<_> = (0..10).map(|_| b.next_pause()).collect();
        assert_eq!(pauses[0], Backoff::FIRST);
        assert_eq!(pauses[1], Backoff::FIRST * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), Backoff::MAX);
    }
}
