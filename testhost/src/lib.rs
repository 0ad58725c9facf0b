//! A throwaway, real systemd for hyperhive's integration tests and demo.
//!
//! The host this runs on does not have systemd as PID 1, yet hyperhive talks to systemd over
//! D-Bus. So each test boots its own systemd in `systemd-nspawn --volatile=yes -D /`: the root is
//! a tmpfs and the host's `/usr` is mounted read-only, which is what keeps this safe. Booting
//! systemd on the host's writable `/` would let its boot-time `systemd-tmpfiles --remove` wipe
//! the host's `/tmp`.
//!
//! This is a port of `testhost.sh` (`up`, `down`, `sh`, `ctl`): the project has to carry its own
//! test host, and a Rust fixture can tear the container down from `Drop`, even when a test panics.
//!
//! ```no_run
//! let host = testhost::TestHost::boot(testhost::Options::default()).unwrap();
//! assert_eq!(host.show("dbus.service", "ActiveState"), "active");
//! // dropping `host` kills the container
//! ```

pub mod os;
pub use os::HostOs;

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};

/// Where every test host keeps its state: `<STATE_ROOT>/<name>/`.
///
/// Under /var/tmp rather than /tmp so that nothing that cleans /tmp races a running host, and
/// so the paths are short enough for the notify socket (`sun_path` is 108 bytes).
pub const STATE_ROOT: &str = "/var/tmp/hyperhive-testhost";

/// How long `boot` waits for the container's READY=1 before giving up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long teardown waits for nspawn to exit after its container's PID 1 was killed.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// A state dir without a readable record older than this is an abandoned boot, not one in
/// progress in another process.
const ABANDONED_AFTER: Duration = Duration::from_secs(120);

/// Program basenames that packaging installs; unit files name them by their installed path
/// (`/usr/bin/...`) and the test host rewrites that to the freshly built binary.
const PROJECT_BINARIES: &[&str] = &["hive-c0re", "hivectl", "hive-harness"];

/// Units the minimal test host must not start: each either fails without real hardware or a
/// real console, or just costs boot time the tests do not need.
const MASKED_UNITS: &[&str] = &[
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-repart.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-journal-flush.service",
    "systemd-machine-id-commit.service",
    "kmod-static-nodes.service",
    "systemd-modules-load.service",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "console-getty.service",
    "getty.target",
    "systemd-logind.service",
    "systemd-timesyncd.service",
    "postgresql.service",
    "timers.target",
    "e2scrub_reap.service",
    "systemd-initctl.socket",
    "systemd-journald-audit.socket",
    "systemd-firstboot.service",
];

/// Units whose `LoadCredential=` makes systemd mount /run/credentials/<unit> at boot: that costs
/// ~30 ms and once stalled a boot by 0.9 s, and the test host has no credentials to pass.
const NO_CREDENTIAL_UNITS: &[&str] = &[
    "systemd-sysusers.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup.service",
];

/// How to boot a test host. `Options::default()` boots a bare systemd with D-Bus, journald and
/// machined, and nothing of the project's.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Machine name (nspawn `-M`) and state dir name. Default: a unique `hvt-<pid>-<counter>`.
    pub name: Option<String>,
    /// Directory with the built binaries (e.g. `target/debug`). It is bound read-only at the
    /// same path inside, so a path computed on the host is valid in the container too, and
    /// unit `ExecStart=` lines naming the project's binaries are rewritten to point here.
    pub bin_dir: Option<PathBuf>,
    /// The project's `units/` tree in install layout (`systemd/system/`, `dbus-1/system.d/`,
    /// `tmpfiles.d/`, `sysusers.d/`); any of those subdirectories may be missing.
    pub units_dir: Option<PathBuf>,
    /// Also start `hive-c0re.service` (from `units_dir`) as part of the boot target. It is
    /// `Type=notify`, so `boot` then returns only once the daemon has said READY=1, and fails
    /// (with the daemon's journal) if the daemon is not active by then.
    pub start_daemon: bool,
    /// Extra read-write binds `(host path, container path)`, for tests that keep state across
    /// reboots of the test host.
    pub extra_binds: Vec<(PathBuf, PathBuf)>,
    /// The OS tree to boot; `None` reads [`os::ENV`] (default: this machine's own).
    pub os: Option<HostOs>,
}

/// A running test host: a systemd booted in `systemd-nspawn`, torn down on drop.
///
/// nspawn is kept as a direct child (not setsid'ed and orphaned) so that teardown can reap it
/// immediately; an orphan is reaped by this machine's PID 1 only 1-2 s later.
#[derive(Debug)]
pub struct TestHost {
    name: String,
    state: PathBuf,
    nspawn: Child,
    leader: u32,
    /// A pidfd for the container's PID 1: signalling through it cannot hit an unrelated process
    /// that reused the PID.
    leader_fd: Option<PidFd>,
    boot_time: Duration,
    detached: bool,
}

