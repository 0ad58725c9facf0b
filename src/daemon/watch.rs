//! Reacts to what systemd reports about agent units. For now: when systemd restarts a
//! crashed container by itself (Restart=on-failure), the harness unit, which was transient
//! inside the old container, is gone; re-create it.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use zbus::Connection;

use super::Hive;
use crate::spec::AgentName;
use crate::systemd::proxies::ManagerProxy;

pub async fn spawn(conn: &Connection, hive: Arc<Hive>) -> Result<()> {
    let manager = ManagerProxy::new(conn).await?;
    let mut jobs = manager
        .receive_job_removed()
        .await
        .context("watching JobRemoved for agent units")?;
    tokio::spawn(async move {
        while let Some(signal) = jobs.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.result != "done" {
                continue;
            }
            let Some(name) = AgentName::from_container_unit(args.unit) else {
                continue;
            };
            let hive = hive.clone();
            // heal_harness takes the agent's lock, so a create or rebuild in progress
            // finishes first and this then finds the harness in place.
            tokio::spawn(async move {
                if let Err(e) = hive.heal_harness(&name).await {
                    log::warn!("agent {name}: re-creating its harness: {e:#}");
                }
            });
        }
    });
    Ok(())
}
