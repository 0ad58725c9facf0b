//! The turn loop (`hive-harness --turns`): the agent's command runs once per turn — at
//! start, and on each wake (a decision on one of its approvals, an admin's `hivectl
//! tell`) — with why it was woken on stdin and in its environment. Turns never overlap:
//! wakes that come during a turn wait, coalesced into the next one, in a bounded queue.
//! A turn that outlives its timeout is killed (its whole process group) and recorded as
//! timed out; the loop goes on. See docs/agent-side.md.

use crate::journal::fields;
use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{json, Value};

use super::{claude, EventLog, Link};

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

    /// Puts a turn's wakes back in front, to run again (a claude session that could not
    /// be resumed runs them in a new one).
    pub fn requeue(&mut self, input: TurnInput) {
        for wake in input.wakes.into_iter().rev() {
            self.queue.push_front(wake);
        }
        while self.queue.len() > MAX_WAKES {
            self.queue.pop_back();
            self.dropped += 1;
        }
        self.dropped += input.dropped;
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
            (fields::TURN, self.turn.to_string()),
            (fields::ENV_WAKE_REASON, self.reasons()),
            (fields::ENV_WAKE_MESSAGE, self.message()),
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
    /// For a claude turn: what it was given, whether it resumed a session, and the task
    /// reading its output.
    pub claude: Option<ClaudeRun>,
}

pub struct ClaudeRun {
    pub input: TurnInput,
    pub resumed: bool,
    pub output: tokio::task::JoinHandle<claude::Outcome>,
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
    write_aside(&mut child, input.stdin());
    let now = tokio::time::Instant::now();
    Ok(Running {
        child,
        turn: input.turn,
        started: now,
        deadline: now + timeout,
        reasons: input.reasons(),
        claude: None,
    })
}

/// Starts one claude turn: the prompt on stdin, its stream-json output read aside.
pub fn spawn_claude(
    c: &ClaudeTurns,
    input: &TurnInput,
    timeout: Duration,
) -> std::io::Result<Running> {
    if claude::wants_new_session(input) {
        claude::forget_session(&c.opts.session_file);
    }
    let resume = claude::saved_session(&c.opts.session_file);
    let argv = claude::argv(&c.opts, &c.agent, resume.as_deref());
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(input.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if std::path::Path::new("/state").is_dir() {
        // One working directory for every turn: claude files its sessions by it.
        cmd.current_dir("/state");
    }
    // claude keeps its login, settings and sessions under its config dir: the agent's
    // own credentials dir (/root/.claude, never shared), unless the spec says otherwise.
    // A system service has no HOME of its own.
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", "/root");
    }
    if std::env::var_os("CLAUDE_CONFIG_DIR").is_none() {
        cmd.env("CLAUDE_CONFIG_DIR", "/root/.claude");
    }
    // Read by the hive's MCP server that claude starts: how long a permission question
    // waits for an admin.
    cmd.env(
        fields::ENV_PERMISSION_TIMEOUT,
        c.opts.permission_timeout.to_string(),
    );
    if let Some(key) = c.api_key() {
        cmd.env("ANTHROPIC_API_KEY", key);
    }
    let mut child = cmd.spawn()?;
    write_aside(&mut child, claude::prompt(input).into_bytes());
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let turn = input.turn;
    let output = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut out = tokio::io::BufReader::new(stdout).lines();
        let mut err = tokio::io::BufReader::new(stderr).lines();
        let mut outcome = claude::Outcome::default();
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                line = out.next_line(), if out_open => match line {
                    Ok(Some(line)) => {
                        if let Some(said) = outcome.read_line(&line) {
                            log::info!("turn {turn}: {said}");
                        }
                    }
                    _ => out_open = false,
                },
                line = err.next_line(), if err_open => match line {
                    Ok(Some(line)) => {
                        outcome.read_err_line(&line);
                        log::warn!("turn {turn}: claude: {}", crate::spec::one_line(&line));
                    }
                    _ => err_open = false,
                },
            }
        }
        outcome
    });
    let now = tokio::time::Instant::now();
    Ok(Running {
        child,
        turn: input.turn,
        started: now,
        deadline: now + timeout,
        reasons: input.reasons(),
        claude: Some(ClaudeRun {
            input: input.clone(),
            resumed: resume.is_some(),
            output,
        }),
    })
}