impl TestHost {
    /// Boots a test host and blocks until its systemd reports READY=1 (boot target reached),
    /// or fails after 30 s with the tail of the container's console log.
    ///
    /// The first boot in a process also calls [`reap_stale`], so hosts leaked by a killed test
    /// run do not pile up.
    pub fn boot(opts: Options) -> Result<TestHost> {
        static REAP: Once = Once::new();
        REAP.call_once(|| {
            reap_stale();
        });

        let bin_dir = match &opts.bin_dir {
            Some(dir) => Some(
                fs::canonicalize(dir)
                    .with_context(|| format!("bin_dir {} does not exist", dir.display()))?,
            ),
            None => None,
        };
        let units_dir = match &opts.units_dir {
            Some(dir) => Some(
                fs::canonicalize(dir)
                    .with_context(|| format!("units_dir {} does not exist", dir.display()))?,
            ),
            None => None,
        };

        if opts.start_daemon {
            // Wants= of a missing unit is silently ignored: the boot would "succeed" without it.
            let unit = units_dir
                .as_deref()
                .map(|u| u.join("systemd/system/hive-c0re.service"));
            if !unit.as_deref().is_some_and(Path::exists) {
                bail!("start_daemon needs units_dir with systemd/system/hive-c0re.service");
            }
        }
        let os = match opts.os {
            Some(os) => os,
            None => HostOs::from_env()?,
        };
        let root = os.root()?;
        let (name, state) = claim_state_dir(opts.name.as_deref())?;

        let prepared = (|| -> Result<Command> {
            for sub in [
                "run-dbus",
                "journal",
                "varjournal",
                "units",
                "dbus-system.d",
            ] {
                fs::create_dir(state.join(sub))?;
            }
            write_units(
                &state.join("units"),
                opts.start_daemon,
                units_dir.as_deref(),
                bin_dir.as_deref(),
            )?;
            let mut binds = vec![
                bind_ro(&state.join("units"), "/etc/systemd/system"),
                bind_rw(&state.join("run-dbus"), "/run/dbus"),
                bind_rw(&state.join("journal"), "/run/log/journal"),
                bind_rw(&state.join("varjournal"), "/var/log/journal"),
                bind_ro(&state.join("dbus-system.d"), "/etc/dbus-1/system.d"),
            ];
            if let Some(units) = &units_dir {
                copy_dir(
                    &units.join("dbus-1/system.d"),
                    &state.join("dbus-system.d"),
                    None,
                )?;
                for sub in ["tmpfiles.d", "sysusers.d"] {
                    let src = units.join(sub);
                    if src.is_dir() {
                        copy_dir(&src, &state.join(sub), None)?;
                        binds.push(bind_ro(&state.join(sub), &format!("/etc/{sub}")));
                    }
                }
                // Compiled inside, after boot, by the test host's own journalctl: a
                // database compiled here by another systemd version is not one the
                // test host's journalctl reads (Debian 13's 257 ignored 252's).
                let catalog = units.join("catalog");
                if catalog.is_dir() {
                    copy_dir(&catalog, &state.join("catalog"), None)?;
                    binds.push(bind_ro(&state.join("catalog"), "/etc/systemd/catalog"));
                }
            }
            if let Some(bin) = &bin_dir {
                check_bind_path(bin)?;
                binds.push(format!("--bind-ro={}", bin.display()));
            }
            for (src, dst) in &opts.extra_binds {
                check_bind_path(src)?;
                check_bind_path(dst)?;
                binds.push(format!("--bind={}:{}", src.display(), dst.display()));
            }

            // Each host gets its own cgroup: nspawn puts the container in
            // `<its own cgroup>/payload`, and without systemd on this machine every nspawn
            // starts in the root cgroup, so parallel hosts would share one tree. Their
            // systemds would then see each other's processes in a same-named unit's
            // cgroup: units would not be collected, and a stop could kill the neighbour's.
            let cgroups = create_host_cgroups(&name)?;
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(r#"IFS=:; for cg in $HH_CGROUPS; do echo $$ > "$cg/cgroup.procs" || exit 125; done; exec "$@""#)
                .arg("sh")
                .arg("systemd-nspawn")
                .env("HH_CGROUPS", join_paths(&cgroups))
                .envs(os.nspawn_env());
            cmd.args(["-q", "-D"])
                .arg(&root)
                .args(["--volatile=yes", "--register=no", "--keep-unit"])
                .args(["--link-journal=no", "-M", &name])
                .arg(format!("--uuid={}", new_id128()?))
                .args(["--notify-ready=yes", "--console=read-only"])
                .args(&binds)
                .args([
                    "-b",
                    "--",
                    "systemd.firstboot=off",
                    "systemd.unit=hive-test.target",
                ]);
            Ok(cmd)
        })();
        let mut cmd = match prepared {
            Ok(cmd) => cmd,
            Err(e) => {
                remove_state_dir(&state);
                return Err(e.context(format!("preparing test host {name}")));
            }
        };

        let notify_path = state.join("notify.sock");
        let spawned = (|| -> Result<(UnixDatagram, Child)> {
            // Bound before nspawn starts, so its READY=1 cannot be sent into the void.
            let sock = UnixDatagram::bind(&notify_path)
                .with_context(|| format!("binding {}", notify_path.display()))?;
            let console = fs::File::create(state.join("console.log"))?;
            let child = cmd
                .env("NOTIFY_SOCKET", &notify_path)
                // A test runner may have this pointed at some test host's bus; nspawn must
                // not talk to that one.
                .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
                // The container's PID 1 takes TERM from nspawn: "dumb" keeps colour codes out
                // of the console log, and at the default 80 columns unit names in it get
                // ellipsized. Neither reaches the container's services.
                .env("TERM", "dumb")
                .env("COLUMNS", "200")
                .stdin(Stdio::null())
                .stdout(console.try_clone()?)
                .stderr(console)
                // A Ctrl-C on the test runner's terminal must not reach nspawn: the container
                // is torn down by us, by killing its PID 1.
                .process_group(0)
                .spawn()
                .context("spawning systemd-nspawn (apt-get install systemd-container)")?;
            Ok((sock, child))
        })();
        let (sock, nspawn) = match spawned {
            Ok(x) => x,
            Err(e) => {
                remove_state_dir(&state);
                return Err(e.context(format!("booting test host {name}")));
            }
        };
        let t0 = Instant::now();

        // From here on, Drop cleans up whatever happens.
        let mut host = TestHost {
            name,
            state,
            nspawn,
            leader: 0,
            leader_fd: None,
            boot_time: Duration::ZERO,
            detached: false,
        };
        let _ = host.write_record(true);
        host.wait_ready(&sock, t0)?;
        host.boot_time = t0.elapsed();
        // Nobody reads the socket after READY=1: with max_dgram_qlen as low as 10, later
        // notifications from nspawn would fill its queue and block nspawn. Unlinking it makes
        // those sends fail instead.
        drop(sock);
        let _ = fs::remove_file(&notify_path);
        host.write_record(true)?;
        if state_has_catalog(&host.state) {
            // journalctl compiles only /usr/lib/systemd/catalog (under --root), and this
            // /usr is read-only: compile a copy of it plus ours, then put the database
            // where journalctl -x reads it.
            host.run_ok(&[
                "sh",
                "-c",
                "mkdir -p /run/hh-catalog/usr/lib/systemd/catalog /var/lib/systemd/catalog \
                 && cp /usr/lib/systemd/catalog/*.catalog /etc/systemd/catalog/*.catalog \
                       /run/hh-catalog/usr/lib/systemd/catalog/ \
                 && journalctl --root=/run/hh-catalog --update-catalog \
                 && cp /run/hh-catalog/var/lib/systemd/catalog/database /var/lib/systemd/catalog/ \
                 && rm -rf /run/hh-catalog",
            ]);
        }
        if opts.start_daemon {
            host.check_daemon()?;
        }
        Ok(host)
    }

    /// READY=1 only says the boot transaction is done; a daemon that failed to start does not
    /// hold it up. Fail here with its log rather than in some later assertion.
    fn check_daemon(&self) -> Result<()> {
        let unit = "hive-c0re.service";
        let out = self.run(&["systemctl", "show", "-P", "ActiveState", unit]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "active" {
            return Ok(());
        }
        let log = self.run(&[
            "journalctl",
            "-u",
            unit,
            "-n",
            "30",
            "--no-pager",
            "-o",
            "short-monotonic",
        ]);
        bail!(
            "test host {}: {unit} is {state:?} after boot\n--- journalctl -u {unit} ---\n{}",
            self.name,
            String::from_utf8_lossy(&log.stdout).trim_end()
        );
    }

    /// Waits for READY=1 on `sock`, finding the container's PID 1 along the way (as early as
    /// possible, so that a failed boot can still be torn down by killing it).
    fn wait_ready(&mut self, sock: &UnixDatagram, t0: Instant) -> Result<()> {
        sock.set_read_timeout(Some(Duration::from_millis(10)))?;
        let mut buf = [0u8; 4096];
        let mut ready = false;
        loop {
            if self.leader_fd.is_none() {
                self.find_leader();
            }
            if ready && self.leader_fd.is_some() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                bail!(
                    "test host {}: systemd-nspawn exited ({status}) before READY=1\n{}",
                    self.name,
                    self.console_tail(30)
                );
            }
            if t0.elapsed() > BOOT_TIMEOUT {
                bail!(
                    "test host {}: no {} within {BOOT_TIMEOUT:?}\n{}",
                    self.name,
                    if ready { "container PID 1" } else { "READY=1" },
                    self.console_tail(30)
                );
            }
            if ready {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    ready = msg.lines().any(|l| l == "READY=1");
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("reading the notify socket"),
            }
        }
    }

    /// The container's PID 1 is the child of nspawn that is PID 1 in its own PID namespace.
    /// nspawn's other, short-lived child (which forks it) is in our namespace, so it is skipped.
    fn find_leader(&mut self) {
        let npid = self.nspawn.id();
        let Ok(children) = fs::read_to_string(format!("/proc/{npid}/task/{npid}/children")) else {
            return;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if !is_container_init(pid) {
                continue;
            }
            let Ok(fd) = PidFd::open(pid) else { continue };
            // Re-checked after opening, so the pidfd is known to refer to this process.
            if !is_container_init(pid) || parent_of(pid) != Some(npid) {
                continue;
            }
            self.leader = pid;
            self.leader_fd = Some(fd);
            let _ = self.write_record(true);
            return;
        }
    }

    /// The machine name (also the state dir name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host PID of the container's PID 1 (its systemd).
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// The host PID of `systemd-nspawn`.
    pub fn nspawn_pid(&self) -> u32 {
        self.nspawn.id()
    }

    /// How long the boot took, from spawning nspawn to READY=1.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// This host's state directory (`/var/tmp/hyperhive-testhost/<name>`), removed on drop.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// D-Bus address of the test host's system bus, usable from the host (zbus, `busctl
    /// --address=`). The container's /run/dbus is bound from the state dir, so its socket is
    /// visible here.
    pub fn bus_address(&self) -> String {
        bus_address_of(&self.state)
    }

    /// The test host's volatile journal (its /run/log/journal), readable from the host with
    /// `journalctl -D`. It is removed on drop, so read it before.
    pub fn journal_dir(&self) -> PathBuf {
        self.state.join("journal")
    }

    /// Runs `argv` inside the test host (all its namespaces, via `nsenter -a`) and returns its
    /// output, whatever its exit status.
    pub fn run(&self, argv: &[&str]) -> Output {
        nsenter_command(self.leader, argv)
            .output()
            .unwrap_or_else(|e| failed_output(format!("cannot run nsenter: {e}")))
    }

    /// Like [`TestHost::run`], but panics (showing argv, status and stderr) unless `argv`
    /// succeeds; returns its stdout, trimmed.
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        if !out.status.success() {
            panic!(
                "in test host {}: {:?} failed ({}): {}{}",
                self.name,
                argv,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end(),
                if out.stdout.is_empty() {
                    String::new()
                } else {
                    format!(
                        "\nstdout: {}",
                        String::from_utf8_lossy(&out.stdout).trim_end()
                    )
                }
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs a host-side client (`systemctl`, `systemd-run`, `busctl`, ...) against the test
    /// host's bus; see [`ctl_command`].
    pub fn ctl(&self, argv: &[&str]) -> Output {
        ctl_command(&self.bus_address(), argv)
            .output()
            .unwrap_or_else(|e| failed_output(format!("cannot run unshare: {e}")))
    }

    /// A unit property as seen inside (`systemctl show -P <prop> <unit>`), trimmed.
    pub fn show(&self, unit: &str, prop: &str) -> String {
        self.run_ok(&["systemctl", "show", "-P", prop, unit])
    }

    /// Polls `f` every 20 ms until it returns true; panics naming `what` after `timeout`.
    /// For tests: a fixed sleep is either flaky or slow.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        loop {
            if f() {
                return;
            }
            if t0.elapsed() > timeout {
                panic!(
                    "in test host {}: timed out after {timeout:?} waiting for {what}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Tears the host down now; the same as dropping it.
    pub fn shutdown(self) {}

    /// Leaves the host running past the end of this process (for the `hive-testhost up` CLI);
    /// stop it later with [`down`].
    pub fn detach(mut self) {
        self.detached = true;
        // Without an owner, reap_stale() no longer treats the host as leaked once we exit.
        if let Err(e) = self.write_record(false) {
            warn(&format!(
                "test host {}: cannot update host.json: {e:#}",
                self.name
            ));
        }
    }

    fn console_tail(&self, lines: usize) -> String {
        let log = fs::read(self.state.join("console.log")).unwrap_or_default();
        let all = console_lines(&String::from_utf8_lossy(&log));
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- tail of {}/console.log ---\n{tail}",
            self.state.display()
        )
    }

    fn write_record(&self, owned: bool) -> Result<()> {
        let npid = self.nspawn.id();
        let owner = std::process::id();
        let record = serde_json::json!({
            "name": self.name,
            "nspawn_pid": npid,
            "nspawn_start": start_time(npid),
            "leader_pid": if self.leader == 0 { None } else { Some(self.leader) },
            "leader_start": if self.leader == 0 { None } else { start_time(self.leader) },
            "owner_pid": if owned { Some(owner) } else { None },
            "owner_start": if owned { start_time(owner) } else { None },
            "bus_address": self.bus_address(),
        });
        write_atomic(&self.state.join("host.json"), &format!("{record:#}\n"))?;
        // The same plain files as testhost.sh, for shell use.
        write_atomic(&self.state.join("nspawn.pid"), &format!("{npid}\n"))?;
        if self.leader != 0 {
            write_atomic(
                &self.state.join("leader.pid"),
                &format!("{}\n", self.leader),
            )?;
        }
        Ok(())
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if std::thread::panicking() && self.leader != 0 {
            // The host's journal dies with it: a failed test leaves its story in its output.
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
                self.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        // Killing the container's PID 1 tears down its whole PID namespace, nested agent
        // containers included; nspawn then exits on its own.
        if let Some(fd) = &self.leader_fd {
            let _ = fd.send_signal(libc::SIGKILL);
        } else if let Ok(fd) = PidFd::open(self.nspawn.id()) {
            // Boot failed before PID 1 was found: SIGKILL to nspawn could orphan a container,
            // SIGTERM makes nspawn stop it. (Unreaped child: the PID cannot be reused.)
            let _ = fd.send_signal(libc::SIGTERM);
        }
        let t0 = Instant::now();
        let exited = loop {
            match self.nspawn.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if t0.elapsed() < TEARDOWN_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => break false,
                Err(_) => break true, // not our child any more: nothing to reap
            }
        };
        if !exited {
            warn(&format!(
                "test host {}: nspawn {} still alive {TEARDOWN_TIMEOUT:?} after killing PID 1, SIGKILL",
                self.name,
                self.nspawn.id()
            ));
            // Still unreaped, so the PID cannot have been reused.
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        cleanup(&self.name, &self.state);
    }
}

/// Unique default names within this process; the PID makes them unique across processes.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Picks the host's name and creates its empty state dir, wiping a stale one of the same name.
fn claim_state_dir(requested: Option<&str>) -> Result<(String, PathBuf)> {
    fs::create_dir_all(STATE_ROOT).with_context(|| format!("creating {STATE_ROOT}"))?;
    let _ = fs::set_permissions(STATE_ROOT, fs::Permissions::from_mode(0o755));
    loop {
        let name = match requested {
            Some(n) => n.to_string(),
            None => format!(
                "hvt-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        };
        check_name(&name)?;
        let state = Path::new(STATE_ROOT).join(&name);
        if state.exists() {
            if let Some(record) = read_record(&state) {
                if record.in_use() {
                    if requested.is_some() {
                        bail!(
                            "test host {name} is already up (state in {})",
                            state.display()
                        );
                    }
                    continue; // an earlier process with our PID left it running: skip its name
                }
                stop(&record).with_context(|| format!("stopping the stale test host {name}"))?;
            }
            cleanup(&name, &state);
        }
        match fs::create_dir(&state) {
            Ok(()) => return Ok((name, state)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && requested.is_none() => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", state.display())),
        }
    }
}

/// Machine names end up in paths and in nspawn's `-M`, which must be a valid hostname.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if !ok {
        bail!("invalid test host name {name:?}: use 1-64 of [A-Za-z0-9.-]");
    }
    Ok(())
}

/// nspawn splits `--bind=` on ':' (its escape for a literal colon is easy to get wrong).
fn check_bind_path(path: &Path) -> Result<()> {
    let s = path.to_string_lossy();
    if !path.is_absolute() || s.contains(':') || s.contains(',') {
        bail!("bind path {s:?} must be absolute and contain no ':' or ','");
    }
    Ok(())
}

fn bind_ro(src: &Path, dst: &str) -> String {
    format!("--bind-ro={}:{dst}", src.display())
}

fn bind_rw(src: &Path, dst: &str) -> String {
    format!("--bind={}:{dst}", src.display())
}

fn bus_address_of(state: &Path) -> String {
    format!("unix:path={}/run-dbus/system_bus_socket", state.display())
}

/// The container's machine id; fresh per boot so journals of different boots do not mix.
fn new_id128() -> Result<String> {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")?;
    Ok(uuid.trim().replace('-', ""))
}

/// Generates the test host's /etc/systemd/system (the container's /etc is an empty tmpfs, so
/// this is all the configuration it gets), then installs the project's units over it.
fn write_units(
    dir: &Path,
    start_daemon: bool,
    units_dir: Option<&Path>,
    bin_dir: Option<&Path>,
) -> Result<()> {
    let daemon = if start_daemon {
        " hive-c0re.service"
    } else {
        ""
    };
    fs::write(
        dir.join("hive-test.target"),
        format!(
            "[Unit]\n\
             Description=Hive integration-test host (minimal)\n\
             Wants=dbus.socket dbus.service systemd-journald.socket systemd-journald.service systemd-machined.service{daemon}\n\
             After=dbus.service systemd-journald.service systemd-machined.service{daemon}\n\
             AllowIsolate=yes\n"
        ),
    )?;
    fs::write(
        dir.join("hive-agent.target"),
        "[Unit]\n\
         Description=Hive agent container (minimal)\n\
         Wants=dbus.socket dbus.service systemd-journald.socket systemd-journald.service\n\
         After=dbus.service systemd-journald.service\n\
         AllowIsolate=yes\n",
    )?;
    for unit in MASKED_UNITS {
        symlink("/dev/null", dir.join(unit))?;
    }
    for unit in NO_CREDENTIAL_UNITS {
        let dropins = dir.join(format!("{unit}.d"));
        fs::create_dir_all(&dropins)?;
        fs::write(dropins.join("nocred.conf"), "[Service]\nLoadCredential=\n")?;
    }
    if let Some(units) = units_dir {
        copy_dir(&units.join("systemd/system"), dir, bin_dir)?;
    }
    Ok(())
}

/// Copies a directory tree (a missing `src` is an empty one), keeping symlinks as symlinks.
/// With `bin_dir`, unit files get their `Exec*=` lines pointed at the built binaries.
fn copy_dir(src: &Path, dst: &Path, bin_dir: Option<&Path>) -> Result<()> {
    let entries = match fs::read_dir(src) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
    };
    fs::create_dir_all(dst)?;
    for entry in entries {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let ty = entry.file_type()?;
        // The project's own file wins over a generated mask or drop-in of the same name.
        if let Ok(meta) = fs::symlink_metadata(&to) {
            if !(meta.is_dir() && ty.is_dir()) {
                if meta.is_dir() {
                    fs::remove_dir_all(&to)?;
                } else {
                    fs::remove_file(&to)?;
                }
            }
        }
        if ty.is_symlink() {
            symlink(fs::read_link(&from)?, &to)?;
        } else if ty.is_dir() {
            copy_dir(&from, &to, bin_dir)?;
        } else {
            let data = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            match (bin_dir, String::from_utf8(data)) {
                (Some(bin), Ok(text)) => fs::write(&to, rewrite_exec_lines(&text, bin))?,
                (_, Ok(text)) => fs::write(&to, text)?,
                (_, Err(e)) => fs::write(&to, e.into_bytes())?,
            }
        }
    }
    Ok(())
}

/// Does what packaging does to the project's units: `ExecStart=/usr/bin/hive-c0re ...` (and
/// the other `Exec*=` keys, for any of the project's binaries, wherever they were said to be)
/// becomes `ExecStart=<bin_dir>/hive-c0re ...`. systemd's prefixes (`-@:+!`) are kept.
/// Whether units/catalog was installed at /etc/systemd/catalog (`journalctl -x` then
/// shows the text of hive-c0re's events, as on an installed host).
fn state_has_catalog(state: &Path) -> bool {
    state.join("catalog").is_dir()
}

pub fn rewrite_exec_lines(unit: &str, bin_dir: &Path) -> String {
    let mut out = String::with_capacity(unit.len());
    for line in unit.split_inclusive('\n') {
        out.push_str(&rewrite_exec_line(line, bin_dir).unwrap_or_else(|| line.to_string()));
    }
    out
}

fn rewrite_exec_line(line: &str, bin_dir: &Path) -> Option<String> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let (key, value) = trimmed.split_once('=')?;
    let key = key.trim_end();
    const KEYS: &[&str] = &[
        "ExecCondition",
        "ExecStartPre",
        "ExecStart",
        "ExecStartPost",
        "ExecReload",
        "ExecStop",
        "ExecStopPost",
    ];
    if !KEYS.contains(&key) {
        return None;
    }
    let value = value.trim_start();
    let prefix_len = value.len() - value.trim_start_matches(['-', '@', ':', '+', '!']).len();
    let (prefix, rest) = value.split_at(prefix_len);
    let prog_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (prog, args) = rest.split_at(prog_len);
    let base = prog.rsplit('/').next()?;
    if !PROJECT_BINARIES.contains(&base) {
        return None;
    }
    Some(format!(
        "{indent}{key}={prefix}{}{args}",
        bin_dir.join(base).display()
    ))
}

/// The command [`TestHost::run`] uses: `argv` inside the container whose PID 1 is `leader`.
/// `path` with `dir` in front when `dir` holds hyperhive's binaries (hivectl): the
/// directory `hive-testhost` was built into, bound into every test host at the same path.
pub fn path_with_bins(dir: &Path, path: &str) -> Option<String> {
    dir.join("hivectl")
        .is_file()
        .then(|| format!("{}:{path}", dir.display()))
}

pub fn nsenter_command(leader: u32, argv: &[impl AsRef<OsStr>]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &leader.to_string(), "-a"])
        .args(argv)
        // nsenter passes our environment in: an exported bus address or notify socket would
        // make tools inside (machinectl, systemd-notify) talk to the wrong place.
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    cmd
}

/// A host-side `systemctl`/`systemd-run`/`busctl` aimed at a test host's bus.
///
/// Those tools refuse to work unless the machine looks booted with systemd
/// (/run/systemd/system exists), and as root they prefer /run/systemd/private, which is not
/// usable from outside the container. So the command runs in a private mount namespace with an
/// empty tmpfs on /run/systemd that contains just `system/`.
pub fn ctl_command(bus_address: &str, argv: &[impl AsRef<OsStr>]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs hive /run/systemd && mkdir /run/systemd/system && exec \"$@\"")
        .arg("ctl")
        .args(argv)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
        .stdin(Stdio::null());
    cmd
}

fn failed_output(msg: String) -> Output {
    use std::os::unix::process::ExitStatusExt as _;
    Output {
        status: std::process::ExitStatus::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: msg.into_bytes(),
    }
}

/// The state dir of the test host `name` (whether or not it is up).
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// The leader (container PID 1) of a running, possibly detached, test host.
pub fn leader_of(name: &str) -> Result<u32> {
    check_name(name)?;
    let state = state_dir(name);
    let record = read_record(&state).with_context(|| format!("test host {name} is not up"))?;
    match record.leader {
        Some(leader) if record.nspawn_alive() && leader.alive() => Ok(leader.pid),
        _ => bail!("test host {name} is not up"),
    }
}

/// Stops a test host by name, e.g. one left running by `hive-testhost up`: kills its PID 1,
/// waits for its nspawn to exit and removes its state.
pub fn down(name: &str) -> Result<()> {
    check_name(name)?;
    let state = state_dir(name);
    if !state.exists() {
        bail!(
            "test host {name} is not up ({} does not exist)",
            state.display()
        );
    }
    match read_record(&state) {
        Some(record) => stop(&record)?,
        None => {
            if fs::symlink_metadata(state.join("host.json")).is_ok() {
                bail!("cannot read {}/host.json", state.display());
            }
        }
    }
    cleanup(name, &state);
    Ok(())
}

/// Removes the state of every test host whose nspawn is gone, and stops and removes the
/// hosts of test processes that died without tearing them down (killed test runs). Hosts of
/// live processes and detached hosts are left alone. Returns the names of the hosts removed.
pub fn reap_stale() -> Vec<String> {
    let mut reaped = Vec::new();
    let Ok(entries) = fs::read_dir(STATE_ROOT) else {
        return reaped;
    };
    for entry in entries.flatten() {
        let state = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if check_name(&name).is_err() || !state.is_dir() {
            continue;
        }
        let stale = match read_record(&state) {
            // The container may outlive a SIGKILLed nspawn, so it is stopped either way.
            Some(record) => !record.in_use() && stop(&record).is_ok(),
            // No record yet: a boot in progress, unless it was abandoned long ago.
            None => fs::metadata(&state)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ABANDONED_AFTER),
        };
        if stale {
            cleanup(&name, &state);
            reaped.push(name);
        }
    }
    reaped
}

