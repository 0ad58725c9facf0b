//! `hivectl status`'s text, in the spirit of `systemctl status`: a function of the
//! gathered [`AgentStatus`], section by section.

use super::render::format_usec;
use super::status::{AgentStatus, UidRange};

/// Text for `hivectl status`, in the spirit of `systemctl status`: the unit, the
/// agent's bounds, its crashes, where it runs, then what it did.
pub fn render_status(st: &AgentStatus) -> String {
    let mut out = String::new();
    render_unit(st, &mut out);
    if let Some(b) = &st.bounds {
        out.push_str(&super::bounds::render(b));
    }
    if let Some(d) = &st.disk {
        out.push_str(&super::bounds::render_disk(d));
    }
    if st.host.is_none() {
        render_crashes(st, &mut out);
    }
    render_where(st, &mut out);
    render_doings(st, &mut out);
    out
}

/// The container unit as systemd holds it.
fn render_unit(st: &AgentStatus, out: &mut String) {
    let (dot, state) = match &st.container {
        Some(u) => (
            if u.is_failed() {
                "×"
            } else if u.is_up() {
                "●"
            } else {
                "○"
            },
            format!(
                "{} ({}) since {}",
                u.active_state,
                u.sub_state,
                format_usec(u.state_change_timestamp)
            ),
        ),
        None => ("○", "inactive (no unit loaded)".to_string()),
    };
    out.push_str(&format!("{dot} {} - hyperhive agent\n", st.name));
    out.push_str(&format!("      Unit: {}\n", st.unit));
    out.push_str(&format!("    Active: {state}\n"));
    if let Some(u) = &st.container {
        out.push_str(&format!(
            "    Result: {}   Main: {} (code={}, status={})   Restarts: {}\n",
            u.result,
            u.main_pid,
            u.exec_main_code_name(),
            u.exec_main_status,
            u.n_restarts
        ));
        out.push_str(&format!("Invocation: {}\n", u.invocation_id));
    }
}

/// The last crash of the container and of the harness (read from the local journal).
fn render_crashes(st: &AgentStatus, out: &mut String) {
    let line = |what: &str, c: &super::crash::Crash| {
        format!(
            "{what} at {}: {} (result {}, invocation {})",
            format_usec(c.at_usec),
            c.how(),
            c.result,
            c.invocation_id
        )
    };
    match (&st.last_crash, &st.harness_last_crash) {
        (None, None) => out.push_str("Last crash: none recorded\n"),
        (c, h) => {
            let mut lines = c.iter().map(|c| line("container", c));
            let mut rest = h.iter().map(|h| line("harness", h));
            let first = lines.next().or_else(|| rest.next()).unwrap_or_default();
            out.push_str(&format!("Last crash: {first}\n"));
            for l in lines.chain(rest) {
                out.push_str(&format!("            {l}\n"));
            }
        }
    }
}

/// Where the agent runs: its user namespace, system, network, harness, machine, and its
/// spec and dirs (or the host it is on).
fn render_where(st: &AgentStatus, out: &mut String) {
    match st.user_namespace {
        Some(UidRange { host_uid: 0, .. }) => {
            out.push_str("   User NS: none: container root is host root (private_users = false)\n")
        }
        Some(r) => out.push_str(&format!(
            "   User NS: container root is host uid {} ({} ids)\n",
            r.host_uid, r.count
        )),
        None => {}
    }
    if let Some(system) = &st.system {
        out.push_str(&format!(
            "    System: {} (GC root {})\n",
            system.running.display(),
            system.gc_root.display()
        ));
    }
    if let Some(n) = &st.network {
        out.push_str(&super::network_status::render(n));
    }
    match (&st.host, &st.harness) {
        (Some(host), _) => out.push_str(&format!(
            "   Harness: not read over -H (systemctl -H {host}/{} status {})\n",
            st.machine,
            crate::plan::HARNESS_UNIT
        )),
        (None, Some(h)) => out.push_str(&format!(
            "   Harness: {} ({}), result {}, {} restarts\n",
            h.active_state, h.sub_state, h.result, h.n_restarts
        )),
        (None, None) => out.push_str("   Harness: -\n"),
    }
    out.push_str(&format!(
        "   Machine: {} ({})\n",
        st.machine,
        if st.machine_registered {
            "registered"
        } else {
            "not registered"
        }
    ));
    if let Some(host) = &st.host {
        // The spec and the dirs are on that host's disk; its journal is one ssh away.
        out.push_str(&format!("      Host: {host}\n"));
    } else {
        let spec = st
            .spec
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!("      Spec: {spec}\n"));
        out.push_str(&format!("     State: {}\n", st.state_dir.display()));
        out.push_str(&format!("     Creds: {}\n", st.credentials_dir.display()));
        out.push_str(&format!("   Runtime: {}\n", st.runtime_dir.display()));
    }
}

/// What the agent did and waits for: approvals, its last turn, its spending, its log.
fn render_doings(st: &AgentStatus, out: &mut String) {
    let pending = match &st.pending_approvals {
        Some(ids) if ids.is_empty() => "none".to_string(),
        Some(ids) => {
            ids.iter()
                .map(|id| format!("#{id}"))
                .collect::<Vec<_>>()
                .join(" ")
                + " (hivectl approvals)"
        }
        None => "unknown (daemon down, or not root/hive-admin)".to_string(),
    };
    out.push_str(&format!(" Approvals: {pending}\n"));
    if let Some(turn) = &st.last_turn {
        out.push_str(&format!(" Last turn: {}\n", turn.render()));
    }
    if let Some(spent) = &st.spent_today {
        out.push_str(&format!(
            "     Spent: ${:.4} today ({}, UTC) in {} turn{}\n",
            spent.usd,
            spent.day,
            spent.turns,
            if spent.turns == 1 { "" } else { "s" }
        ));
    }
    if let Some(host) = &st.host {
        out.push_str(&format!(
            "       Log: hivectl -H {host} logs {} -n 20\n",
            st.name
        ));
    }
    if !st.recent_log.is_empty() {
        out.push('\n');
        for line in &st.recent_log {
            out.push_str(line);
            out.push('\n');
        }
    }
}
