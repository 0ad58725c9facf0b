//! `hivectl approvals`, `approve`, `deny`: through the daemon, which owns the store and
//! checks the caller (root or hive-admin).

use std::io::Write;

use anyhow::Result;

use super::daemon_call::again;
use super::render::{format_usec, table};
use super::Target;
use crate::api::{ApprovalRecord, ApprovalShown};
use crate::store::{ApprovalKind, IN_PLACE_NOTE};

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
    /// Show one approval in full before deciding: who asked and when, the spec it would
    /// make (as a diff), the unit properties that would change, and the host checks
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub show: Option<i64>,
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

/// Every approval the listing selects, a page at a time, handed to `each` as the pages
/// come; no reply holds more than one page.
async fn pages(
    manager: &crate::api::client::ManagerProxy<'_>,
    all: bool,
    mut each: impl FnMut(Vec<ApprovalRecord>) -> Result<()>,
) -> Result<()> {
    let mut after = 0;
    loop {
        let (rows, next) = again(|| manager.list_approvals_page(all, after, 0)).await?;
        each(rows)?;
        if next <= after {
            return Ok(());
        }
        after = next;
    }
}

pub async fn list(t: &Target, a: ListArgs) -> Result<()> {
    let manager = t.manager().await?;
    if let Some(id) = a.show {
        return show(&manager, id, a.json).await;
    }
    if a.json {
        // Streamed: one page in memory at a time, however many rows there are.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut first = true;
        write!(out, "[")?;
        pages(&manager, a.all, |rows| {
            for item in to_json(&rows).as_array().into_iter().flatten() {
                write!(out, "{}\n  ", if first { "" } else { "," })?;
                serde_json::to_writer(&mut out, item)?;
                first = false;
            }
            Ok(())
        })
        .await?;
        writeln!(out, "{}]", if first { "" } else { "\n" })?;
        out.flush()?;
        return Ok(());
    }
    let mut records = Vec::new();
    pages(&manager, a.all, |rows| {
        records.extend(rows);
        Ok(())
    })
    .await?;
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
        // An in-place change says so in place of plain "applied", before the admin's note.
        let in_place = IN_PLACE_NOTE;
        let (status, note) = match r.note.strip_suffix(in_place) {
            Some(rest) if r.status == "applied" => (in_place, rest.trim_end_matches("; ")),
            _ => (r.status.as_str(), r.note.as_str()),
        };
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(": {note}")
        };
        println!("approval {} of agent {}: {status}{note}", r.id, r.agent);
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

async fn show(manager: &crate::api::client::ManagerProxy<'_>, id: i64, json: bool) -> Result<()> {
    let text = again(|| manager.show_approval(id)).await?;
    let read = |e: serde_json::Error| anyhow::anyhow!("reading approval {id}: {e}");
    if json {
        let view: serde_json::Value = serde_json::from_str(&text).map_err(read)?;
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let view: ApprovalShown = serde_json::from_str(&text).map_err(read)?;
        print!("{}", render_view(&view));
    }
    Ok(())
}

/// A `tool_use` approval: what claude would run, exactly. A shell command is shown as the
/// command itself; any other tool's input as indented JSON.
fn render_tool_use(payload: &serde_json::Value) -> String {
    let tool = payload["tool"].as_str().unwrap_or("?");
    let input = &payload["input"];
    let mut out = format!("claude asks to use {tool}:\n");
    match input["command"].as_str() {
        Some(cmd) if tool == "Bash" => {
            for line in cmd.lines() {
                out.push_str(&format!("  $ {line}\n"));
            }
        }
        _ => {
            let pretty = serde_json::to_string_pretty(input).unwrap_or_default();
            for line in pretty.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out.push_str(
        "if approved: claude makes this one call; the spec does not change, nothing restarts\n",
    );
    out.push_str("if denied: claude is told no, with the note\n");
    out
}

/// The per-approval view as text: the record, the spec diff, then what `hivectl plan`
/// shows for the rebuild the approval would make (its renderer, unchanged).
pub fn render_view(v: &ApprovalShown) -> String {
    let usec = |t: i64| format_usec(u64::try_from(t).unwrap_or(0));
    let a = &v.approval;
    let mut out = format!(
        "approval {} ({}): {} asked by agent {} at {}\n",
        a.id,
        a.status,
        a.kind,
        a.agent,
        usec(a.created_at)
    );
    out.push_str(&format!("  request: {}\n", a.payload));
    if !a.decided_by.is_empty() {
        out.push_str(&format!(
            "  decided by {} at {}\n",
            a.decided_by,
            usec(a.decided_at)
        ));
    }
    if !a.note.is_empty() {
        out.push_str(&format!("  note: {}\n", a.note));
    }
    if let Some(refused) = &v.refused {
        out.push_str(&format!("  would be refused now: {refused}\n"));
        return out;
    }
    if ApprovalKind::parse(&a.kind) == Some(ApprovalKind::ToolUse) {
        out.push_str(&render_tool_use(&a.payload));
        return out;
    }
    out.push_str("spec diff:\n");
    for line in v.spec_diff.iter().flatten() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("host checks:\n");
    let Some(plan) = &v.plan else {
        return out;
    };
    for c in &plan.checks {
        out.push_str(&format!(
            "  {} {}: {}\n",
            c.verdict.as_str(),
            c.what,
            c.detail
        ));
    }
    // The rest as `hivectl plan` renders it: the headline and the property diff. Checks
    // are above in full (plan lists only those not ok); the unit listings stay in --json.
    let mut plan = plan.clone();
    plan.checks.clear();
    plan.units.clear();
    out.push_str("if approved:\n");
    out.push_str(&super::plan_reload::render_plans(std::slice::from_ref(
        &plan,
    )));
    out
}
