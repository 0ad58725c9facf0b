//! Rate limits on what an agent sends: token buckets shared by all of one agent's
//! connections (so 16 connections get no more than one), one for events and one for
//! approval requests. A message over the rate is not refused: the daemon waits before it
//! handles it and reads nothing more from that connection meanwhile, so the agent is
//! slowed down by its own socket buffer, nothing is lost, and the daemon holds no more
//! than one message per connection. Pings are never throttled: the harness's watchdog
//! depends on them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a message is, for its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Event,
    Request,
}

/// A rate: `per_sec` on average, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

/// Events: each is one journald entry. 100 a second, bursts of 200: far more than a
/// harness reports (a few per turn), far less than would crowd the journal.
pub const EVENTS: Rate = Rate {
    per_sec: 100.0,
    burst: 200.0,
};

/// Events of all agents together: the hive's budget in the journal. 200 a second, bursts of
/// 400, so agents' events add up to at most 6,000 per 30 s whatever their number — well
/// within what hive-c0re.service may log (its `LogRateLimitBurst=`, units/), which leaves
/// the daemon's own lifecycle, crash and approval records room beside them. An agent's
/// event waits for a token of its own and one of the hive's: a flood slows the flooders,
/// it never silences the daemon.
pub const HIVE_EVENTS: Rate = Rate {
    per_sec: 200.0,
    burst: 400.0,
};

/// Approval requests: each is checked against the host and synced to the store. 10 a
/// second, bursts of 32 (an agent's whole pending allowance at once).
pub const REQUESTS: Rate = Rate {
    per_sec: 10.0,
    burst: 32.0,
};

/// How often being throttled is journaled, at most, per agent: once when it starts, not
/// per message.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Bucket {
    rate: Rate,
    /// May go below zero: messages waiting their turn have taken their token already.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes a token; returns how long to wait until it is due (zero: at once).
    fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + elapsed * self.rate.per_sec).min(self.rate.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.per_sec)
        }
    }
}

/// The hive-wide bucket of agents' events: one per daemon process, shared by every
/// agent's connections (see [`HIVE_EVENTS`]).
static HIVE: std::sync::LazyLock<Mutex<Bucket>> =
    std::sync::LazyLock::new(|| Mutex::new(Bucket::new(HIVE_EVENTS, Instant::now())));

/// One agent's buckets.
#[derive(Debug)]
pub struct Throttle {
    events: Mutex<Bucket>,
    requests: Mutex<Bucket>,
    announced: Mutex<Option<Instant>>,
    /// The hive's events bucket, shared with every other agent.
    hive: Option<&'static Mutex<Bucket>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            hive: Some(&HIVE),
            ..Self::new(EVENTS, REQUESTS, Instant::now())
        }
    }
}

impl Throttle {
    pub fn new(events: Rate, requests: Rate, now: Instant) -> Throttle {
        Throttle {
            events: Mutex::new(Bucket::new(events, now)),
            requests: Mutex::new(Bucket::new(requests, now)),
            announced: Mutex::new(None),
            hive: None,
        }
    }

    /// How long the message must wait, and whether this is the moment to journal that
    /// the agent is throttled (the first wait, then at most every [`ANNOUNCE_EVERY`]).
    pub fn take(&self, kind: Kind, now: Instant) -> (Duration, bool) {
        let bucket = match kind {
            Kind::Event => &self.events,
            Kind::Request => &self.requests,
        };
        let mut wait = bucket.lock().expect("throttle lock").take(now);
        if let (Kind::Event, Some(hive)) = (kind, self.hive) {
            wait = wait.max(hive.lock().expect("throttle lock").take(now));
        }
        if wait.is_zero() {
            return (wait, false);
        }
        let mut announced = self.announced.lock().expect("throttle lock");
        let due = announced.is_none_or(|at| now.saturating_duration_since(at) >= ANNOUNCE_EVERY);
        if due {
            *announced = Some(now);
        }
        (wait, due)
    }

    /// The rate of `kind`, for messages.
    pub fn rate(&self, kind: Kind) -> Rate {
        match kind {
            Kind::Event => self.events.lock().expect("throttle lock").rate,
            Kind::Request => self.requests.lock().expect("throttle lock").rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate {
        per_sec: 10.0,
        burst: 3.0,
    };

    #[test]
    fn a_burst_passes_then_messages_wait_their_turn() {
        let t0 = Instant::now();
        let t = Throttle::new(R, R, t0);
        for _ in 0..3 {
            assert_eq!(t.take(Kind::Event, t0), (Duration::ZERO, false));
        }
        let (w1, announce) = t.take(Kind::Event, t0);
        assert_eq!((w1, announce), (Duration::from_millis(100), true));
        let (w2, announce) = t.take(Kind::Event, t0);
        assert_eq!((w2, announce), (Duration::from_millis(200), false), "once");
        // Requests have their own bucket.
        assert_eq!(t.take(Kind::Request, t0).0, Duration::ZERO);
        // After a quiet second the burst is back, and no more than the burst.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(t.take(Kind::Event, t1).0, Duration::ZERO);
        }
        let (w, announce) = t.take(Kind::Event, t1);
        assert!(!w.is_zero());
        assert!(!announce, "within a minute of the last announcement");
        let t2 = t1 + ANNOUNCE_EVERY;
        for _ in 0..3 {
            t.take(Kind::Event, t2);
        }
        assert!(t.take(Kind::Event, t2).1, "announced again after a minute");
    }

    #[test]
    fn the_hive_wide_budget_holds_whatever_the_number_of_agents() {
        let mut hive = Bucket::new(HIVE_EVENTS, Instant::now());
        let t0 = Instant::now();
        // 20 agents within their own 100/s send 2,000 events at once: the hive's bucket
        // spreads them over (2000 - burst) / 200 s.
        let mut last = Duration::ZERO;
        for _ in 0..2000 {
            last = hive.take(t0);
        }
        assert!((last.as_secs_f64() - 8.0).abs() < 1e-6, "{last:?}");
    }

    #[test]
    fn the_sustained_rate_is_the_limit() {
        let t0 = Instant::now();
        let t = Throttle::new(R, R, t0);
        // 1,000 messages at once: the last one waits (1000 - burst) / rate.
        let mut last = Duration::ZERO;
        for _ in 0..1000 {
            last = t.take(Kind::Request, t0).0;
        }
        assert!((last.as_secs_f64() - 99.7).abs() < 1e-6, "{last:?}");
    }
}
