//! `hivectl start|stop|restart|rebuild|destroy`: one daemon call each.

use anyhow::Result;

use super::{BadInput, Target};
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
    Ok(AgentName::parse(raw).map_err(BadInput)?)
}

fn say(quiet: bool, line: String) {
    if !quiet {
        println!("{line}");
    }
}

pub async fn start(t: &Target, a: NameArg) -> Result<()> {
    let n = name(&a.name)?;
    let outcome = t.manager().await?.start_agent(n.as_str()).await?;
    let what = if outcome == "adopted" {
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
    t.manager().await?.stop_agent(n.as_str()).await?;
    say(
        a.quiet,
        format!("agent {n}: stopped ({})", n.container_unit()),
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

pub async fn destroy(t: &Target, a: DestroyArgs) -> Result<()> {
    let n = name(&a.name)?;
    t.manager()
        .await?
        .destroy_agent(n.as_str(), a.purge)
        .await?;
    let kept = if a.purge {
        "state and credentials deleted"
    } else {
        "state and credentials kept"
    };
    say(a.quiet, format!("agent {n}: destroyed, {kept}"));
    Ok(())
}
