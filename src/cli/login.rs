//! `hivectl login NAME [-- CLAUDE_ARGS]`: claude's own login flow (`claude auth login`)
//! inside a Claude Code agent's container, on the admin's terminal. hive-c0re starts it
//! as `hive-login.service` in the container on a terminal machined allocates there and
//! hands back the terminal's master; this relays it to and from the admin's terminal.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{BadInput, Target};
use crate::spec::AgentName;

/// `^]`, pressed three times within a second, leaves the session (as `machinectl shell`).
const ESCAPE: u8 = 0x1d;
const ESCAPE_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Agent name (a Claude Code agent, created with --claude)
    pub name: String,
    /// What claude runs instead of `auth login`, e.g. `-- auth status` or
    /// `-- auth login --console`
    #[arg(last = true, value_name = "CLAUDE_ARGS")]
    pub args: Vec<String>,
}

pub async fn run(t: &Target, a: LoginArgs) -> Result<()> {
    let n = AgentName::parse(&a.name).map_err(|e| BadInput(e.to_string()))?;
    let term = std::env::var("TERM").unwrap_or_default();
    // Checked here too, so bad input is refused before the bus is touched.
    crate::plan::login::LoginRequest::parse(&term, &a.args)
        .map_err(|e| BadInput(format!("agent {n}: {e}")))?;
    let manager = t.manager().await?;
    let args: Vec<&str> = a.args.iter().map(String::as_str).collect();
    let master: OwnedFd = manager.login_agent(n.as_str(), &term, &args).await?.into();
    let interactive = rustix::termios::isatty(std::io::stdin());
    if interactive {
        eprintln!(
            "Connected to claude in agent {n} (hive-login.service). Press ^] three times within 1s to leave."
        );
    }
    let _raw = interactive.then(RawTerminal::enter).transpose()?;
    copy_window_size(&master);
    let winch = tokio::spawn(follow_window_size(
        master.try_clone().context("duplicating the terminal")?,
    ));
    let input = master.try_clone().context("duplicating the terminal")?;
    // Admin → claude on its own thread: a read of stdin cannot be cancelled, and the
    // process ends when the session does.
    std::thread::spawn(move || relay_input(input));
    let out = tokio::task::spawn_blocking(move || relay_output(master)).await?;
    winch.abort();
    drop(_raw);
    if interactive {
        eprintln!("\nThe session in agent {n} ended.");
    }
    out
}

/// claude's terminal → the admin's, until claude's side is closed (EIO: no process holds
/// the terminal any more).
fn relay_output(master: OwnedFd) -> Result<()> {
    let mut master = std::fs::File::from(master);
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match master.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                return Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading from the agent's terminal"),
        }
    }
}

/// The admin's keys → claude's terminal. `^]` three times within a second ends hivectl
/// (and so the session: claude gets a hangup when the terminal's master closes).
fn relay_input(master: OwnedFd) {
    let mut master = std::fs::File::from(master);
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 4096];
    let mut escapes: Vec<Instant> = Vec::new();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == ESCAPE {
                let now = Instant::now();
                escapes.retain(|t| now.duration_since(*t) < ESCAPE_WITHIN);
                escapes.push(now);
                if escapes.len() >= 3 {
                    RawTerminal::restore_now();
                    eprintln!("\nLeft the session.");
                    std::process::exit(0);
                }
            }
        }
        if master.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn copy_window_size(master: &OwnedFd) {
    if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
        let _ = rustix::termios::tcsetwinsize(master.as_fd(), size);
    }
}

async fn follow_window_size(master: OwnedFd) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        copy_window_size(&master);
    }
}

/// The admin's terminal in raw mode while the session lasts, restored after.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

static SAVED: std::sync::Mutex<Option<rustix::termios::Termios>> = std::sync::Mutex::new(None);

impl RawTerminal {
    fn enter() -> Result<Self> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).context("setting the terminal raw")?;
        *SAVED.lock().expect("terminal lock") = Some(saved.clone());
        Ok(Self { saved })
    }

    /// For an exit that skips destructors (the escape).
    fn restore_now() {
        if let Some(saved) = SAVED.lock().expect("terminal lock").take() {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                &saved,
            );
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
        SAVED.lock().expect("terminal lock").take();
    }
}
