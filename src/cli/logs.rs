//! `hivectl logs`: the agent's story from journald, with one match. Daemon events carry
//! HIVE_AGENT=; the container unit and the harness unit add it with LogExtraFields=, and
//! the container's journal is linked to the host's, so `-m` merges it in.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Result;

use super::{BadInput, Target};
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
    /// journalctl output mode (short, short-iso, json, verbose, cat, …)
    #[arg(short, long, value_name = "MODE")]
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

/// The journalctl arguments for an agent's entries.
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
    args.push(format!("HIVE_AGENT={name}"));
    args
}

/// Execs journalctl, here or (with -H) on the remote host as `ssh -xT HOST journalctl …`
/// with the same arguments.
pub fn run(t: &Target, a: LogsArgs) -> Result<()> {
    let name = AgentName::parse(&a.name).map_err(BadInput)?;
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
                "HIVE_AGENT=alice"
            ]
        );
    }
}
