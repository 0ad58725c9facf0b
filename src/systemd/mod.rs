//! The only code that calls systemd. Everything it sends comes from a [`crate::plan`];
//! errors are matched by D-Bus error name, never by message text.

pub mod container_bus;
pub mod fd_store;
mod jobs;
pub mod proxies;
mod state;
mod unit_status;

pub use state::{ActiveState, JobResult, LoadState, SubState};
pub use unit_status::UnitStatus;

/// The pattern of every agent's container unit.
pub const AGENT_UNITS: &str = "hive-agent-*.service";

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::Connection;

use crate::plan::{Prop, UnitPlan};
use proxies::{MachineProxy, MachinedProxy, ManagerProxy};

pub const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
pub const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";
pub const NO_SUCH_MACHINE: &str = "org.freedesktop.machine1.NoSuchMachine";
pub const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

/// Object paths of units live under this.
pub const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// The unit name an object path stands for (`sd_bus_path_decode`: `_2d` is `-`).
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let enc = path.strip_prefix(UNIT_PATH_PREFIX)?;
    let bytes = enc.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The D-Bus error name of a failed method call, if that is what `err` is.
pub fn error_name(err: &zbus::Error) -> Option<&str> {
    match err {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        zbus::Error::FDO(fdo) => match **fdo {
            zbus::fdo::Error::UnknownObject(_) => Some("org.freedesktop.DBus.Error.UnknownObject"),
            _ => None,
        },
        _ => None,
    }
}

/// Like [`error_name`], looking through anyhow's context chain.
pub fn anyhow_error_name(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|e| {
        e.downcast_ref::<zbus::Error>()
            .and_then(error_name)
            .map(str::to_owned)
    })
}

/// A connection to systemd (and machined) on one bus.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    machined: MachinedProxy<'static>,
    /// Job tracking (one JobRemoved match rule): set up on a manager connection at once; on
    /// a container's, at its first job, so that a connection only used to check and
    /// watch a harness (each agent's, at every daemon start) costs no match rule for it.
    jobs: Option<Arc<tokio::sync::OnceCell<Arc<jobs::Jobs>>>>,
    /// Bound on waiting for a job, for a systemd we do not trust to finish one: the one
    /// inside an agent's container. The host's systemd enforces its own unit timeouts.
    job_timeout: Option<Duration>,
    /// A container connection's duplicate, for systemd's fd store at the daemon's exit
    /// ([`fd_store`]); dropped with the connection.
    _held: Option<fd_store::Held>,
}

impl Systemd {
    /// For read-only callers (hivectl list/status): no subscription, no job tracking.
    pub async fn reader(conn: &Connection) -> Result<Self> {
        Ok(Self {
            conn: conn.clone(),
            manager: ManagerProxy::new(conn).await?,
            machined: MachinedProxy::new(conn).await?,
            jobs: None,
            job_timeout: None,
            _held: None,
        })
    }

    /// The systemd inside an agent's container, reached from inside its namespaces (see
    /// [`container_bus`]). Every method call and every job wait on it is bounded by
    /// `timeout`: the agent controls that bus and may leave it silent.
    pub async fn container(&self, machine: &str, timeout: Duration) -> Result<Self> {
        let leader = self.machine_leader(machine).await?.ok_or_else(|| {
            anyhow!("container {machine} is not running (machined has no such machine)")
        })?;
        let stream = container_bus::connect(machine, leader, timeout).await?;
        let held = fd_store::hold(&stream);
        let connect = async {
            stream.set_nonblocking(true)?;
            let stream = tokio::net::UnixStream::from_std(stream)?;
            let conn = zbus::connection::Builder::unix_stream(stream)
                .method_timeout(timeout)
                .build()
                .await?;
            let mut sd = Self::subscribed(&conn, false).await?;
            sd.job_timeout = Some(timeout);
            sd._held = held;
            anyhow::Ok(sd)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r.with_context(|| format!("talking to systemd inside container {machine}")),
            Err(_) => Err(anyhow!(
                "talking to systemd inside container {machine}: no answer within {timeout:?}"
            )),
        }
    }

