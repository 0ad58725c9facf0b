//! The proxy's journal entries, bounded: up to [`BURST`] connections per [`WINDOW`] are
//! journaled one by one; past that they are counted and one `egress_summary` per window
//! says how many, so one busy agent cannot flood the host's journal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::journal::{emit, fields, Event};
use crate::spec::AgentName;

pub const WINDOW: Duration = Duration::from_secs(10);
pub const BURST: u32 = 50;

/// One connection's outcome, as journaled.
pub struct Outcome<'a> {
    pub host: &'a str,
    pub port: u16,
    /// `Ok((bytes out, bytes in))` for an allowed connection, `Err(reason)` for a refusal.
    pub result: Result<(u64, u64), &'a str>,
    pub duration: Duration,
}

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    written: u32,
    allowed: u64,
    refused: u64,
}

pub struct Events {
    agent: AgentName,
    unit: String,
    window: Mutex<Window>,
}

impl Events {
    pub fn new(agent: AgentName) -> Self {
        let unit = crate::plan::egress::proxy_unit_name(&agent);
        Self {
            agent,
            unit,
            window: Mutex::new(Window::default()),
        }
    }

    pub fn record(&self, o: Outcome<'_>) {
        let now = Instant::now();
        {
            let mut w = self.window.lock().expect("events lock");
            if w.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
                self.summary(&mut w);
                *w = Window {
                    start: Some(now),
                    ..Window::default()
                };
            }
            if w.written >= BURST {
                match o.result {
                    Ok(_) => w.allowed += 1,
                    Err(_) => w.refused += 1,
                }
                return;
            }
            w.written += 1;
        }
        let mut fields = vec![
            (fields::DEST_HOST, crate::spec::one_line(o.host)),
            (fields::DEST_PORT, o.port.to_string()),
            (fields::DURATION_MS, o.duration.as_millis().to_string()),
        ];
        let agent = &self.agent;
        match o.result {
            Ok((out, inn)) => {
                fields.push((fields::BYTES_OUT, out.to_string()));
                fields.push((fields::BYTES_IN, inn.to_string()));
                emit(
                    Event::EgressAllowed,
                    Some(agent),
                    Some(&self.unit),
                    &fields,
                    &format!(
                        "agent {agent}: egress to {}:{} allowed ({out} bytes out, {inn} in, {} ms)",
                        fields[0].1,
                        o.port,
                        o.duration.as_millis()
                    ),
                );
            }
            Err(reason) => {
                fields.push((fields::REASON, reason.to_owned()));
                emit(
                    Event::EgressRefused,
                    Some(agent),
                    Some(&self.unit),
                    &fields,
                    &format!(
                        "agent {agent}: egress to {}:{} refused: {reason}",
                        fields[0].1, o.port
                    ),
                );
            }
        }
    }

    /// Writes the summary of a window that had more than it journaled; called as a new
    /// window starts, and by a timer so a burst that stops is still counted.
    pub fn flush(&self) {
        let mut w = self.window.lock().expect("events lock");
        if w.start.is_some_and(|s| s.elapsed() >= WINDOW) {
            self.summary(&mut w);
            *w = Window::default();
        }
    }

    fn summary(&self, w: &mut Window) {
        if w.allowed == 0 && w.refused == 0 {
            return;
        }
        let agent = &self.agent;
        emit(
            Event::EgressSummary,
            Some(agent),
            Some(&self.unit),
            &[
                (fields::ALLOWED, w.allowed.to_string()),
                (fields::REFUSED, w.refused.to_string()),
            ],
            &format!(
                "agent {agent}: {} allowed and {} refused egress connections not journaled one by one (more than {BURST} in {}s)",
                w.allowed,
                w.refused,
                WINDOW.as_secs()
            ),
        );
        w.allowed = 0;
        w.refused = 0;
    }
}
