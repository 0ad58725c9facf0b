//! `hivectl logs`: the agent's story from journald, with one match. Daemon events carry
//! HIVE_AGENT=; the container unit and the harness unit add it with LogExtraFields=, and
//! the container's journal is linked to the host's, so `-m` merges it in.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Result;

use super::{BadInput, Target};
use crate::journal::fields;
use crate::spec::AgentName;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Agent name
    pub name: String,
    /// Follow: keep printing new entries
    #[arg(short, long)]
    pub follow: bool,
    /// Show the most recent N entries
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<u32>,
    /// journalctl output mode
    #[arg(short, long, value_name = "MODE", value_parser = OUTPUT_MODES)]
    pub output: Option<String>,
    /// Show entries since this time (journalctl syntax, e.g. "10 min ago")
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Do not pipe output into a pager
    #[arg(long)]
    pub no_pager: bool,
    /// Add explanatory catalog text (journalctl -x)
    #[arg(short = 'x', long)]
    pub catalog: bool,
}

/// journalctl's output modes (systemd 252); anything else is refused here, in one line,
/// before journalctl runs.
pub const OUTPUT_MODES: [&str; 15] = [
    "short",
    "short-full",
    "short-iso",
    "short-iso-precise",
    "short-precise",
    "short-monotonic",
    "short-delta",
    "short-unix",
    "verbose",
    "export",
    "json",
    "json-pretty",
    "json-sse",
    "json-seq",
    "cat",
];

/// The journalctl arguments for an agent's entries: everything carrying HIVE_AGENT=
/// (daemon events, the container's and the harness's output), plus systemd's own lines
/// about the agent's units — PID 1's "Main process exited, code=killed, status=9/KILL",
/// "Failed with result", "Scheduled restart job" — for the container unit on the host and
/// for hive-harness.service in the agent's container (its hostname is the machine name).
pub fn journal_args(name: &AgentName, a: &LogsArgs) -> Vec<String> {
    let mut args = vec!["--merge".to_string()];
    if a.follow {
        args.push("--follow".into());
    }
    if let Some(n) = a.lines {
        args.push(format!("--lines={n}"));
    }
    if let Some(o) = &a.output {
        args.push(format!("--output={o}"));
    }
    if let Some(s) = &a.since {
        args.push(format!("--since={s}"));
    }
    if a.no_pager {
        args.push("--no-pager".into());
    }
    if a.catalog {
        args.push("--catalog".into());
    }
    args.push(fields::assign(fields::AGENT, name));
    args.extend([
        "+".into(),
        "_PID=1".into(),
        format!("UNIT={}", name.container_unit()),
        "+".into(),
        "_PID=1".into(),
        format!("UNIT={}", crate::plan::HARNESS_UNIT),
        format!("_HOSTNAME={}", name.machine()),
    ]);
    args
}

/// Whether `name` is or was an agent here: a spec, a unit, a state dir (destroy keeps it)
/// or journal entries. A typo matches none, and is refused like every other verb does.
fn known_here(roots: &crate::paths::Roots, name: &AgentName) -> bool {
    if roots.spec_paths(name).iter().any(|p| p.exists()) || roots.agent_dir(name).exists() {
        return true;
    }
    let unit_loaded = Command::new("systemctl")
        .args(["show", "-P", "LoadState", &name.container_unit()])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "loaded");
    unit_loaded
        || Command::new("journalctl")
            .args(["--quiet", "--no-pager", "-n", "1", "-o", "cat"])
            .arg(fields::assign(fields::AGENT, name))
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
}

/// Execs journalctl, here or (with -H) on the remote host as `ssh -xT HOST journalctl …`
/// with the same arguments.
pub fn run(t: &Target, roots: &super::RootArgs, a: LogsArgs) -> Result<()> {
    let name = AgentName::parse(&a.name).map_err(|e| BadInput(e.to_string()))?;
    if t.remote().is_none() && !known_here(&roots.roots()?, &name) {
        return Err(BadInput(format!(
            "no agent {name}: no spec, no unit {}, no state dir and no journal entries",
            name.container_unit()
        ))
        .into());
    }
    let args = journal_args(&name, &a);
    let err = match t.remote() {
        None => Command::new("journalctl").args(args).exec(),
        Some(host) => {
            let mut argv = vec!["journalctl".to_string()];
            argv.extend(args);
            let ssh = super::remote::Host::ssh_program();
            let err = Command::new(&ssh).args(host.command_args(&argv)).exec();
            return Err(anyhow::anyhow!(
                "running {} for {}: {err}",
                ssh.to_string_lossy(),
                host.destination()
            ));
        }
    };
    Err(anyhow::anyhow!("running journalctl: {err}"))
}

/// The agent's last `n` journal lines, for `hivectl status`; empty if journalctl fails.
pub fn recent(name: &AgentName, n: u32) -> Vec<String> {
    let a = LogsArgs {
        name: name.to_string(),
        follow: false,
        lines: Some(n),
        output: Some("short-iso".into()),
        since: None,
        no_pager: true,
        catalog: false,
    };
    match Command::new("journalctl")
        .arg("--quiet")
        .args(journal_args(name, &a))
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_match_for_the_whole_story() {
        let name = AgentName::parse("alice").unwrap();
        let a = LogsArgs {
            name: "alice".into(),
            follow: true,
            lines: Some(20),
            output: Some("json".into()),
            since: Some("1 hour ago".into()),
            no_pager: true,
            catalog: true,
        };
        assert_eq!(
            journal_args(&name, &a),
            vec![
                "--merge",
                "--follow",
                "--lines=20",
                "--output=json",
                "--since=1 hour ago",
                "--no-pager",
                "--catalog",
                "HIVE_AGENT=alice",
                "+",
                "_PID=1",
                "UNIT=hive-agent-alice.service",
                "+",
                "_PID=1",
                "UNIT=hive-harness.service",
                "_HOSTNAME=h-alice",
            ]
        );
    }
}
