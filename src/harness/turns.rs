//! The turn loop (`hive-harness --turns`): the agent's command runs once per turn — at
//! start, and on each wake (a decision on one of its approvals, an admin's `hivectl
//! tell`) — with why it was woken on stdin and in its environment. Turns never overlap:
//! wakes that come during a turn wait, coalesced into the next one, in a bounded queue.
//! A turn that outlives its timeout is killed (its whole process group) and recorded as
//! timed out; the loop goes on. See docs/agent-side.md.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{json, Value};

use super::{EventLog, Link};

/// Wakes waiting for the next turn. Past this the oldest are dropped and counted (the
/// next turn's input says how many): a flood of wakes costs one turn, not one each.
pub const MAX_WAKES: usize = 64;

/// Why a turn runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Wake {
    /// `start`, `approval_decided`, `restart_pending` or `tell`.
    pub reason: String,
    /// For `tell`, the admin's message; for a decision, its details as JSON text.
    pub message: String,
    pub data: Value,
}

/// The wakes waiting for the next turn, oldest first.
#[derive(Debug, Default)]
pub struct Wakes {
    queue: VecDeque<Wake>,
    dropped: u64,
}

impl Wakes {
    pub fn push(&mut self, wake: Wake) {
        if self.queue.len() == MAX_WAKES {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(wake);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Everything waiting, as the input of one turn; empties the queue.
    pub fn take(&mut self, turn: u64) -> TurnInput {
        let wakes: Vec<Wake> = self.queue.drain(..).collect();
        let input = TurnInput {
            turn,
            dropped: self.dropped,
            wakes,
        };
        self.dropped = 0;
        input
    }
}

/// What one turn is given.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnInput {
    pub turn: u64,
    /// Wakes dropped because more than [`MAX_WAKES`] came during one turn.
    pub dropped: u64,
    pub wakes: Vec<Wake>,
}

impl TurnInput {
    /// The reasons, in order, each once: `HIVE_WAKE_REASON`.
    pub fn reasons(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for w in &self.wakes {
            if !seen.contains(&w.reason.as_str()) {
                seen.push(&w.reason);
            }
        }
        seen.join(",")
    }

    /// The last wake's message: `HIVE_WAKE_MESSAGE`.
    pub fn message(&self) -> String {
        self.wakes
            .last()
            .map(|w| w.message.clone())
            .unwrap_or_default()
    }

    /// The command's stdin: one JSON document, then end of file.
    pub fn stdin(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(&json!({
            "turn": self.turn,
            "reason": self.reasons(),
            "dropped": self.dropped,
            "wakes": self.wakes.iter().map(|w| json!({
                "reason": w.reason,
                "message": w.message,
                "data": w.data,
            })).collect::<Vec<_>>(),
        }))
        .expect("serializes");
        out.push(b'\n');
        out
    }

    /// The environment the turn adds.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HIVE_TURN", self.turn.to_string()),
            ("HIVE_WAKE_REASON", self.reasons()),
            ("HIVE_WAKE_MESSAGE", self.message()),
        ]
    }
}

/// One turn running.
pub struct Running {
    pub child: tokio::process::Child,
    pub turn: u64,
    pub started: tokio::time::Instant,
    pub deadline: tokio::time::Instant,
    pub reasons: String,
}

/// Starts one turn of `command` with `input`, in a process group of its own so that a
/// timeout ends everything it started.
pub fn spawn(command: &[String], input: &TurnInput, timeout: Duration) -> std::io::Result<Running> {
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("the turn loop needs a command"))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(input.env())
        .stdin(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let data = input.stdin();
        // Written aside: a command that never reads its stdin must not hold up the loop
        // (the write ends with the turn, on a broken pipe).
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&data).await;
        });
    }
    let now = tokio::time::Instant::now();
    Ok(Running {
        child,
        turn: input.turn,
        started: now,
        deadline: now + timeout,
        reasons: input.reasons(),
    })
}

/// Ends a turn past its timeout: SIGKILL to its whole process group, then reaps it.
pub async fn kill(running: &mut Running) {
    if let Some(pid) = running
        .child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = running.child.kill().await;
}

/// The turn loop's state in the harness loop: the wakes waiting and the turn running.
pub(super) struct TurnLoop {
    pub timeout: Duration,
    pub wakes: Wakes,
    pub next: u64,
    pub running: Option<Running>,
}

impl TurnLoop {
    /// Starts a turn if none runs and a wake waits.
    pub(super) async fn start_next(&mut self, command: &[String], log: &EventLog, link: &mut Link) {
        if self.running.is_some() || self.wakes.is_empty() {
            return;
        }
        let input = self.wakes.take(self.next);
        self.next += 1;
        let data = serde_json::json!({
            "turn": input.turn,
            "reason": input.reasons(),
            "wakes": input.wakes.len(),
            "dropped": input.dropped,
        });
        match spawn(command, &input, self.timeout) {
            Ok(running) => {
                log.record("turn_started", &data);
                link.send_event(log, "turn_started", data).await;
                self.running = Some(running);
            }
            Err(e) => {
                // Recorded as a turn that failed at once; the next wake tries again.
                log::error!("turn {}: starting the agent's command: {e}", input.turn);
                let data = serde_json::json!({
                    "turn": input.turn,
                    "reason": input.reasons(),
                    "code": 127,
                    "secs": 0.0,
                    "timed_out": false,
                    "error": crate::spec::one_line(&e.to_string()),
                });
                log.record("turn_done", &data);
                link.send_event(log, "turn_done", data).await;
            }
        }
    }

    /// Records the end of the running turn.
    pub(super) async fn done(
        &mut self,
        code: i32,
        timed_out: bool,
        log: &EventLog,
        link: &mut Link,
    ) {
        let Some(running) = self.running.take() else {
            return;
        };
        let secs = running.started.elapsed().as_secs_f64();
        let data = serde_json::json!({
            "turn": running.turn,
            "reason": running.reasons,
            "code": code,
            "secs": (secs * 1000.0).round() / 1000.0,
            "timed_out": timed_out,
        });
        log.record("turn_done", &data);
        link.send_event(log, "turn_done", data).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake(reason: &str, message: &str) -> Wake {
        Wake {
            reason: reason.into(),
            message: message.into(),
            data: Value::Null,
        }
    }

    #[test]
    fn wakes_during_a_turn_are_coalesced_into_one() {
        let mut w = Wakes::default();
        w.push(wake("tell", "one"));
        w.push(wake("approval_decided", ""));
        w.push(wake("tell", "two"));
        let input = w.take(2);
        assert!(w.is_empty());
        assert_eq!(input.wakes.len(), 3);
        assert_eq!(input.reasons(), "tell,approval_decided");
        assert_eq!(input.message(), "two");
        let doc: Value = serde_json::from_slice(&input.stdin()).unwrap();
        assert_eq!(doc["turn"], 2);
        assert_eq!(doc["wakes"][0]["message"], "one");
        assert_eq!(
            input.env()[1],
            ("HIVE_WAKE_REASON", "tell,approval_decided".into())
        );
    }

    #[test]
    fn a_flood_of_wakes_is_bounded_and_counted() {
        let mut w = Wakes::default();
        for i in 0..MAX_WAKES + 10 {
            w.push(wake("tell", &i.to_string()));
        }
        let input = w.take(1);
        assert_eq!(input.wakes.len(), MAX_WAKES);
        assert_eq!(input.dropped, 10);
        assert_eq!(input.wakes[0].message, "10", "the oldest went");
        assert_eq!(w.take(2).dropped, 0);
    }
}
