//! Reaching the system bus *inside* an agent's container the way `systemctl -M` does:
//! a short-lived helper process joins the container's user and mount namespaces, connects
//! to `/run/dbus/system_bus_socket` there, hands the connected socket back over a socket
//! pair and exits.
//!
//! Why not a path on the host: every path into the container (a bind of its `/run/dbus`,
//! `/proc/<leader>/root/...`) is resolved by the daemon, as host root, through
//! directories the agent controls; a symlink planted there sends the daemon to the host's
//! own bus or to a neighbour's. Resolved inside the container's mount namespace and root,
//! a symlink can only lead to something the agent already owns.
//!
//! Why a helper process: `setns()` into a user namespace is refused to a multi-threaded
//! process, and the daemon runs a thread pool. The helper is the running binary itself
//! (`/proc/self/exe`) started with [`HELPER_ARG`]; it is single-threaded when it joins.
//!
//! Why join the user namespace: the container's bus daemon judges its peer by the
//! credentials of the `connect()` call. Host root is unmapped in an agent's user
//! namespace and would be an unprivileged stranger there; after joining and becoming
//! uid 0 inside, the helper connects as the container's root, which is what it takes to
//! create and stop units in it.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::thread::ThreadNameSpaceType;
use tokio::io::AsyncReadExt as _;

/// First argument that turns hive-c0re or hivectl into the namespace-joining helper.
/// Both binaries check for it before parsing their command line.
pub const HELPER_ARG: &str = "__hyperhive-container-bus";

/// The container's system bus, as the container itself sees it.
const BUS_IN_CONTAINER: &str = "/run/dbus/system_bus_socket";

/// How long the helper may take to join and connect. A container whose bus listens but
/// never accepts (its backlog full) would otherwise block the connect forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected, authenticated socket to the system bus inside the container whose init
/// process (machined's `Leader`) is `leader`. Bounded by `timeout` from start to finish;
/// on expiry the helper is killed.
pub async fn connect(machine: &str, leader: u32, timeout: Duration) -> Result<UnixStream> {
    let what = || format!("reaching container {machine}'s bus (leader PID {leader})");
    let fds = LeaderFds::open(leader).with_context(what)?;
    let (ours, theirs) = UnixStream::pair().with_context(what)?;
    send_fds(&ours, &[fds.pidfd.as_fd(), fds.root.as_fd()]).with_context(what)?;
    // The leader must still be alive now that its root is open: then the PID was not
    // reused between asking machined and opening /proc/<pid>/root.
    fds.still_alive().with_context(what)?;

    let mut child = tokio::process::Command::new("/proc/self/exe")
        .arg(HELPER_ARG)
        .arg(if fds.own_userns {
            "mount"
        } else {
            "user+mount"
        })
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("{}: starting the namespace helper", what()))?;
    let mut stderr = child.stderr.take().expect("piped");

    // A zero timeout means "none" to the kernel and is refused by std.
    let timeout = timeout.max(Duration::from_millis(10));
    ours.set_read_timeout(Some(timeout)).with_context(what)?;
    let received =
        tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || recv_fd(&ours))).await;
    let mut why = String::new();
    let outcome = match received {
        Ok(Ok(Ok(fd))) => Ok(fd),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(join)) => Err(anyhow!("the receiving task failed: {join}")),
        Err(_) => Err(anyhow!("timed out after {timeout:?}")),
    };
    if outcome.is_err() {
        let _ = child.start_kill();
    }
    // The helper has exited or been killed: its stderr ends, so this read is bounded.
    let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut why)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    let fd = outcome.map_err(|e| {
        let why = why.lines().last().unwrap_or("").trim();
        if why.is_empty() {
            anyhow!("{}: {e:#}", what())
        } else {
            anyhow!("{}: {why}", what())
        }
    })?;
    Ok(UnixStream::from(fd))
}

/// What the helper needs of the leader, opened by the daemon (which can still see the
/// host's /proc) and passed to the helper as file descriptors.
struct LeaderFds {
    pidfd: OwnedFd,
    root: OwnedFd,
    /// The container shares the daemon's user namespace (`private_users = false`):
    /// joining it again would fail, and there is nothing to gain.
    own_userns: bool,
}

