//! Who may call what: the caller's uid and groups as the bus daemon vouches for them.
//! The D-Bus policy (units/dbus-1) is the first lock, these checks the second.

use zbus::message::Header;
use zbus::Connection;

use super::Error;

/// The group whose members may see and decide approvals (units/sysusers.d).
pub const ADMIN_GROUP: &str = "hive-admin";

/// The caller's uid and supplementary groups, as the bus daemon knows them. Only the
/// bus's word counts: the caller's /proc entry is the caller's to change (a setgid exec,
/// a pid reused), so a bus that does not pass groups on leaves a non-root caller with none.
async fn caller(
    conn: &Connection,
    header: &Header<'_>,
    what: &str,
) -> Result<(u32, Vec<u32>), Error> {
    let sender = header
        .sender()
        .ok_or_else(|| Error::AccessDenied(format!("{what}: caller has no bus name")))?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let creds = dbus
        .get_connection_credentials(zbus::names::BusName::from(sender.to_owned()))
        .await
        .map_err(zbus::Error::from)?;
    let uid = creds.unix_user_id().ok_or_else(|| {
        Error::AccessDenied(format!("{what}: the bus did not say who the caller is"))
    })?;
    let groups = creds.unix_group_ids().cloned().unwrap_or_default();
    Ok((uid, groups))
}

/// Only root may create, start, stop or destroy agents; the D-Bus policy says the same,
/// this is the second lock.
pub(super) async fn require_root(
    conn: &Connection,
    header: &Header<'_>,
    what: &str,
) -> Result<(), Error> {
    let (uid, _) = caller(conn, header, what).await?;
    if uid == 0 {
        Ok(())
    } else {
        Err(Error::AccessDenied(format!(
            "{what}: only root may do this (caller uid {uid})"
        )))
    }
}

/// Root and members of hive-admin may see and decide approvals. Returns who it was, for
/// the record.
pub(super) async fn require_admin(
    conn: &Connection,
    header: &Header<'_>,
    what: &str,
) -> Result<String, Error> {
    let (uid, groups) = caller(conn, header, what).await?;
    if uid == 0 {
        return Ok("uid 0".into());
    }
    match admin_gid() {
        Some(gid) if groups.contains(&gid) => Ok(format!("uid {uid}")),
        _ => Err(Error::AccessDenied(format!(
            "{what}: only root and members of {ADMIN_GROUP} may do this (caller uid {uid})"
        ))),
    }
}

/// The gid of [`ADMIN_GROUP`], looked up through NSS (getgrnam_r), so groups from LDAP,
/// sssd or systemd-userdb count as /etc/group's do.
fn admin_gid() -> Option<u32> {
    match nix::unistd::Group::from_name(ADMIN_GROUP) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        Ok(None) => None,
        Err(e) => {
            log::warn!("looking up group {ADMIN_GROUP}: {e}");
            None
        }
    }
}
