//! Typed proxies for the few systemd and machined calls hyperhive makes.
//! Signatures follow org.freedesktop.systemd1(5) and org.freedesktop.machine1(5).

use zbus::proxy;

use super::state::{ActiveState, SubState};
use zbus::zvariant::{ObjectPath, OwnedFd, OwnedObjectPath, Value};

/// One row of `ListUnitsByPatterns` (`a(ssssssouso)`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, zbus::zvariant::Type)]
pub struct UnitListEntry {
    pub name: String,
    pub description: String,
    pub load_state: String,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    /// The unit this one follows (device units), or "".
    pub following: String,
    pub path: OwnedObjectPath,
    /// 0 when no job is queued for the unit.
    pub job_id: u32,
    pub job_type: String,
    pub job_path: OwnedObjectPath,
}

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub trait Manager {
    /// Without a subscriber systemd emits no unit PropertiesChanged (testhost.md).
    fn subscribe(&self) -> zbus::Result<()>;

    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitListEntry>>;

    /// `active` is true when a daemon-reload starts, false when it is done.
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.machine1.Manager",
    default_service = "org.freedesktop.machine1",
    default_path = "/org/freedesktop/machine1",
    gen_blocking = false
)]
pub trait Machined {
    fn get_machine(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn unregister_machine(&self, name: &str) -> zbus::Result<()>;
    /// A pseudo terminal allocated inside the machine: its master on the host, and the
    /// slave's path as the machine sees it.
    #[zbus(name = "OpenMachinePTY")]
    fn open_machine_pty(&self, name: &str) -> zbus::Result<(OwnedFd, String)>;
}

/// One registered machine; hyperhive reads only its init process.
#[proxy(
    interface = "org.freedesktop.machine1.Machine",
    default_service = "org.freedesktop.machine1",
    gen_blocking = false
)]
pub trait Machine {
    #[zbus(property)]
    fn leader(&self) -> zbus::Result<u32>;
}
