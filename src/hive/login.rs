//! `hivectl login`: claude's own login flow in a Claude Code agent's container, on a
//! terminal machined allocates inside it. The daemon hands the terminal's master to the
//! admin's hivectl, which relays it; claude writes the agent's own credentials
//! (`/root/.claude`, never shared). See `crate::plan::login`.

use std::os::fd::{AsFd, OwnedFd};

use super::harness_supervisor::HarnessSupervisor;
use super::specs::load_spec;
use super::Error;
use crate::journal::fields;
use crate::plan::login::{login_unit, LoginRequest, LOGIN_UNIT};
use crate::plan::Host;
use crate::spec::AgentName;
use crate::systemd::Systemd;

/// Starts `hive-login.service` in the agent's container on a new terminal there and
/// returns the terminal's master. Nothing is started when the agent is not a running
/// Claude Code agent, or a login is already running in it.
pub(super) async fn login(
    host: &Host,
    sd: &Systemd,
    harness: &HarnessSupervisor,
    name: &AgentName,
    term: &str,
    args: &[String],
) -> Result<OwnedFd, Error> {
    let req = LoginRequest::parse(term, args)
        .map_err(|e| Error::InvalidArgument(format!("agent {name}: {e}")))?;
    let spec = load_spec(&host.roots, name)?;
    if spec.claude.is_none() {
        return Err(Error::InvalidArgument(format!(
            "agent {name} is not a Claude Code agent (its spec has no [claude]; create it with --claude)"
        )));
    }
    let up = sd
        .status(&name.container_unit())
        .await
        .map_err(Error::failed)?
        .is_some_and(|s| s.is_up());
    if !up {
        return Err(Error::Failed(format!(
            "agent {name}: its container {} is not running; start it first (hivectl start {name})",
            name.container_unit()
        )));
    }
    let in_container = harness
        .container_systemd(name)
        .await
        .map_err(|e| Error::failed(e.context(format!("agent {name}"))))?;
    // machined opens the terminal in the container's own namespaces (its devpts);
    // the unit gets the terminal's other end as open files, no path to resolve.
    let (master, tty) = sd
        .open_machine_pty(&name.machine())
        .await
        .map_err(|e| Error::failed(e.context(format!("agent {name}"))))?;
    let peer = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
    )
    .map_err(|e| Error::Failed(format!("agent {name}: opening the terminal {tty}: {e}")))?;
    let plan = login_unit(&spec, host, &req);
    let started = in_container.start_transient_on(&plan, peer.as_fd()).await;
    // The container's systemd holds its own copy now; ours would keep the terminal
    // open after claude is gone.
    drop(peer);
    if let Err(e) = started {
        if crate::systemd::anyhow_error_name(&e).as_deref() == Some(crate::systemd::UNIT_EXISTS) {
            return Err(Error::Failed(format!(
                "agent {name}: a login is already running in it ({LOGIN_UNIT}); finish that one first"
            )));
        }
        return Err(Error::failed(e.context(format!(
            "agent {name}: starting {LOGIN_UNIT} in its container"
        ))));
    }
    crate::journal::emit(
        crate::journal::Event::AgentLogin,
        Some(name),
        Some(LOGIN_UNIT),
        &[(fields::LOGIN_ARGS, req.args.join(" "))],
        &format!(
            "agent {name}: an admin runs `claude {}` in its container ({LOGIN_UNIT} on {tty})",
            req.args.join(" ")
        ),
    );
    Ok(master)
}