impl LeaderFds {
    fn open(leader: u32) -> Result<Self> {
        let pid = rustix::process::Pid::from_raw(leader as i32)
            .ok_or_else(|| anyhow!("PID {leader} is not a process"))?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .context("opening a pidfd of the container's leader")?;
        let root = rustix::fs::open(
            format!("/proc/{leader}/root"),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .context("opening the container's root directory")?;
        let theirs = std::fs::metadata(format!("/proc/{leader}/ns/user"))
            .context("reading the container's user namespace")?;
        let ours =
            std::fs::metadata("/proc/self/ns/user").context("reading our own user namespace")?;
        Ok(Self {
            pidfd,
            root,
            own_userns: (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()),
        })
    }

    fn still_alive(&self) -> Result<()> {
        let mut fds = [rustix::event::PollFd::new(
            &self.pidfd,
            rustix::event::PollFlags::IN,
        )];
        let ready = rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default()))
            .context("checking the container's leader")?;
        if ready > 0 {
            bail!("the container's leader exited while its bus was being reached");
        }
        Ok(())
    }
}

fn send_fds(socket: impl AsFd, fds: &[BorrowedFd<'_>]) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        bail!("too many descriptors to pass");
    }
    rustix::net::sendmsg(
        &socket,
        &[IoSlice::new(b"h")],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .context("passing descriptors to the namespace helper")?;
    Ok(())
}

/// Receives up to `N` descriptors sent with one byte of data.
fn recv_fds<const N: usize>(socket: impl AsFd) -> Result<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        &socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .context("receiving descriptors")?;
    if got.bytes == 0 {
        bail!("the other side closed without passing a descriptor");
    }
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if fds.is_empty() || fds.len() > N {
        bail!("expected up to {N} descriptors, got {}", fds.len());
    }
    Ok(fds)
}

fn recv_fd(socket: &UnixStream) -> Result<OwnedFd> {
    let mut fds = recv_fds::<1>(socket)?;
    Ok(fds.remove(0))
}

/// If this process was started as the helper, runs it and returns its exit code.
pub fn run_if_helper() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != HELPER_ARG {
        return None;
    }
    let mode = args.next().unwrap_or_default();
    Some(helper_main(&mode.to_string_lossy()))
}

/// The helper's whole life: receive the leader's pidfd and root, join, connect, hand the
/// socket back. Runs single-threaded in a fresh process; `mode` is `user+mount` or `mount`.
pub fn helper_main(mode: &str) -> ExitCode {
    match helper(mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn helper(mode: &str) -> Result<()> {
    let spaces = match mode {
        "user+mount" => ThreadNameSpaceType::USER | ThreadNameSpaceType::MOUNT,
        "mount" => ThreadNameSpaceType::MOUNT,
        other => bail!("unknown namespace mode {other:?}"),
    };
    let stdin = std::io::stdin();
    let channel = stdin.as_fd();
    let fds = recv_fds::<2>(channel)?;
    let [pidfd, root] = <[OwnedFd; 2]>::try_from(fds)
        .map_err(|_| anyhow!("expected the leader's pidfd and root"))?;
    rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), spaces)
        .context("joining the container's namespaces")?;
    rustix::process::fchdir(&root).context("entering the container's root")?;
    rustix::process::chroot(".").context("chroot into the container's root")?;
    if spaces.contains(ThreadNameSpaceType::USER) {
        // Joined as the unmapped host root; become the container's root, whose
        // credentials the bus sees at connect().
        match rustix::thread::set_thread_groups(&[]) {
            // Refused where the namespace denies setgroups(); the gid below still holds.
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e).context("dropping supplementary groups"),
        }
        let (uid, gid) = (
            rustix::process::Uid::from_raw(0),
            rustix::process::Gid::from_raw(0),
        );
        rustix::thread::set_thread_res_gid(gid, gid, gid).context("becoming gid 0 inside")?;
        rustix::thread::set_thread_res_uid(uid, uid, uid).context("becoming uid 0 inside")?;
    }
    let bus = UnixStream::connect(BUS_IN_CONTAINER)
        .with_context(|| format!("connecting to {BUS_IN_CONTAINER} inside the container"))?;
    send_fds(channel, &[bus.as_fd()])
}
