//! What an admin sees of one approval before deciding (`hivectl approvals --show ID`,
//! D-Bus `ShowApproval`): who asked and when, the spec approving it would write (as a
//! diff of the spec files), and what `hivectl plan` would show for the rebuild — the host
//! checks, the units, and the diff of the container unit's properties. The D-Bus adapter
//! renders it (as JSON, docs/dbus-api.md).

use serde_json::Value;

use super::approvals::{requested_spec, Approvals};
use super::planner::Planner;
use super::preflight::{Check, Verdict};
use super::Error;
use crate::paths::Roots;
use crate::reconcile::view::AgentPlan;
use crate::spec::request::AgentRequest;
use crate::store::Approval;

/// One approval as an admin reads it before deciding.
#[derive(Debug, Clone)]
pub struct ApprovalView {
    pub approval: Approval,
    /// What approving it would do, or why the request would be refused now.
    pub outlook: Result<Outlook, String>,
}

/// What approving an approval would do.
#[derive(Debug, Clone)]
pub struct Outlook {
    /// The spec file now against the one approving would write, as [`line_diff`] shows it.
    pub spec_diff: Vec<String>,
    /// What `hivectl plan` would show for the rebuild; none for a `tool_use`, which
    /// changes no spec and rebuilds nothing.
    pub plan: Option<AgentPlan>,
}

/// The view of approval `id`. Reads only. A request that would be refused now (its
/// bind source became a symlink, the agent's spec changed under it) says why instead
/// of a plan.
pub(super) async fn show(
    approvals: &Approvals,
    roots: &Roots,
    planner: &Planner,
    id: i64,
) -> Result<ApprovalView, Error> {
    let a = approvals.get(id)?;
    if a.kind == crate::store::ApprovalKind::ToolUse {
        return Ok(ApprovalView {
            approval: a,
            outlook: Ok(Outlook {
                spec_diff: Vec::new(),
                plan: None,
            }),
        });
    }
    let (current, spec) = match requested_spec(roots, &a) {
        Ok(pair) => pair,
        Err(why) => {
            return Ok(ApprovalView {
                approval: a,
                outlook: Err(why),
            })
        }
    };
    let spec_diff = line_diff(&current.to_file().to_toml(), &spec.to_file().to_toml());
    let mut extra = Vec::new();
    if let Ok(req) = serde_json::from_str::<Value>(&a.payload)
        .map_err(|e| e.to_string())
        .and_then(|p| AgentRequest::parse(&p).map_err(String::from))
    {
        for entry in &req.bind {
            if let Ok(b) = entry.to_bind() {
                extra.push(Check {
                    what: "requested bind source".into(),
                    verdict: Verdict::Ok,
                    detail: format!(
                        "{}: exists, no symlink in its path, not a protected host path; \
                         bound {} at {}",
                        b.source.display(),
                        if b.readonly {
                            "read-only"
                        } else {
                            "read-write"
                        },
                        b.target.display()
                    ),
                });
            }
        }
    }
    let plan = planner.plan_spec(&spec, extra).await?;
    Ok(ApprovalView {
        approval: a,
        outlook: Ok(Outlook {
            spec_diff,
            plan: Some(plan),
        }),
    })
}

/// `old` and `new` line by line: lines only in `old` as `- …`, only in `new` as `+ …`,
/// shared ones as `  …`, in order (a longest-common-subsequence diff; spec files are a few
/// dozen lines).
pub fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_diff_marks_what_changes() {
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\nd\n"),
            ["  a", "- b", "+ B", "  c", "+ d"]
        );
        assert_eq!(line_diff("", "x"), ["+ x"]);
        assert_eq!(line_diff("x", "x"), ["  x"]);
    }
}
