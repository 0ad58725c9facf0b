//! `hivectl login`: Claude Code's own login flow (or another `claude` command an admin
//! names) run inside an agent's container, on a terminal machined allocated there, as a
//! transient unit of the container's own systemd. The terminal is handed to that systemd
//! as open files (`Standard*FileDescriptor=`, added by the daemon at the call: a plan
//! holds no file descriptors), not by its path: systemd 257 inside a user-namespaced
//! container failed to open the path it was given (ENOENT) where 252 did not. The admin's
//! terminal is relayed to it by hivectl; the credentials claude writes land in the agent's
//! own `/root/.claude`.

use super::harness_unit::{agent_env, runs_harness};
use super::{stamp, Host, Prop, UnitPlan};
use crate::plan::HARNESS_IN_CONTAINER;
use crate::spec::AgentSpec;

/// The unit inside the container: one login at a time per agent.
pub const LOGIN_UNIT: &str = "hive-login.service";

/// claude's arguments when the admin names none.
pub const DEFAULT_ARGS: [&str; 2] = ["auth", "login"];

/// A login left open is stopped after this long, so a forgotten terminal does not keep
/// a process of the admin's choosing running in the agent.
pub const LOGIN_MAX_USEC: u64 = 30 * 60 * 1_000_000;

/// Most arguments, and bytes per argument, an admin may hand claude.
const MAX_ARGS: usize = 16;
const MAX_ARG_LEN: usize = 256;

/// What an admin asked for, checked: the terminal type and claude's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub term: String,
    pub args: Vec<String>,
}

impl LoginRequest {
    /// `term` as the admin's `TERM` (empty: `dumb`), `args` as given (none: `auth login`).
    pub fn parse(term: &str, args: &[String]) -> Result<Self, String> {
        let term = if term.is_empty() { "dumb" } else { term };
        if term.len() > 64
            || !term
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        {
            return Err(format!(
                "TERM {:?} is not a terminal type (letters, digits, . _ + - only)",
                crate::spec::one_line(term)
            ));
        }
        if args.len() > MAX_ARGS {
            return Err(format!(
                "{} arguments for claude; at most {MAX_ARGS}",
                args.len()
            ));
        }
        for a in args {
            if a.len() > MAX_ARG_LEN || a.chars().any(char::is_control) {
                return Err(format!(
                    "argument {:?} for claude: at most {MAX_ARG_LEN} bytes and no control characters",
                    crate::spec::one_line(a)
                ));
            }
        }
        let args = match args.is_empty() {
            true => DEFAULT_ARGS.iter().map(|a| a.to_string()).collect(),
            false => args.to_vec(),
        };
        Ok(Self {
            term: term.to_owned(),
            args,
        })
    }
}

/// The login unit: `hive-harness claude-login ARGS`, with the environment the agent's
/// turns have (its PATH, its egress proxy) and its name on every journal line. Its
/// terminal is given when it is started.
pub fn login_unit(spec: &AgentSpec, host: &Host, req: &LoginRequest) -> UnitPlan {
    let name = &spec.name;
    let mut env = agent_env(spec, host);
    env.push(format!("TERM={}", req.term));
    let mut argv = vec![HARNESS_IN_CONTAINER.to_string(), "claude-login".into()];
    argv.push("--".into());
    argv.extend(req.args.iter().cloned());
    let mut properties = vec![
        (
            "Description".into(),
            Prop::Str(format!("claude login in agent {name} (hivectl login)")),
        ),
        ("Environment".into(), Prop::Strv(env)),
        ("RuntimeMaxUSec".into(), Prop::U64(LOGIN_MAX_USEC)),
        // Gone once it ends, failed or not, so the next login can use the name.
        ("CollectMode".into(), Prop::Str("inactive-or-failed".into())),
    ];
    properties.extend(runs_harness(name.as_str(), argv));
    stamp(LOGIN_UNIT.into(), None, properties, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_arguments_is_claudes_own_login() {
        let r = LoginRequest::parse("xterm-256color", &[]).unwrap();
        assert_eq!(r.args, args(&["auth", "login"]));
        assert_eq!(r.term, "xterm-256color");
        assert_eq!(LoginRequest::parse("", &[]).unwrap().term, "dumb");
    }

    #[test]
    fn bad_terminal_types_and_arguments_are_refused() {
        assert!(LoginRequest::parse("xterm\n", &[]).is_err());
        assert!(LoginRequest::parse("a b", &[]).is_err());
        assert!(LoginRequest::parse("x", &args(&["auth", "lo\x1bgin"])).is_err());
        assert!(LoginRequest::parse("x", &vec!["a".to_string(); 17]).is_err());
        assert!(LoginRequest::parse("x", &["a".repeat(257)]).is_err());
        assert!(LoginRequest::parse("x", &args(&["auth", "status", "--json"])).is_ok());
    }

    #[test]
    fn the_login_unit_runs_claude_on_the_terminal_with_the_agents_environment() {
        let file = crate::spec::SpecFile::from_toml(
            "root = \"/\"\nvolatile = \"yes\"\n[claude]\n",
            "test",
        )
        .unwrap();
        let name = crate::spec::AgentName::parse("alice").unwrap();
        let spec = AgentSpec::validate(&name, &file).unwrap();
        let host = crate::plan::test_host();
        let req = LoginRequest::parse("xterm", &args(&["auth", "login", "--console"])).unwrap();
        let plan = login_unit(&spec, &host, &req);
        assert_eq!(plan.unit, "hive-login.service");
        let prop = |k: &str| {
            plan.properties
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {k}"))
        };
        let Prop::Exec(exec) = prop("ExecStart") else {
            panic!()
        };
        assert_eq!(
            exec[0].argv[1..],
            args(&["claude-login", "--", "auth", "login", "--console"])
        );
        let Prop::Strv(env) = prop("Environment") else {
            panic!()
        };
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert!(env.contains(&"HIVE_AGENT=alice".to_string()));
        // A claude agent on its private network reaches the API through its proxy, and so
        // does its login.
        assert!(env.iter().any(|e| e.starts_with("HTTPS_PROXY=")), "{env:?}");
    }
}
