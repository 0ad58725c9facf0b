//! Opening the store, and keeping it writable: creating the file and its dirs with the
//! right modes, the schema up to date, WAL on, and a connection SQLite opened read-only
//! replaced once the cause is gone.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{schema, Store, BUSY_TIMEOUT};

impl Store {
    /// Opens the store at `path`, creating it (mode 0600, parent dirs 0700) if missing,
    /// and brings its schema up to date. A store written by a newer hyperhive is refused
    /// rather than guessed at.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        Self::open_impl(path).with_context(|| format!("opening store {}", path.display()))
    }

    fn open_impl(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Production has systemd's StateDirectory= make it; this is the fallback for
            // other roots, private because approvals may carry an agent's secrets.
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        // Created here rather than by SQLite, which would use 0644 minus the umask; the
        // -wal and -shm files copy this file's mode.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).context("creating the file"),
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Set first: switching to WAL needs a lock another opener may hold.
        conn.busy_timeout(BUSY_TIMEOUT)
            .context("setting busy_timeout")?;
        // WAL lets `hivectl approvals` read while the daemon writes.
        let mode = set_wal(&conn).context("setting journal_mode=WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("journal_mode=WAL refused (still {mode}); is the file on a filesystem without shared memory?");
        }
        // Pinned rather than left to the build's default: an approval or a decision
        // reported as recorded must survive a power cut, and writes are few (admins decide
        // by hand; agents' requests are capped and rate-limited), so every commit syncs.
        conn.pragma_update(None, "synchronous", "FULL")
            .context("setting synchronous=FULL")?;
        // No foreign keys yet; on now so a later migration that adds one is enforced.
        conn.pragma_update(None, "foreign_keys", true)
            .context("setting foreign_keys=ON")?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes sure the store can take a change, or says why it cannot.
    ///
    /// SQLite opens a file it may not write (on a read-only mount, or immutable) read-only
    /// without a word, and that connection stays read-only after the cause is gone: the
    /// store would refuse every change until the daemon restarts. So a read-only
    /// connection is replaced by a fresh one here; if the store still cannot be written,
    /// the error names the file and why, and reads go on working.
    ///
    /// A connection opened read-write stays so, even if its mount turns read-only later:
    /// the kernel checks that when a file is opened, so SQLite keeps writing through the
    /// files it holds open.
    pub fn writable(&mut self) -> Result<()> {
        if !self.read_only()? {
            return Ok(());
        }
        // The old connection goes first: the connections of one process share one mapping
        // of the -shm file, and this one mapped it read-only. Until a fresh one opens, a
        // read-only placeholder stands in, so the next call tries again.
        let placeholder = Connection::open_in_memory_with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        drop(std::mem::replace(&mut self.conn, placeholder));
        self.conn = Self::open_impl(&self.path)
            .with_context(|| format!("reopening store {}", self.path.display()))?
            .conn;
        if self.read_only()? {
            bail!(
                "store {} can only be opened read-only: {}",
                self.path.display(),
                self.why_read_only()
            );
        }
        log::info!("store {} is writable again", self.path.display());
        Ok(())
    }

    pub(super) fn read_only(&self) -> Result<bool> {
        self.conn
            .is_readonly(rusqlite::MAIN_DB)
            .context("asking SQLite whether the store is read-only")
    }

    /// Why SQLite could not open the file for writing, found out beside it rather than on
    /// the file itself: closing any descriptor of the file would drop the locks SQLite
    /// holds on it in this process.
    fn why_read_only(&self) -> String {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let probe = dir.join(format!(".hive.sqlite.probe-{}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                "the file refuses writing (its mode or attributes)".to_owned()
            }
            Err(e) => {
                let reason = e.to_string();
                let reason = reason.split(" (os error").next().unwrap_or(&reason);
                format!("{}: {reason}", dir.display())
            }
        }
    }
}

/// Switches to WAL, returning the journal mode SQLite reports afterwards. When several
/// processes open a new file at once, the switch can meet SQLITE_BUSY without SQLite ever
/// calling the busy handler (it refuses to wait where two lock upgrades could deadlock),
/// so this waits out [`BUSY_TIMEOUT`] by hand.
fn set_wal(conn: &Connection) -> rusqlite::Result<String> {
    let start = Instant::now();
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DatabaseBusy && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}