    /// The host PID of a registered machine's init process, or `None` if there is no
    /// such machine.
    pub async fn machine_leader(&self, machine: &str) -> Result<Option<u32>> {
        let path = match self.machined.get_machine(machine).await {
            Ok(p) => p,
            Err(e) if error_name(&e) == Some(NO_SUCH_MACHINE) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("looking up machine {machine}")),
        };
        let m = MachineProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let leader = m
            .leader()
            .await
            .with_context(|| format!("reading the leader of machine {machine}"))?;
        Ok(Some(leader))
    }

    /// For the daemon: subscribes, and tracks job completion so callers can wait for the
    /// jobs they queue.
    pub async fn manager(conn: &Connection) -> Result<Self> {
        Self::subscribed(conn, true).await
    }

    /// Subscribed, with job tracking set up now (`eager_jobs`) or at the first job.
    async fn subscribed(conn: &Connection, eager_jobs: bool) -> Result<Self> {
        let mut sd = Self::reader(conn).await?;
        let tracker = match eager_jobs {
            true => Some(jobs::Jobs::spawn(&sd.manager).await?),
            false => None,
        };
        sd.jobs = Some(Arc::new(tokio::sync::OnceCell::new_with(tracker)));
        match sd.manager.subscribe().await {
            Ok(()) => {}
            // Another user of this connection subscribed already: that is what we want.
            Err(e) if error_name(&e) == Some(ALREADY_SUBSCRIBED) => {}
            Err(e) => return Err(e).context("subscribing to systemd's signals"),
        }
        Ok(sd)
    }

    /// A longer bound on job waits, for a job known to take long (a system switch).
    pub fn set_job_timeout(&mut self, timeout: Duration) {
        if self.job_timeout.is_some() {
            self.job_timeout = Some(timeout);
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Creates the planned transient unit and waits for its start job to finish.
    /// `Err` carries the D-Bus error (e.g. UnitExists) for the caller to branch on.
    pub async fn start_transient(&self, plan: &UnitPlan) -> Result<()> {
        self.start_with(plan, None).await
    }

    /// [`Self::start_transient`], with the unit's standard input, output and error the
    /// open file `stdio` (e.g. a terminal), passed to systemd over the bus as
    /// `Standard*FileDescriptor=`.
    pub async fn start_transient_on(&self, plan: &UnitPlan, stdio: BorrowedFd<'_>) -> Result<()> {
        self.start_with(plan, Some(stdio)).await
    }

    async fn start_with(&self, plan: &UnitPlan, stdio: Option<BorrowedFd<'_>>) -> Result<()> {
        let mut values = to_values(&plan.properties);
        if let Some(fd) = stdio {
            for key in [
                "StandardInputFileDescriptor",
                "StandardOutputFileDescriptor",
                "StandardErrorFileDescriptor",
            ] {
                values.push((key, Value::from(zbus::zvariant::Fd::from(fd))));
            }
        }
        let aux_values: Vec<(&str, Vec<(&str, Value<'_>)>)> = plan
            .aux
            .iter()
            .map(|a| (a.unit.as_str(), to_values(&a.properties)))
            .collect();
        let aux: Vec<(&str, &[(&str, Value<'_>)])> = aux_values
            .iter()
            .map(|(unit, props)| (*unit, props.as_slice()))
            .collect();
        self.job_tracker().await?;
        let job = self
            .manager
            .start_transient_unit(&plan.unit, "fail", &values, &aux)
            .await
            .with_context(|| format!("creating transient unit {}", plan.unit))?;
        self.expect_done(&plan.unit, "start", job).await
    }

    /// Stops a unit and waits for it; a unit that does not exist is already stopped.
    pub async fn stop(&self, unit: &str) -> Result<()> {
        self.job_tracker().await?;
        match self.manager.stop_unit(unit, "replace").await {
            Ok(job) => self.expect_done(unit, "stop", job).await,
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("stopping unit {unit}")),
        }
    }

    /// Restarts a loaded unit with its current properties and waits for it.
    pub async fn restart(&self, unit: &str) -> Result<()> {
        self.job_tracker().await?;
        let job = self
            .manager
            .restart_unit(unit, "replace")
            .await
            .with_context(|| format!("restarting unit {unit}"))?;
        self.expect_done(unit, "restart", job).await
    }

    /// Clears a failed state so a transient unit can be garbage-collected and created anew.
    pub async fn reset_failed(&self, unit: &str) -> Result<()> {
        match self.manager.reset_failed_unit(unit).await {
            Ok(()) => Ok(()),
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("resetting failed unit {unit}")),
        }
    }

    /// The unit's state, or `None` if systemd has no such unit loaded.
    pub async fn status(&self, unit: &str) -> Result<Option<UnitStatus>> {
        Ok(self
            .properties(unit)
            .await?
            .map(|all| UnitStatus::from_properties(unit, &all)))
    }

    /// Every property of a unit (its Unit interface, and its type's for a service or a
    /// socket), or `None` if systemd has no such unit loaded.
    pub async fn properties(&self, unit: &str) -> Result<Option<HashMap<String, OwnedValue>>> {
        let path = match self.manager.get_unit(unit).await {
            Ok(p) => p,
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("looking up unit {unit}")),
        };
        match self.properties_at(unit, &path).await {
            Ok(s) => Ok(Some(s)),
            // Unloaded between GetUnit and GetAll.
            Err(e)
                if anyhow_error_name(&e).as_deref()
                    == Some("org.freedesktop.DBus.Error.UnknownObject") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A unit's `ActiveState` from its Unit interface alone (any unit type, a mount
    /// included), or `None` if systemd has no such unit loaded.
    pub async fn active_state(&self, unit: &str) -> Result<Option<ActiveState>> {
        match self.unit_property(unit, "ActiveState").await? {
            Some(v) => Ok(Some(ActiveState::from(
                String::try_from(v).context("ActiveState is no string")?,
            ))),
            None => Ok(None),
        }
    }

    /// A unit's `InvocationID` (hex, as [`UnitStatus`] has it; empty for a unit never
    /// started), or `None` if systemd has no such unit loaded. One property where
    /// [`Self::status`] reads them all.
    pub async fn invocation_id(&self, unit: &str) -> Result<Option<String>> {
        match self.unit_property(unit, "InvocationID").await? {
            Some(v) => Ok(Some(unit_status::invocation_hex(
                &Vec::<u8>::try_from(v).context("InvocationID is no byte array")?,
            ))),
            None => Ok(None),
        }
    }

    /// One property of a unit's Unit interface, or `None` if systemd has no such unit.
    async fn unit_property(&self, unit: &str, name: &str) -> Result<Option<OwnedValue>> {
        let path = match self.manager.get_unit(unit).await {
            Ok(p) => p,
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("looking up unit {unit}")),
        };
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")?
            .path(path)?
            .build()
            .await?;
        let iface =
            zbus::names::InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");
        match props.get(iface, name).await {
            Ok(v) => Ok(Some(v)),
            Err(zbus::fdo::Error::UnknownObject(_)) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {name} of {unit}")),
        }
    }

    /// systemd's `DefaultTasksMax=`: what a unit that sets no TasksMax gets.
    pub async fn default_tasks_max(&self) -> Result<u64> {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")?
            .path("/org/freedesktop/systemd1")?
            .build()
            .await?;
        let iface = zbus::names::InterfaceName::from_static_str_unchecked(
            "org.freedesktop.systemd1.Manager",
        );
        let v = props
            .get(iface, "DefaultTasksMax")
            .await
            .context("reading systemd's DefaultTasksMax")?;
        u64::try_from(v).context("DefaultTasksMax is no u64")
    }

    async fn properties_at(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
    ) -> Result<HashMap<String, OwnedValue>> {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")?
            .path(path.clone())?
            .build()
            .await?;
        let read = |iface: &'static str| {
            let props = props.clone();
            async move {
                let name = zbus::names::InterfaceName::from_static_str_unchecked(iface);
                props
                    .get_all(name)
                    .await
                    .with_context(|| format!("reading {iface} properties of {unit}"))
            }
        };
        let typed = if unit.ends_with(".socket") {
            "org.freedesktop.systemd1.Socket"
        } else {
            "org.freedesktop.systemd1.Service"
        };
        let (u, s) = tokio::try_join!(read("org.freedesktop.systemd1.Unit"), read(typed))?;
        let mut all: HashMap<String, OwnedValue> = u;
        all.extend(s);
        Ok(all)
    }

    /// Units matching a glob, e.g. `hive-agent-*.service`, in any state systemd still holds.
    pub async fn list(&self, pattern: &str) -> Result<Vec<proxies::UnitListEntry>> {
        self.manager
            .list_units_by_patterns(&[], &[pattern])
            .await
            .with_context(|| format!("listing units matching {pattern}"))
    }

    /// Whether machined still has a machine of that name registered.
    pub async fn machine_registered(&self, machine: &str) -> Result<bool> {
        match self.machined.get_machine(machine).await {
            Ok(_) => Ok(true),
            Err(e) if error_name(&e) == Some(NO_SUCH_MACHINE) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("looking up machine {machine}")),
        }
    }

    /// A pseudo terminal inside a running machine, allocated by machined in the machine's
    /// own namespaces (as `machinectl shell` gets one): the master's fd, and the slave's
    /// path inside the machine.
    pub async fn open_machine_pty(&self, machine: &str) -> Result<(std::os::fd::OwnedFd, String)> {
        let (fd, path) = self
            .machined
            .open_machine_pty(machine)
            .await
            .with_context(|| format!("opening a terminal in machine {machine}"))?;
        Ok((fd.into(), path))
    }

    /// Forgets a machine whose processes are gone (a crash leaves it registered).
    pub async fn unregister_machine(&self, machine: &str) -> Result<()> {
        match self.machined.unregister_machine(machine).await {
            Ok(()) => Ok(()),
            Err(e) if error_name(&e) == Some(NO_SUCH_MACHINE) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("unregistering machine {machine}")),
        }
    }

    /// The job tracker, set up if it is not yet. Called before a job is queued: its match
    /// rule must be in place before the job can end.
    async fn job_tracker(&self) -> Result<&Arc<jobs::Jobs>> {
        let cell = self
            .jobs
            .as_ref()
            .ok_or_else(|| anyhow!("internal: job tracking not enabled on this connection"))?;
        cell.get_or_try_init(|| jobs::Jobs::spawn(&self.manager))
            .await
    }

    async fn expect_done(&self, unit: &str, verb: &str, job: OwnedObjectPath) -> Result<()> {
        let jobs = self.job_tracker().await?;
        let result = match self.job_timeout {
            None => jobs.wait(job).await,
            Some(t) => tokio::time::timeout(t, jobs.wait(job))
                .await
                .map_err(|_| anyhow!("{verb} job for {unit}: no result within {t:?}"))?,
        };
        if result == JobResult::Done {
            return Ok(());
        }
        let detail = match self.status(unit).await {
            Ok(Some(s)) => format!(
                " (unit {}/{}, result {}, exit {} status {})",
                s.active_state,
                s.sub_state,
                s.result,
                s.exec_main_code_name(),
                s.exec_main_status
            ),
            _ => String::new(),
        };
        Err(anyhow!("{verb} job for {unit} finished with result '{result}'{detail}; see journalctl -u {unit}"))
    }
}

/// A plan's properties as `StartTransientUnit` takes them.
fn to_values(props: &[(String, Prop)]) -> Vec<(&str, Value<'static>)> {
    props
        .iter()
        .map(|(k, v)| (k.as_str(), to_value(v)))
        .collect()
}

/// Plan values in the D-Bus shapes systemd expects.
fn to_value(p: &Prop) -> Value<'static> {
    match p {
        Prop::Str(s) => Value::from(s.clone()),
        Prop::Bool(b) => Value::from(*b),
        Prop::U64(n) => Value::from(*n),
        Prop::U32(n) => Value::from(*n),
        Prop::Strv(v) => Value::from(v.clone()),
        Prop::Exec(cmds) => Value::from(
            cmds.iter()
                .map(|c| (c.path.clone(), c.argv.clone(), c.ignore_failure))
                .collect::<Vec<_>>(),
        ),
        Prop::Bytes(v) => Value::from(v.clone()),
        Prop::ExitStatus(codes) => Value::from((codes.clone(), Vec::<i32>::new())),
        Prop::Pairs(pairs) => Value::from(pairs.clone()),
        Prop::AddressFamilies(families) => Value::from((true, families.clone())),
        Prop::IpPrefixes(nets) => Value::from(
            nets.iter()
                .map(|(addr, prefix)| match addr {
                    // AF_INET, AF_INET6
                    std::net::IpAddr::V4(a) => (2i32, a.octets().to_vec(), u32::from(*prefix)),
                    std::net::IpAddr::V6(a) => (10i32, a.octets().to_vec(), u32::from(*prefix)),
                })
                .collect::<Vec<_>>(),
        ),
        // Recursive (MS_REC): what is mounted below the source comes along.
        Prop::Binds(binds) => Value::from(
            binds
                .iter()
                .map(|(src, dst)| (src.clone(), dst.clone(), false, MS_REC))
                .collect::<Vec<_>>(),
        ),
    }
}

/// `MS_REC` from <sys/mount.h>.
const MS_REC: u64 = 16384;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_decode() {
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/hive_2dagent_2dalice_2eservice")
                .as_deref(),
            Some("hive-agent-alice.service")
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/hive_2dharness_2eservice")
                .as_deref(),
            Some("hive-harness.service")
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/bad_2"),
            None
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/job/12"),
            None
        );
    }
}