/// A Claude Code agent's side of the turn loop: its options and what it spent today.
pub struct ClaudeTurns {
    pub opts: claude::Options,
    pub agent: String,
    pub spend: claude::Spend,
}

impl ClaudeTurns {
    fn api_key(&self) -> Option<String> {
        let name = self.opts.api_key_credential.as_ref()?;
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        match std::fs::read_to_string(std::path::Path::new(&dir).join(name)) {
            Ok(key) => Some(key.trim().to_owned()),
            Err(e) => {
                log::warn!("reading the API key credential {name}: {e}");
                None
            }
        }
    }

    /// A new day (UTC) starts with nothing spent.
    fn roll_day(&mut self) {
        let today = claude::today();
        if self.spend.day != today {
            self.spend = claude::Spend {
                day: today,
                ..Default::default()
            };
        }
    }

    /// Whether today's spend has reached the budget.
    fn over_budget(&mut self) -> bool {
        self.roll_day();
        self.opts
            .budget_usd
            .is_some_and(|budget| self.spend.usd >= budget)
    }

    fn add_spend(&mut self, usd: f64) {
        self.roll_day();
        self.spend.usd += usd;
        self.spend.save(&self.opts.spend_file);
    }
}

/// Writes a turn's input to its stdin aside: a command that never reads its stdin must
/// not hold up the loop (the write ends with the turn, on a broken pipe).
fn write_aside(child: &mut tokio::process::Child, data: Vec<u8>) {
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&data).await;
        });
    }
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
    pub claude: Option<ClaudeTurns>,
}

impl TurnLoop {
    /// Starts a turn if none runs and a wake waits.
    pub(super) async fn start_next(&mut self, command: &[String], log: &EventLog, link: &mut Link) {
        if self.running.is_some() || self.wakes.is_empty() {
            return;
        }
        if let Some(c) = self.claude.as_mut() {
            if c.over_budget() {
                // The wakes wait, not lost: for the next day, or a raised budget (a spec
                // change, which restarts the harness with it).
                if !c.spend.announced {
                    c.spend.announced = true;
                    c.spend.save(&c.opts.spend_file);
                    let data = serde_json::json!({
                        "day": c.spend.day,
                        "spent_usd": c.spend.usd,
                        "budget_usd": c.opts.budget_usd,
                        "waiting_wakes": self.wakes.queue.len(),
                    });
                    log::warn!(
                        "over budget: spent ${:.4} of ${:.4} today; wakes wait for tomorrow (UTC) or a raised budget",
                        c.spend.usd,
                        c.opts.budget_usd.unwrap_or(0.0)
                    );
                    log.record("over_budget", &data);
                    link.send_event(log, "over_budget", data).await;
                }
                return;
            }
        }
        let input = self.wakes.take(self.next);
        self.next += 1;
        let data = serde_json::json!({
            "turn": input.turn,
            "reason": input.reasons(),
            "wakes": input.wakes.len(),
            "dropped": input.dropped,
        });
        let started = match &self.claude {
            Some(c) => spawn_claude(c, &input, self.timeout),
            None => spawn(command, &input, self.timeout),
        };
        match started {
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
        let mut data = serde_json::json!({
            "turn": running.turn,
            "reason": running.reasons,
            "code": code,
            "secs": (secs * 1000.0).round() / 1000.0,
            "timed_out": timed_out,
        });
        if let Some(run) = running.claude {
            // The reader ends at claude's end of output; bounded in case something it
            // started holds the pipe.
            let outcome = match tokio::time::timeout(Duration::from_secs(2), run.output).await {
                Ok(Ok(outcome)) => outcome,
                _ => claude::Outcome::default(),
            };
            let c = self
                .claude
                .as_mut()
                .expect("a claude turn runs in a claude loop");
            if let (Some(extra), Some(obj)) = (outcome.fields().as_object(), data.as_object_mut()) {
                obj.extend(extra.clone());
            }
            if let Some(cost) = outcome.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
                c.add_spend(cost);
            }
            if run.resumed && outcome.no_such_session {
                // Its wakes run again at once, in a new session: nothing is lost.
                claude::forget_session(&c.opts.session_file);
                data["session_reset"] = serde_json::Value::Bool(true);
                log::warn!(
                    "turn {}: the claude session could not be resumed; its wakes run again in a new session",
                    running.turn
                );
                self.wakes.requeue(run.input);
            } else if let Some(id) = &outcome.session_id {
                claude::save_session(&c.opts.session_file, id);
            }
        }
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