/// Stops the host described by `record`: SIGKILL to its PID 1, then waits for its nspawn.
fn stop(record: &Record) -> Result<()> {
    let killed = record
        .leader
        .as_ref()
        .is_some_and(|leader| leader.signal(libc::SIGKILL).is_ok());
    if !killed {
        // No live PID 1 recorded: ask nspawn for an orderly stop instead.
        let _ = record.nspawn.signal(libc::SIGTERM);
    }
    let t0 = Instant::now();
    while record.nspawn.alive() && t0.elapsed() < TEARDOWN_TIMEOUT {
        std::thread::sleep(Duration::from_millis(5));
    }
    if record.nspawn.alive() {
        let _ = record.nspawn.signal(libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(100));
        if record.nspawn.alive() {
            bail!(
                "nspawn {} of test host {} does not die",
                record.nspawn.pid,
                record.name
            );
        }
    }
    Ok(())
}

/// The cgroup hierarchies nspawn uses here: on a hybrid host the named `systemd` v1
/// hierarchy and the unified one; on a pure cgroup2 host the root itself.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| root.join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

fn host_cgroups(name: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join("hyperhive-testhost").join(name))
        .collect()
}

fn create_host_cgroups(name: &str) -> Result<Vec<PathBuf>> {
    let dirs = host_cgroups(name);
    for d in &dirs {
        fs::create_dir_all(d).with_context(|| format!("creating cgroup {}", d.display()))?;
    }
    Ok(dirs)
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Removes a host's cgroups bottom-up. The kernel only lets empty cgroups go; processes of
/// a just-killed container can take a moment to be reaped, so retry briefly.
fn remove_host_cgroups(name: &str) {
    for dir in host_cgroups(name) {
        let t0 = Instant::now();
        while dir.exists() && rmdir_tree(&dir).is_err() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if dir.exists() {
            warn(&format!(
                "cannot remove cgroup {}: still populated",
                dir.display()
            ));
        }
    }
}

fn rmdir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Removes everything a host leaves behind on the host side. Never panics: it runs in Drop.
fn cleanup(name: &str, state: &Path) {
    remove_host_cgroups(name);
    // The stale bus socket survives a shutdown and would make a client hang or fail oddly.
    let _ = fs::remove_dir_all(state.join("run-dbus"));
    let _ = fs::remove_file(state.join("notify.sock"));
    remove_state_dir(state);
    let propagate = Path::new("/run/systemd/nspawn/propagate").join(name);
    if fs::symlink_metadata(&propagate).is_ok() {
        if has_mounts_under(&propagate) {
            warn(&format!(
                "not removing {}: still mounted",
                propagate.display()
            ));
        } else if let Err(e) = fs::remove_dir_all(&propagate) {
            warn(&format!("cannot remove {}: {e}", propagate.display()));
        }
    }
}

/// `remove_dir_all` would descend into anything still mounted below the state dir (an
/// extra bind source, say, if a mount leaked into our namespace), so refuse in that case.
fn remove_state_dir(state: &Path) {
    if has_mounts_under(state) {
        warn(&format!(
            "not removing {}: something is mounted below it",
            state.display()
        ));
        return;
    }
    if let Err(e) = fs::remove_dir_all(state) {
        if e.kind() != io::ErrorKind::NotFound {
            warn(&format!("cannot remove {}: {e}", state.display()));
        }
    }
}

fn has_mounts_under(dir: &Path) -> bool {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let dir = dir.to_string_lossy();
    let under = format!("{dir}/");
    mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(unescape_mountinfo)
            .is_some_and(|mp| mp == dir || mp.starts_with(&under))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The console log as readable lines. Even with TERM=dumb, systemd redraws a "Job ... running"
/// progress line twice a second with cursor escapes; a stuck boot would fill the whole tail
/// with those, so only the last of each run of them is kept.
fn console_lines(log: &str) -> Vec<String> {
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
fn strip_escapes(s: &str) -> String {
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

fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path)
}

fn warn(msg: &str) {
    // eprintln! panics if stderr is gone; this runs in Drop.
    let _ = writeln!(io::stderr(), "testhost: {msg}");
}

/// A process identified by PID and start time, so that a recorded PID that was reused by an
/// unrelated process is never mistaken for (or signalled as) the one we started.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    start: Option<u64>,
}

impl Proc {
    /// Alive and still the same process. A zombie counts as dead: an orphaned nspawn is
    /// reaped by this machine's PID 1 only 1-2 s after it exits.
    fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => state != 'Z' && self.start.is_none_or(|s| s == start),
            None => false,
        }
    }

    fn signal(&self, sig: i32) -> io::Result<()> {
        let fd = PidFd::open(self.pid)?;
        // Checked after opening the pidfd: if it is still the same process now, the pidfd
        // refers to it and the signal cannot reach a PID reuser.
        if !self.alive() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        fd.send_signal(sig)
    }
}

