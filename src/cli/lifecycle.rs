//! `hivectl start|stop|restart|rebuild|destroy`: one daemon call each.

use anyhow::Result;

use super::{BadInput, Target};
use crate::hive::{Created, Outcome};
use crate::spec::AgentName;

#[derive(Debug, clap::Args)]
pub struct NameArg {
    /// Agent name
    pub name: String,
    /// Print nothing on success
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct DestroyArgs {
    /// Agent name
    pub name: String,
    /// Also delete the agent's state and credentials (cannot be undone)
    #[arg(long)]
    pub purge: bool,
    /// Print nothing on success
    #[arg(long, short)]
    pub quiet: bool,
}

fn name(raw: &str) -> Result<AgentName> {
    Ok(AgentName::parse(raw).map_err(|e| BadInput(e.to_string()))?)
}

fn say(quiet: bool, line: String) {
    if !quiet {
        println!("{line}");
    }
}

pub async fn start(t: &Target, a: NameArg) -> Result<()> {
    let n = name(&a.name)?;
    let outcome = t.manager().await?.start_agent(n.as_str()).await?;
    let what = if Created::parse(&outcome) == Some(Created::Done(Outcome::Adopted)) {
        "already running"
    } else {
        "started"
    };
    say(
        a.quiet,
        format!("agent {n}: {what} ({})", n.container_unit()),
    );
    Ok(())
}

pub async fn stop(t: &Target, a: NameArg) -> Result<()> {
    let n = name(&a.name)?;
    let conn = t.connect().await?;
    // Asked before the stop, from systemd: was there anything to stop?
    let was_up = match crate::systemd::Systemd::reader(&conn).await {
        Ok(sd) => sd
            .status(&n.container_unit())
            .await
            .ok()
            .map(|u| u.is_some_and(|u| u.is_up())),
        Err(_) => None,
    };
    crate::api::client::ManagerProxy::new(&conn)
        .await?
        .stop_agent(n.as_str())
        .await?;
    let what = if was_up == Some(false) {
        "already stopped"
    } else {
        "stopped"
    };
    say(
        a.quiet,
        format!("agent {n}: {what} ({})", n.container_unit()),
    );
    Ok(())
}

pub async fn restart(t: &Target, a: NameArg) -> Result<()> {
    let n = name(&a.name)?;
    t.manager().await?.restart_agent(n.as_str()).await?;
    say(
        a.quiet,
        format!("agent {n}: restarted ({})", n.container_unit()),
    );
    Ok(())
}

pub async fn rebuild(t: &Target, a: NameArg) -> Result<()> {
    let n = name(&a.name)?;
    t.manager().await?.rebuild_agent(n.as_str()).await?;
    say(
        a.quiet,
        format!("agent {n}: rebuilt from its spec ({})", n.container_unit()),
    );
    Ok(())
}

pub async fn destroy(t: &Target, roots: &super::RootArgs, a: DestroyArgs) -> Result<()> {
    let n = name(&a.name)?;
    // What only this machine's disk can tell (not with -H).
    let local = match t.remote() {
        None => Some(roots.roots()?),
        Some(_) => None,
    };
    let destroyed = t.manager().await?.destroy_agent(n.as_str(), a.purge).await;
    if let (Err(e), Some(roots)) = (&destroyed, &local) {
        let gone = matches!(
            crate::systemd::error_name(e),
            Some(name) if name.ends_with(".NoSuchAgent")
        );
        let dir = roots.agent_dir(&n);
        if gone && !a.purge && dir.is_dir() {
            return Err(BadInput(format!(
                "no agent {n}: it was destroyed, its state and credentials remain in {} \
                 (hivectl destroy {n} --purge deletes them)",
                dir.display()
            ))
            .into());
        }
    }
    destroyed?;
    let kept = if a.purge {
        "state and credentials deleted"
    } else {
        "state and credentials kept"
    };
    say(a.quiet, format!("agent {n}: destroyed, {kept}"));
    if let Some(declared) = local.map(|r| r.declared_spec(&n)).filter(|p| p.exists()) {
        eprintln!(
            "hivectl: warning: agent {n} is declared in {}: the next reload (or hive-c0re start) \
             creates it again; remove that file (or set autostart = false) to keep it gone",
            declared.display()
        );
    }
    Ok(())
}
