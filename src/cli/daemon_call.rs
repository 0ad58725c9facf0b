//! Calls to hive-c0re that a daemon restart does not break.
//!
//! While the daemon is away (restarting, killed and not yet restarted by systemd, stopped)
//! the bus itself holds a call to org.hyperhive.Hive1 and has systemd start
//! hive-c0re.service: D-Bus activation (units/dbus-1/system-services). The bus bounds that
//! wait (its service_start_timeout, 25 s by default) and answers an error if the daemon
//! does not come. Nothing to do here for that, except not to ask the bus first whether
//! the name has an owner.
//!
//! What the bus cannot hide is a daemon that dies while serving a call (kill -9, a
//! crash): the bus answers NoReply. A stopping daemon answers what it is serving before it
//! exits (serve.rs), so this is only a crash's doing. Reads are asked again, at most
//! [`ATTEMPTS`] times in all, and reach the next daemon the same way. A verb that changes
//! something is not: the next daemon's startup reconcile finishes or cleanly undoes what
//! the cut one was doing (the failpoint tests prove each step), and a repeat racing it
//! would make that outcome depend on timing; hivectl says the call was cut and where to
//! look.
//!
//! Reads that only add to what systemd says (`list` on another host, `status`'s pending
//! approvals) do not start a daemon an admin stopped: they pass NO_AUTO_START and do
//! without the daemon's part when no one owns the name.

use std::future::Future;

use zbus::proxy::MethodFlags;

use crate::api::client::ManagerProxy;
use crate::systemd::error_name;

/// Tries of one call in all, across daemons that die under it.
pub const ATTEMPTS: u32 = 3;

/// The bus's answer when the daemon disconnected while serving the call; the bus's reply
/// timeout says NoReply too, but with another message, and is not a reason to ask again.
pub fn daemon_vanished(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, detail, _) => {
            name.as_str() == "org.freedesktop.DBus.Error.NoReply"
                && detail
                    .as_deref()
                    .is_some_and(|d| d.contains("disconnected"))
        }
        _ => false,
    }
}

/// Runs `call`, and again (at most [`ATTEMPTS`] in all) while the daemon dies under it.
/// Only for reads.
pub async fn again<T, F, Fut>(mut call: F) -> zbus::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = zbus::Result<T>>,
{
    let mut tries = 1;
    loop {
        match call().await {
            Err(e) if daemon_vanished(&e) && tries < ATTEMPTS => tries += 1,
            done => return done,
        }
    }
}

/// Whether no one owns the daemon's name: the error a NO_AUTO_START call gets then.
pub fn daemon_absent(e: &zbus::Error) -> bool {
    matches!(
        error_name(e),
        Some(
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
        )
    )
}

/// A read that does not start the daemon: NO_AUTO_START, so the bus answers ServiceUnknown
/// at once when no one owns the name.
pub async fn read_if_up<R>(
    manager: &ManagerProxy<'_>,
    method: &str,
    body: &(impl serde::Serialize + zbus::zvariant::DynamicType),
) -> zbus::Result<R>
where
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    manager
        .inner()
        .call_with_flags(method, MethodFlags::NoAutoStart.into(), body)
        .await?
        .ok_or_else(|| zbus::Error::Failure(format!("{method}: no reply")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::names::OwnedErrorName;

    fn err(name: &str, detail: &str) -> zbus::Error {
        let msg = zbus::Message::method_call("/", "M")
            .unwrap()
            .build(&())
            .unwrap();
        zbus::Error::MethodError(
            OwnedErrorName::try_from(name).unwrap(),
            Some(detail.into()),
            msg,
        )
    }

    #[test]
    fn only_a_daemon_that_disconnected_is_asked_again() {
        assert!(daemon_vanished(&err(
            "org.freedesktop.DBus.Error.NoReply",
            "Message recipient disconnected from message bus without replying"
        )));
        assert!(!daemon_vanished(&err(
            "org.freedesktop.DBus.Error.NoReply",
            "Did not receive a reply. Possible causes include: ..."
        )));
        assert!(!daemon_vanished(&err(
            "org.hyperhive.Hive1.Error.Failed",
            "disconnected"
        )));
    }

    #[tokio::test]
    async fn again_stops_after_attempts_and_at_the_first_other_answer() {
        let vanished = || {
            err(
                "org.freedesktop.DBus.Error.NoReply",
                "Message recipient disconnected from message bus without replying",
            )
        };
        let mut n = 0;
        let r: zbus::Result<()> = again(|| {
            n += 1;
            std::future::ready(Err(vanished()))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n, ATTEMPTS);
        let mut n = 0;
        let r = again(|| {
            n += 1;
            std::future::ready(if n == 1 { Err(vanished()) } else { Ok(n) })
        })
        .await;
        assert_eq!(r.unwrap(), 2);
    }

    #[test]
    fn a_refused_activation_says_why_in_one_line() {
        let (code, msg) = crate::cli::classify(&anyhow::Error::from(err(
            "org.freedesktop.systemd1.UnitMasked",
            "Unit hive-c0re.service is masked.",
        )));
        assert_eq!(code, crate::cli::EXIT_FAILED);
        assert!(
            msg.contains("masked") && msg.contains("systemctl unmask hive-c0re"),
            "{msg}"
        );
        let (_, msg) = crate::cli::classify(&anyhow::Error::from(err(
            "org.freedesktop.DBus.Error.TimedOut",
            "Activation of org.hyperhive.Hive1 timed out",
        )));
        assert!(
            msg.contains("could not be started: Activation of org.hyperhive.Hive1 timed out"),
            "{msg}"
        );
    }
}
