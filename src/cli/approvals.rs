//! `hivectl approvals`, `approve`, `deny`: through the daemon, which owns the store and
//! checks the caller (root or hive-admin).

use anyhow::Result;

use super::render::{format_usec, table};
use super::Target;
use crate::api::ApprovalRecord;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Every approval ever requested, not only pending ones
    #[arg(long)]
    pub all: bool,
    /// Print JSON (an array of approvals) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Do not print the header and footer
    #[arg(long)]
    pub no_legend: bool,
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The approval's id (see hivectl approvals)
    pub id: i64,
    /// A note kept with the decision
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Print the approval as JSON
    #[arg(long)]
    pub json: bool,
}

/// `--json` form: the records, with each payload as JSON rather than a string of it.
fn to_json(records: &[ApprovalRecord]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("records serialize");
            if let Ok(payload) = serde_json::from_str::<serde_json::Value>(&r.payload) {
                v["payload"] = payload;
            }
            v
        })
        .collect();
    serde_json::Value::Array(items)
}

pub async fn list(t: &Target, a: ListArgs) -> Result<()> {
    let records = t.manager().await?.list_approvals(a.all).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&records))?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.agent.clone(),
                r.kind.clone(),
                r.status.clone(),
                format_usec(r.created_at as u64),
                r.payload.clone(),
            ]
        })
        .collect();
    let header = ["ID", "AGENT", "KIND", "STATUS", "REQUESTED", "REQUEST"];
    print!(
        "{}",
        table(if a.no_legend { None } else { Some(&header) }, &rows)
    );
    if !a.no_legend {
        let what = if a.all {
            "approvals"
        } else {
            "pending approvals"
        };
        println!("\n{} {what} listed.", records.len());
    }
    Ok(())
}

fn report(r: &ApprovalRecord, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(std::slice::from_ref(r))[0])?
        );
    } else {
        let note = if r.note.is_empty() {
            String::new()
        } else {
            format!(": {}", r.note)
        };
        println!("approval {} of agent {}: {}{note}", r.id, r.agent, r.status);
    }
    Ok(())
}

pub async fn approve(t: &Target, a: DecideArgs) -> Result<()> {
    let r = t
        .manager()
        .await?
        .approve(a.id, a.note.as_deref().unwrap_or(""))
        .await?;
    report(&r, a.json)?;
    if r.status == "failed" {
        anyhow::bail!(
            "approval {} was approved but applying it failed: {}",
            r.id,
            r.note
        );
    }
    Ok(())
}

pub async fn deny(t: &Target, a: DecideArgs) -> Result<()> {
    let r = t
        .manager()
        .await?
        .deny(a.id, a.note.as_deref().unwrap_or(""))
        .await?;
    report(&r, a.json)
}
