//! The daemon's connections to its agents' containers, carried across its own restart in
//! systemd's file descriptor store (`FileDescriptorStoreMax=` on hive-c0re.service).
//!
//! Why: the daemon holds one connection to each running agent's container bus (the
//! harness's crash watch). Closing it wakes that container's bus daemon, its systemd (which
//! loses a subscriber) and every client following `NameOwnerChanged` (logind). A daemon
//! restart closed all of them at the instant the old daemon exited, and that herd — on the
//! same CPUs — held up systemd's reaping of the old daemon and the start of the new one: a
//! restart with 100 agents waited ~100 ms between the old daemon's last entry and the new
//! one's fork, against ~15 ms with none. So the stopping daemon hands a duplicate of each
//! connection to systemd, its own copies close without the peers noticing, and the next
//! daemon closes the duplicates once it is ready and has adopted its agents.
//!
//! Nothing is read from them: they are closed, never used. They are sockets to buses the
//! agents control, so they are taken only as what they must be (AF_UNIX stream sockets),
//! close-on-exec, under the one name this module gives them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, Weak};

/// The name the stored connections carry in the store (`FDNAME=`, `LISTEN_FDNAMES`).
const NAME: &str = "container-bus";

/// At most this many descriptors per message to systemd (the kernel's SCM_MAX_FD is 253).
const PER_MESSAGE: usize = 250;

/// Every container connection this process holds, as a duplicate that lives exactly as
/// long as the connection's [`Held`].
static HELD: Mutex<Vec<Weak<OwnedFd>>> = Mutex::new(Vec::new());

/// The stored connections of the previous daemon, kept open until [`close_inherited`].
static INHERITED: Mutex<Vec<UnixStream>> = Mutex::new(Vec::new());

/// A duplicate of one container connection, registered for the hand-over at exit; closed
/// with the connection (its owner drops both together).
#[derive(Clone)]
pub struct Held(#[allow(dead_code)] Arc<OwnedFd>);

/// Registers `stream` (a connection about to be handed to zbus) for the hand-over. `None`
/// if it cannot be duplicated (out of descriptors): the connection then simply closes at
/// exit, as it would without the store.
pub fn hold(stream: &UnixStream) -> Option<Held> {
    let dup = stream.as_fd().try_clone_to_owned().ok()?;
    let held = Arc::new(dup);
    let mut all = HELD.lock().expect("held connections");
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(&held));
    Some(Held(held))
}

/// At the daemon's exit: hands every container connection still open to systemd's store.
/// Where the store is off (`FileDescriptorStoreMax=0`, or not under systemd) systemd closes
/// them, which is what the exit would have done. Returns how many were handed over.
pub fn hand_over() -> usize {
    let held: Vec<Arc<OwnedFd>> = HELD
        .lock()
        .expect("held connections")
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let mut handed = 0;
    for chunk in held.chunks(PER_MESSAGE) {
        let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|fd| fd.as_fd()).collect();
        let state = [
            sd_notify::NotifyState::FdStore,
            sd_notify::NotifyState::FdName(NAME),
        ];
        match sd_notify::notify_with_fds(false, &state, &fds) {
            Ok(()) => handed += fds.len(),
            Err(e) => {
                log::warn!("handing container connections to systemd's fd store: {e}");
                break;
            }
        }
    }
    handed
}

/// At the daemon's start, before any other thread runs (it reads and clears the
/// environment): takes the previous daemon's stored connections, and has systemd drop its
/// own copies of them, so only ours keep them open until [`close_inherited`]. Descriptors
/// passed under another name are left alone. Returns how many it took.
pub fn take_inherited() -> usize {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut taken = Vec::new();
    for (idx, name) in names.iter().enumerate().take(fds.len()) {
        if name != NAME {
            continue;
        }
        match fds.take_custom::<UnixStream>(
            idx,
            i32::from(rustix::net::AddressFamily::UNIX.as_raw()),
            rustix::net::SocketType::STREAM.as_raw() as i32,
            "unix stream socket",
        ) {
            Ok(Some(stream)) => taken.push(stream),
            Ok(None) => {}
            Err(e) => log::warn!("a stored container connection: {e}"),
        }
    }
    std::env::remove_var("LISTEN_FDNAMES");
    if !taken.is_empty() {
        let state = [
            sd_notify::NotifyState::FdStoreRemove,
            sd_notify::NotifyState::FdName(NAME),
        ];
        if let Err(e) = sd_notify::notify(false, &state) {
            log::warn!("emptying systemd's fd store: {e}");
        }
    }
    let n = taken.len();
    *INHERITED.lock().expect("inherited connections") = taken;
    n
}

/// Closes the previous daemon's connections: after the start-up has adopted every agent
/// and checked its harness (each has its own connection again by then).
pub fn close_inherited() -> usize {
    let taken = std::mem::take(&mut *INHERITED.lock().expect("inherited connections"));
    taken.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_connection_is_handed_over_only_while_its_owner_keeps_it() {
        let (a, _b) = UnixStream::pair().unwrap();
        let held = hold(&a).unwrap();
        let live = |fd: &Arc<OwnedFd>| {
            HELD.lock()
                .unwrap()
                .iter()
                .filter_map(Weak::upgrade)
                .any(|h| Arc::ptr_eq(&h, fd))
        };
        assert!(live(&held.0));
        let kept = held.0.clone();
        drop(held);
        // Our own clone keeps it registered; once the last owner is gone it is not.
        assert!(live(&kept));
        let weak = Arc::downgrade(&kept);
        drop(kept);
        assert!(weak.upgrade().is_none());
    }
}