#[derive(Debug)]
struct Record {
    name: String,
    nspawn: Proc,
    leader: Option<Proc>,
    owner: Option<Proc>,
}

impl Record {
    fn nspawn_alive(&self) -> bool {
        self.nspawn.alive()
    }

    /// Running, and either detached or owned by a live process. Anything else is stale.
    fn in_use(&self) -> bool {
        self.nspawn_alive() && self.owner.as_ref().is_none_or(Proc::alive)
    }
}

/// Reads `<state>/host.json`, falling back to testhost.sh's `nspawn.pid`/`leader.pid`.
fn read_record(state: &Path) -> Option<Record> {
    let name = state.file_name()?.to_str()?.to_string();
    let proc_at = |v: &serde_json::Value, pid: &str, start: &str| -> Option<Proc> {
        Some(Proc {
            pid: u32::try_from(v.get(pid)?.as_u64()?).ok()?,
            start: v.get(start).and_then(serde_json::Value::as_u64),
        })
    };
    if let Ok(text) = fs::read_to_string(state.join("host.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        return Some(Record {
            name,
            nspawn: proc_at(&v, "nspawn_pid", "nspawn_start")?,
            leader: proc_at(&v, "leader_pid", "leader_start"),
            owner: proc_at(&v, "owner_pid", "owner_start"),
        });
    }
    let pid_file = |f: &str| -> Option<Proc> {
        let pid = fs::read_to_string(state.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(Proc { pid, start: None })
    };
    Some(Record {
        name,
        nspawn: pid_file("nspawn.pid")?,
        leader: pid_file("leader.pid"),
        owner: None,
    })
}

