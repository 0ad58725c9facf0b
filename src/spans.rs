//! Where the daemon's start-up time goes: named spans, logged once as one line, so a slow
//! restart can be read from the journal (benches/scale.rs prints them).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive spans from a start: each `mark` closes the span since the previous one.
pub struct Spans {
    start: Instant,
    last: Instant,
    parts: Vec<(&'static str, Duration)>,
}

impl Spans {
    pub fn start() -> Self {
        let now = Instant::now();
        Spans {
            start: now,
            last: now,
            parts: Vec::new(),
        }
    }

    pub fn mark(&mut self, what: &'static str) {
        let now = Instant::now();
        self.parts.push((what, now - self.last));
        self.last = now;
    }

    pub fn total(&self) -> Duration {
        self.last - self.start
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Spans {
    /// `12.3 ms: connect 1.0, watch 2.0, …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms:", ms(self.total()))?;
        for (i, (what, d)) in self.parts.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{what} {}", ms(*d))?;
        }
        Ok(())
    }
}

/// Time summed over many concurrent tasks, per named phase (the startup adoption of every
/// agent): shows which phase the agents spent their time in, not wall time.
#[derive(Default)]
pub struct Summed(Mutex<Vec<(&'static str, Duration, usize)>>);

impl Summed {
    pub fn add(&self, what: &'static str, d: Duration) {
        let mut parts = self.0.lock().expect("summed spans");
        match parts.iter_mut().find(|p| p.0 == what) {
            Some(p) => {
                p.1 += d;
                p.2 += 1;
            }
            None => parts.push((what, d, 1)),
        }
    }

    /// Times `f` as `what`.
    pub async fn time<T>(&self, what: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let t = Instant::now();
        let out = f.await;
        self.add(what, t.elapsed());
        out
    }
}

impl fmt::Display for Summed {
    /// `facts 120.0 ms/100, harness 800.2 ms/100`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.0.lock().expect("summed spans");
        for (i, (what, d, n)) in parts.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{what} {} ms/{n}", ms(*d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_one_line() {
        let mut s = Spans::start();
        s.mark("connect");
        s.mark("name");
        let line = s.to_string();
        assert!(
            line.contains(" ms: connect ") && line.contains(", name "),
            "{line}"
        );
        let sum = Summed::default();
        sum.add("facts", Duration::from_millis(2));
        sum.add("facts", Duration::from_millis(3));
        sum.add("harness", Duration::from_millis(1));
        assert_eq!(sum.to_string(), "facts 5.0 ms/2, harness 1.0 ms/1");
    }
}
