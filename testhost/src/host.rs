//! Booting a test host and the handle a test holds on it: run commands inside, talk to its
//! bus, and tear it down on drop. boot() is long because it is one sequence (state dir,
//! units, binds, cgroup, nspawn, READY=1, the daemon's check); its pieces live in the
//! sibling modules.

use std::fs;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::cgroups::{create_host_cgroups, join_paths};
use crate::console::console_tail;
use crate::exec::{
    bind_ro, bind_rw, bus_address_of, check_bind_path, ctl_command, failed_output, new_id128,
    nsenter_command,
};
use crate::procs::{is_container_init, parent_of, PidFd};
use crate::record::{claim_state_dir, write_record};
use crate::teardown::{cleanup, reap_stale, remove_state_dir};
use crate::units::{self, copy_dir, state_has_catalog, write_units};
use crate::{warn, HostOs, Options, TEARDOWN_TIMEOUT};
use anyhow::{bail, Context as _, Result};
use rustix::process::Signal;

/// How long `boot` waits for the container's READY=1 before giving up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

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
                "dbus-system-services",
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
                bind_ro(&state.join("dbus-system-services"), units::SERVICE_DIR),
            ];
            if let Some(units) = &units_dir {
                copy_dir(
                    &units.join("dbus-1/system.d"),
                    &state.join("dbus-system.d"),
                    None,
                )?;
                units::install_dbus_services(
                    units,
                    &state.join("dbus-system-services"),
                    &state.join("dbus-system.d"),
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
            if opts.loop_devices {
                binds.push("--bind=/dev/loop-control".into());
                // Growing a mounted ext4 (resize2fs online) needs it; nspawn drops it.
                binds.push("--capability=CAP_SYS_RESOURCE".into());
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
            // v1 controllers only for a host that boots hybrid (not one nspawn boots unified).
            let v1_controllers = opts.v1_controllers && os.nspawn_env().is_empty();
            let cgroups = create_host_cgroups(&name, v1_controllers)?;
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
                // Its systemd would pause its mount table watch for the rest of a second
                // after 5 changes, which a boot makes: the agents' containers get the same
                // (hyperhive's plan/nspawn.rs says why).
                .arg("--setenv=SYSTEMD_DEFAULT_MOUNT_RATE_LIMIT_BURST=25")
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
        if opts.v1_controllers && crate::cgroups::has_v1_controllers() && os.nspawn_env().is_empty()
        {
            host.writable_v1_controllers()?;
        }
        if opts.loop_devices {
            host.make_loop_nodes()?;
        }
        if opts.start_daemon {
            host.check_daemon()?;
        }
        Ok(host)
    }

    /// See [`Options::v1_controllers`]. The cgroup mounts nspawn made read-only are
    /// remounted writable in the container's mount namespace; systemd, re-executed, then
    /// realizes units in them (units started before keep their cgroups until restarted).
    fn writable_v1_controllers(&self) -> Result<()> {
        for c in crate::cgroups::V1_CONTROLLERS {
            let target = format!("/sys/fs/cgroup/{c}");
            let out = Command::new("nsenter")
                .args(["-t", &self.leader.to_string(), "-m", "--"])
                .args(["mount", "-o", "remount,rw,bind", &target])
                .output()
                .context("running nsenter mount")?;
            if !out.status.success() {
                bail!(
                    "remounting {target} writable in test host {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        self.run_ok(&["systemctl", "daemon-reexec"]);
        Ok(())
    }

    /// See [`Options::loop_devices`]: block nodes 7:N in the container's `/dev`.
    fn make_loop_nodes(&self) -> Result<()> {
        let script = format!(
            "for i in $(seq 0 {}); do [ -e /dev/loop$i ] || mknod /dev/loop$i b 7 $i || exit 1; done",
            crate::LOOP_NODES - 1
        );
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .output()
            .context("running nsenter mknod")?;
        if !out.status.success() {
            bail!(
                "making loop device nodes in test host {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
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
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            // A signal to this test process (e.g. a child's SIGCHLD) is no
                            // reason to give up the boot: the loop's own deadline bounds it.
                            | io::ErrorKind::Interrupted
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

    /// The major version of the systemd inside (`systemctl --version`), for tests whose
    /// oracle differs between versions.
    pub fn systemd_version(&self) -> u32 {
        self.run_ok(&["systemctl", "--version"])
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("systemd's version")
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
        console_tail(&self.state, lines)
    }

    fn write_record(&self, owned: bool) -> Result<()> {
        write_record(
            &self.state,
            &self.name,
            self.nspawn.id(),
            self.leader,
            owned,
            &self.bus_address(),
        )
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if std::thread::panicking() && self.leader != 0 {
            self.print_daemon_journal();
        }
        // Killing the container's PID 1 tears down its whole PID namespace, nested agent
        // containers included; nspawn then exits on its own.
        if let Some(fd) = &self.leader_fd {
            let _ = fd.send_signal(Signal::KILL);
        } else if let Ok(fd) = PidFd::open(self.nspawn.id()) {
            // Boot failed before PID 1 was found: SIGKILL to nspawn could orphan a container,
            // SIGTERM makes nspawn stop it. (Unreaped child: the PID cannot be reused.)
            let _ = fd.send_signal(Signal::TERM);
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
