//! Spec `ports` → `hive-ports-<name>.service` on the host: `hive-c0re port-forward`, which
//! listens on `/run/hyperhive/<name>/port-<PORT>.sock` for each published port and
//! carries each connection to `127.0.0.1:<PORT>` inside the agent's own network
//! namespace (src/ports.rs). So an admin opens an agent's web UI without giving the agent
//! the host's network. The sockets sit in the agent's runtime dir, which is root's on the
//! host and read-only inside the container: the agent cannot replace them.

use std::path::{Path, PathBuf};

use super::{literal_args, stamp, ExecCommand, Host, Prop, UnitPlan, SLICE};
use crate::journal::fields;
use crate::spec::{AgentName, AgentSpec};

/// `CLONE_NEWNET`: the one namespace type the forwarder may enter (`RestrictNamespaces=`).
const CLONE_NEWNET: u64 = 0x4000_0000;
/// `CAP_SYS_ADMIN`: what `setns()` into the agent's network namespace takes.
const CAP_SYS_ADMIN: u64 = 1 << 21;

const FORWARDER_MEMORY_MAX: u64 = 64 << 20;
const FORWARDER_TASKS_MAX: u64 = 64;

pub fn ports_unit_name(name: &AgentName) -> String {
    format!("hive-ports-{name}.service")
}

/// Where the host reaches the agent's `port`.
pub fn socket_path(runtime_dir: &Path, port: u16) -> PathBuf {
    runtime_dir.join(format!("port-{port}.sock"))
}

/// The forwarder's unit, or `None` when the spec publishes no port.
pub fn ports_unit(spec: &AgentSpec, host: &Host) -> Option<UnitPlan> {
    if spec.ports.is_empty() {
        return None;
    }
    let name = &spec.name;
    let dir = host.roots.runtime_dir(name);
    let mut argv = vec![
        host.hive_c0re.display().to_string(),
        "port-forward".into(),
        format!("--agent={name}"),
        format!("--machine={}", name.machine()),
        format!("--dir={}", dir.display()),
    ];
    argv.extend(spec.ports.iter().map(|p| format!("--port={p}")));
    let s = |v: &str| Prop::Str(v.into());
    let yes = Prop::Bool(true);
    let properties: Vec<(String, Prop)> = vec![
        (
            "Description".into(),
            Prop::Str(format!(
                "hyperhive published ports of agent {name} ({})",
                spec.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        ("Slice".into(), s(SLICE)),
        // READY=1 once every socket is bound.
        ("Type".into(), s("notify")),
        ("NotifyAccess".into(), s("main")),
        ("Restart".into(), s("on-failure")),
        ("RestartUSec".into(), Prop::U64(500_000)),
        (
            "Environment".into(),
            Prop::Strv(vec![fields::assign(fields::AGENT, name)]),
        ),
        (
            "ExecStart".into(),
            Prop::Exec(vec![ExecCommand {
                path: host.hive_c0re.display().to_string(),
                argv: literal_args(argv),
                ignore_failure: false,
            }]),
        ),
        (
            "LogExtraFields".into(),
            Prop::Bytes(vec![fields::assign(fields::AGENT, name).into_bytes()]),
        ),
        // Root, to enter the agent's network namespace; nothing else of root's.
        ("CapabilityBoundingSet".into(), Prop::U64(CAP_SYS_ADMIN)),
        ("RestrictNamespaces".into(), Prop::U64(CLONE_NEWNET)),
        ("NoNewPrivileges".into(), yes.clone()),
        ("ProtectSystem".into(), s("strict")),
        (
            "ReadWritePaths".into(),
            Prop::Strv(vec![dir.display().to_string()]),
        ),
        ("ProtectHome".into(), s("yes")),
        ("PrivateTmp".into(), yes.clone()),
        ("PrivateDevices".into(), yes.clone()),
        ("ProtectKernelTunables".into(), yes.clone()),
        ("ProtectKernelModules".into(), yes.clone()),
        ("ProtectKernelLogs".into(), yes.clone()),
        ("ProtectClock".into(), yes.clone()),
        ("ProtectHostname".into(), yes.clone()),
        ("RestrictRealtime".into(), yes.clone()),
        ("RestrictSUIDSGID".into(), yes.clone()),
        ("LockPersonality".into(), yes.clone()),
        ("MemoryDenyWriteExecute".into(), yes),
        // machined's bus and the published sockets; the agent's loopback inside.
        (
            "RestrictAddressFamilies".into(),
            Prop::AddressFamilies(vec!["AF_UNIX".into(), "AF_INET".into()]),
        ),
        ("MemoryMax".into(), Prop::U64(FORWARDER_MEMORY_MAX)),
        ("TasksMax".into(), Prop::U64(FORWARDER_TASKS_MAX)),
    ];
    Some(stamp(ports_unit_name(name), None, properties, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecFile;

    fn spec(toml: &str) -> AgentSpec {
        let file = SpecFile::from_toml(toml, "test").unwrap();
        AgentSpec::validate(&AgentName::parse("alice").unwrap(), &file).unwrap()
    }

    #[test]
    fn no_ports_no_unit() {
        let host = crate::plan::test_host();
        assert!(ports_unit(&spec("root = \"/\"\nvolatile = \"yes\"\n"), &host).is_none());
    }

    #[test]
    fn each_port_is_a_socket_in_the_agents_runtime_dir() {
        let host = crate::plan::test_host();
        let plan = ports_unit(
            &spec("root = \"/\"\nvolatile = \"yes\"\nports = [8080, 9000]\n"),
            &host,
        )
        .unwrap();
        assert_eq!(plan.unit, "hive-ports-alice.service");
        let Some(Prop::Exec(exec)) = plan.get("ExecStart") else {
            panic!()
        };
        let argv = &exec[0].argv;
        assert!(argv.contains(&"--machine=h-alice".to_string()), "{argv:?}");
        assert!(
            argv.contains(&"--dir=/run/hyperhive/alice".to_string()),
            "{argv:?}"
        );
        assert!(
            argv.contains(&"--port=8080".to_string()) && argv.contains(&"--port=9000".to_string())
        );
        assert_eq!(plan.get("Slice"), Some(&Prop::Str("hive.slice".into())));
        assert_eq!(
            plan.get("CapabilityBoundingSet"),
            Some(&Prop::U64(CAP_SYS_ADMIN))
        );
        assert_eq!(
            socket_path(Path::new("/run/hyperhive/alice"), 8080),
            Path::new("/run/hyperhive/alice/port-8080.sock")
        );
    }

    #[test]
    fn ports_are_checked_and_private_network_only() {
        for (toml, want) in [
            ("ports = [0]\n", "port 0"),
            ("ports = [80, 80]\n", "twice"),
            ("network = \"host\"\nports = [80]\n", "private network only"),
        ] {
            let file =
                SpecFile::from_toml(&format!("root = \"/\"\nvolatile = \"yes\"\n{toml}"), "t")
                    .unwrap();
            let err = AgentSpec::validate(&AgentName::parse("a").unwrap(), &file)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{toml}: {err}");
        }
        let many: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        let file = SpecFile::from_toml(
            &format!(
                "root = \"/\"\nvolatile = \"yes\"\nports = [{}]\n",
                many.join(",")
            ),
            "t",
        )
        .unwrap();
        assert!(AgentSpec::validate(&AgentName::parse("a").unwrap(), &file).is_err());
    }
}
