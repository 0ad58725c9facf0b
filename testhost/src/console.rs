//! The container's console log, made readable for an error message.

use std::fs;
use std::path::Path;

/// The console log as readable lines. Even with TERM=dumb, systemd redraws a "Job ... running"
/// progress line twice a second with cursor escapes; a stuck boot would fill the whole tail
/// with those, so only the last of each run of them is kept.
/// The last `lines` lines of the console log in `state`, for an error message.
pub(crate) fn console_tail(state: &Path, lines: usize) -> String {
    let log = fs::read(state.join("console.log")).unwrap_or_default();
    let all = console_lines(&String::from_utf8_lossy(&log));
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- tail of {}/console.log ---\n{tail}", state.display())
}

pub(crate) fn console_lines(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last_was_progress = false;
    for raw in log.lines() {
        let line = strip_escapes(raw);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let progress = line.len() > 8
            && line.starts_with('[')
            && line.as_bytes()[7] == b']'
            && line.as_bytes()[1..7]
                .iter()
                .all(|&b| b == b' ' || b == b'*');
        if progress && last_was_progress {
            out.pop();
        }
        out.push(line.to_string());
        last_was_progress = progress;
    }
    out
}

/// Removes `\r` and ANSI escape sequences (`ESC [ ... final` and two-byte `ESC x`).
pub(crate) fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                if chars.next() == Some('[') {
                    // parameters and intermediates, then one final byte in @..~
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

impl crate::TestHost {
    /// The host's journal dies with it: a failed test prints the daemon's last lines
    /// before the host is torn down, so its story is in the test's output (and CI's).
    pub(crate) fn print_daemon_journal(&self) {
        let out = self.run(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-monotonic",
            "-n",
            "300",
            "-u",
            "hive-c0re.service",
            "-p",
            "info",
        ]);
        eprintln!(
            "--- test host {}: last lines of hive-c0re.service ---\n{}",
            self.name(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_log_cleanup() {
        let log = "Welcome to \x1b[1mDebian\x1b[0m!\r\r\n\r\n\
                   [*     ] Job x.service/start running (2s / 1min 30s)\r\r\n\
                   \x1bM\r\r\x1b[K[**    ] Job x.service/start running (3s / 1min 30s)\r\r\n\
                   [  OK  ] Started y.service.\r\r\n";
        assert_eq!(
            console_lines(log),
            [
                "Welcome to Debian!",
                "[**    ] Job x.service/start running (3s / 1min 30s)",
                "[  OK  ] Started y.service.",
            ]
        );
    }
}