/// State letter and start time (clock ticks since boot) from /proc/<pid>/stat.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn parent_of(pid: u32) -> Option<u32> {
    proc_status_field(pid, "PPid")?.parse().ok()
}

/// PID 1 of a PID namespace nested one level below ours: NSpid reads "<our pid> 1".
fn is_container_init(pid: u32) -> bool {
    proc_status_field(pid, "NSpid").is_some_and(|ns| {
        let ids: Vec<&str> = ns.split_whitespace().collect();
        ids.len() == 2 && ids[1] == "1"
    })
}

/// A Linux pidfd: a handle on one process that stays valid (and never aliases another
/// process) after the PID is reused.
#[derive(Debug)]
struct PidFd(OwnedFd);

impl PidFd {
    #[allow(unsafe_code)]
    fn open(pid: u32) -> io::Result<PidFd> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes two integers and touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    #[allow(unsafe_code)]
    fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: the fd is a valid pidfd we own; a null siginfo is documented as allowed
        // (the kernel fills in one as for kill(2)).
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_binaries_go_first_on_path_only_where_they_are() {
        let dir = std::env::temp_dir().join(format!("testhost-bins-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(path_with_bins(&dir, "/usr/bin"), None);
        fs::write(dir.join("hivectl"), "").unwrap();
        assert_eq!(
            path_with_bins(&dir, "/usr/bin"),
            Some(format!("{}:/usr/bin", dir.display()))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rewrites_project_binaries_only() {
        let bin = Path::new("/w/target/debug");
        let unit = "[Service]\n\
                    Type=notify\n\
                    ExecStart=/usr/bin/hive-c0re --foo bar\n\
                    ExecStartPre=-/usr/bin/hivectl check\n\
                    ExecStopPost=/usr/bin/busctl call x\n\
                    ExecReload=hive-harness\n\
                    Environment=ExecStart=/usr/bin/hive-c0re\n";
        assert_eq!(
            rewrite_exec_lines(unit, bin),
            "[Service]\n\
             Type=notify\n\
             ExecStart=/w/target/debug/hive-c0re --foo bar\n\
             ExecStartPre=-/w/target/debug/hivectl check\n\
             ExecStopPost=/usr/bin/busctl call x\n\
             ExecReload=/w/target/debug/hive-harness\n\
             Environment=ExecStart=/usr/bin/hive-c0re\n"
        );
    }

    #[test]
    fn rewrite_keeps_missing_final_newline() {
        assert_eq!(
            rewrite_exec_lines("ExecStart=/opt/hive-c0re", Path::new("/b")),
            "ExecStart=/b/hive-c0re"
        );
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trail\\04"), "/trail\\04");
    }

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

    #[test]
    fn names() {
        assert!(check_name("hvt-1-2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a_b").is_err());
    }

    #[test]
    fn own_process_is_alive_and_reused_pid_is_not() {
        let me = std::process::id();
        assert!(Proc {
            pid: me,
            start: start_time(me)
        }
        .alive());
        assert!(!Proc {
            pid: me,
            start: start_time(me).map(|s| s + 1)
        }
        .alive());
    }
}
