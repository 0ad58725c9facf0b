//! Logging setup shared by the binaries: structured journald entries when journald is
//! there, plain stderr lines otherwise (a developer's terminal, a test).

use std::path::Path;

use log::{LevelFilter, Log, Metadata, Record};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Installs the logger once; `identifier` becomes SYSLOG_IDENTIFIER.
pub fn init(identifier: &str, level: LevelFilter) {
    let journal = Path::new(JOURNAL_SOCKET).exists()
        && systemd_journal_logger::JournalLog::new()
            .map(|j| j.with_syslog_identifier(identifier.to_owned()))
            .and_then(|j| j.install().map_err(std::io::Error::other))
            .is_ok();
    if !journal {
        let _ = log::set_boxed_logger(Box::new(Stderr(identifier.to_owned())));
    }
    log::set_max_level(level);
}

struct Stderr(String);

impl Log for Stderr {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        eprintln!("{}: {}", self.0, record.args());
    }

    fn flush(&self) {}
}
