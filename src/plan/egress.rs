//! A private-network agent's way out: its egress proxy on the host
//! (`hive-egress-<name>.service`, src/egress), the directory it shares with the container,
//! and the forwarder inside the container (`hive-egress.service` on 127.0.0.1:3128).
//! Pure. The allowlist itself is no part of any plan: it is a file the proxy re-reads, so
//! a change applies without restarting anything.

use std::path::{Path, PathBuf};

use super::{literal_args, stamp, ExecCommand, Host, Prop, UnitPlan, HARNESS_IN_CONTAINER, SLICE};
use crate::journal::fields;
use crate::paths::Roots;
use crate::spec::egress::Dest;
use crate::spec::{AgentName, AgentSpec, Network};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the proxy's directory (its socket, the allowlist) is seen inside the container.
pub const EGRESS_IN_CONTAINER: &str = "/run/hive-egress";
/// The forwarder's units inside the container.
pub const FORWARD_SOCKET: &str = "hive-egress.socket";
pub const FORWARD_UNIT: &str = "hive-egress.service";
/// What the agent's tools are pointed at.
pub const PROXY_LISTEN: &str = "127.0.0.1:3128";
pub const PROXY_URL: &str = "http://127.0.0.1:3128";
/// Never through the proxy: the container's own loopback.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";
/// A login shell's copy of the same variables (bound at /etc/profile.d/ inside).
pub const PROFILE_FILE: &str = "profile.sh";
pub const PROFILE_IN_CONTAINER: &str = "/etc/profile.d/hyperhive-egress.sh";

/// Bounds of the proxy unit: a few MiB serve it (docs/performance.md); tasks are its
/// runtime's threads and the resolver's.
pub const PROXY_MEMORY_MAX: u64 = 64 << 20;
pub const PROXY_TASKS_MAX: u64 = 32;

pub fn proxy_unit_name(name: &AgentName) -> String {
    format!("hive-egress-{name}.service")
}

/// The socket unit that starts the proxy at the agent's first connection.
pub fn socket_unit_name(name: &AgentName) -> String {
    format!("hive-egress-{name}.socket")
}

/// Where the proxy sees its directory: bound read-only into its own private /tmp, since
/// its dynamic user cannot pass the root-only `/run/private` to reach [`dir`].
pub const DIR_IN_PROXY: &str = "/tmp/hive-egress";

/// Whether the agent has an egress proxy at all: only in a namespace of its own.
pub fn has_egress(spec: &AgentSpec) -> bool {
    spec.network == Network::Private
}

/// `<run root>-egress/<name>` relative to /run: `hyperhive-egress/alice`.
fn relative_dir(roots: &Roots, name: &AgentName) -> String {
    let rel = roots
        .run
        .strip_prefix("/run")
        .expect("the run root is below /run (Roots::validate)");
    format!("{}-egress/{name}", rel.display())
}

/// Where systemd linked the proxy's directory when the proxy unit still owned it
/// (`RuntimeDirectory=` under a dynamic user, before the socket unit): `/run/<run
/// root>-egress/<name>`. Only removed now, at destroy.
pub fn legacy_link(roots: &Roots, name: &AgentName) -> PathBuf {
    Path::new("/run").join(relative_dir(roots, name))
}

/// The proxy's directory on the host: `/run/private/<run root>-egress/<name>`, root's,
/// 0755, under `/run/private` (0700), so no host user but root reaches the socket in it.
/// The daemon makes it and writes the allowlist there; PID 1 binds the socket in it; the
/// container binds it read-only, the proxy through [`DIR_IN_PROXY`]. Neither can write it.
pub fn dir(roots: &Roots, name: &AgentName) -> PathBuf {
    Path::new("/run/private").join(relative_dir(roots, name))
}

/// The variables that point curl, pip, npm, git, python and claude-code at the proxy:
/// both cases, since curl reads only lowercase `http_proxy`.
pub fn proxy_env() -> Vec<String> {
    let mut env = Vec::new();
    for key in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
        env.push(format!("{key}={PROXY_URL}"));
        env.push(format!("{}={PROXY_URL}", key.to_ascii_lowercase()));
    }
    env.push(format!("NO_PROXY={NO_PROXY}"));
    env.push(format!("no_proxy={NO_PROXY}"));
    env
}

/// `/etc/profile.d/hyperhive-egress.sh`: the same for login shells.
pub fn profile_script() -> String {
    let mut s = String::from(
        "# Written by hive-c0re: this agent reaches the network through its egress proxy.\n",
    );
    for kv in proxy_env() {
        s.push_str(&format!("export {kv}\n"));
    }
    s
}

/// The nspawn arguments a private-network agent gets: the proxy's directory read-only
/// at [`EGRESS_IN_CONTAINER`], and the login shells' profile.
pub fn container_args(spec: &AgentSpec, host: &Host) -> Vec<String> {
    if !has_egress(spec) {
        return Vec::new();
    }
    let d = dir(&host.roots, &spec.name);
    vec![
        super::bind_arg(&d, Path::new(EGRESS_IN_CONTAINER), true, false),
        super::bind_arg(
            &d.join(PROFILE_FILE),
            Path::new(PROFILE_IN_CONTAINER),
            true,
            false,
        ),
    ]
}

/// `hive-egress-<name>.socket` on the host, carrying the proxy's service: PID 1 listens
/// on the agent's socket from the start, and starts the proxy at the first connection.
/// An agent that never reaches out never pays for a proxy, and its container never waits
/// for one to start. The socket's hash covers the service's, so either changing replaces
/// both.
pub fn proxy_units(spec: &AgentSpec, host: &Host) -> UnitPlan {
    let name = &spec.name;
    let service = proxy_service(spec, host);
    let socket = dir(&host.roots, name).join(crate::paths::EGRESS_SOCKET_FILE);
    let properties: Vec<(String, Prop)> = vec![
        (
            "Description".into(),
            Prop::Str(format!("hyperhive egress proxy socket of agent {name}")),
        ),
        ("Slice".into(), Prop::Str(SLICE.into())),
        (
            "Listen".into(),
            Prop::Pairs(vec![("Stream".into(), socket.display().to_string())]),
        ),
        // The container's root is another (unprivileged) uid; /run/private keeps every
        // other host user out.
        ("SocketMode".into(), Prop::U32(0o666)),
        ("DirectoryMode".into(), Prop::U32(0o755)),
        (
            "Environment".into(),
            Prop::Strv(vec![fields::assign(fields::AGENT, name)]),
        ),
    ];
    socket_carrying(socket_unit_name(name), properties, service)
}

/// A socket unit's plan that carries the service it starts as an auxiliary unit; its hash
/// covers the service's.
fn socket_carrying(unit: String, properties: Vec<(String, Prop)>, service: UnitPlan) -> UnitPlan {
    let mut plan = stamp(unit, None, properties, Some(&service.hash));
    plan.aux.push(service);
    plan
}

/// `hive-egress-<name>.service`: `hive-c0re egress-proxy` on the socket systemd hands it,
/// under a user of its own, able to write nothing, reading its directory read-only, with
/// only the address families it needs and bounded memory and tasks.
pub fn proxy_service(spec: &AgentSpec, host: &Host) -> UnitPlan {
    let name = &spec.name;
    let argv = vec![
        host.hive_c0re.display().to_string(),
        "egress-proxy".into(),
        format!("--agent={name}"),
        format!("--dir={DIR_IN_PROXY}"),
    ];
    let s = |v: &str| Prop::Str(v.into());
    let yes = Prop::Bool(true);
    let properties: Vec<(String, Prop)> = vec![
        (
            "Description".into(),
            Prop::Str(format!("hyperhive egress proxy of agent {name}")),
        ),
        ("Slice".into(), Prop::Str(SLICE.into())),
        // READY=1 once it holds the socket.
        ("Type".into(), s("notify")),
        ("NotifyAccess".into(), s("main")),
        ("Restart".into(), s("on-failure")),
        ("RestartUSec".into(), Prop::U64(200_000)),
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
        // A user of its own: one agent's proxy can neither see another's traffic nor
        // touch the host's files.
        ("DynamicUser".into(), yes.clone()),
        (
            "BindReadOnlyPaths".into(),
            Prop::Binds(vec![(
                dir(&host.roots, name).display().to_string(),
                DIR_IN_PROXY.into(),
            )]),
        ),
        ("ProtectSystem".into(), s("strict")),
        ("ProtectHome".into(), s("yes")),
        ("PrivateTmp".into(), yes.clone()),
        ("PrivateDevices".into(), yes.clone()),
        ("ProtectKernelTunables".into(), yes.clone()),
        ("ProtectKernelModules".into(), yes.clone()),
        ("ProtectKernelLogs".into(), yes.clone()),
        ("ProtectControlGroups".into(), yes.clone()),
        ("ProtectClock".into(), yes.clone()),
        ("ProtectHostname".into(), yes.clone()),
        // `t`: the namespace types it may create; none.
        ("RestrictNamespaces".into(), Prop::U64(0)),
        ("RestrictRealtime".into(), yes.clone()),
        ("RestrictSUIDSGID".into(), yes.clone()),
        ("LockPersonality".into(), yes.clone()),
        ("MemoryDenyWriteExecute".into(), yes.clone()),
        ("NoNewPrivileges".into(), yes),
        ("CapabilityBoundingSet".into(), Prop::U64(0)),
        // The agent's socket, journald's, and the destinations: nothing else.
        (
            "RestrictAddressFamilies".into(),
            Prop::AddressFamilies(vec!["AF_UNIX".into(), "AF_INET".into(), "AF_INET6".into()]),
        ),
        // Defence in depth (BPF, enforced on real hosts, not inside nested test hosts):
        // what the proxy refuses to reach by itself, its cgroup cannot reach either.
        ("IPAddressDeny".into(), Prop::IpPrefixes(denied_nets())),
        (
            "IPAddressAllow".into(),
            Prop::IpPrefixes(allowed_nets(spec)),
        ),
        ("MemoryMax".into(), Prop::U64(PROXY_MEMORY_MAX)),
        ("TasksMax".into(), Prop::U64(PROXY_TASKS_MAX)),
        // Not every connection is the agent's fault: bounded, not stopped for good.
        ("LimitNOFILE".into(), Prop::U64(4096)),
    ];
    stamp(proxy_unit_name(name), None, properties, None)
}

/// What the proxy unit's cgroup may never reach (`IPAddressDeny=`): link-local (where
/// clouds keep their metadata endpoint), multicast and unspecified addresses. Not
/// loopback: the host's resolver often listens there (systemd-resolved's 127.0.0.53),
/// and the proxy resolves names; the proxy's own check refuses loopback destinations.
pub fn denied_nets() -> Vec<(IpAddr, u8)> {
    vec![
        (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
        (IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8),
        (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
        (IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
    ]
}

/// `IPAddressAllow=` (which wins over the deny list): the admin's egress entries that
/// name addresses in a denied range. Only an admin may write an address entry, so an
/// agent's approved request never changes this plan.
pub fn allowed_nets(spec: &AgentSpec) -> Vec<(IpAddr, u8)> {
    let denied = denied_nets();
    let mut nets: Vec<(IpAddr, u8)> = spec
        .egress
        .iter()
        .filter_map(|e| match e.dest {
            Dest::Net { addr, prefix } => Some((addr, prefix)),
            _ => None,
        })
        .filter(|&n| denied.iter().any(|&d| overlap(n, d)))
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

/// Whether two prefixes share an address: the shorter one holds the other's start.
fn overlap(a: (IpAddr, u8), b: (IpAddr, u8)) -> bool {
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let ((x, wx), (y, wy)) = (bits(a.0), bits(b.0));
    if wx != wy {
        return false;
    }
    let p = u32::from(a.1.min(b.1)).min(wx);
    let shift = wx - p;
    // A shift by the width itself (a /0) keeps nothing: every address matches.
    let top = |v: u128| v.checked_shr(shift).unwrap_or(0);
    top(x) == top(y)
}

/// `hive-egress.socket` inside the container, carrying `hive-egress.service`: the
/// container's systemd listens on 127.0.0.1:3128 and starts the forwarder (hive-harness,
/// bound into every container, whatever its root holds) at the first connection, which
/// it carries to the proxy's socket. Like the proxy, nothing runs until the agent reaches
/// out.
pub fn forward_units(spec: &AgentSpec) -> UnitPlan {
    let name = &spec.name;
    let service = forward_service(spec);
    let properties = vec![
        (
            "Description".into(),
            Prop::Str(format!(
                "hyperhive egress socket of agent {name} ({PROXY_LISTEN})"
            )),
        ),
        (
            "Listen".into(),
            Prop::Pairs(vec![("Stream".into(), PROXY_LISTEN.into())]),
        ),
        (
            "Environment".into(),
            Prop::Strv(vec![fields::assign(fields::AGENT, name)]),
        ),
    ];
    socket_carrying(FORWARD_SOCKET.into(), properties, service)
}

/// `hive-egress.service` inside the container: the forwarder on the socket systemd passes.
fn forward_service(spec: &AgentSpec) -> UnitPlan {
    let name = &spec.name;
    let argv = vec![
        HARNESS_IN_CONTAINER.to_string(),
        "egress-forward".into(),
        format!(
            "--to={}",
            Path::new(EGRESS_IN_CONTAINER)
                .join(crate::paths::EGRESS_SOCKET_FILE)
                .display()
        ),
    ];
    let properties = vec![
        (
            "Description".into(),
            Prop::Str(format!(
                "hyperhive egress forwarder of agent {name} ({PROXY_LISTEN})"
            )),
        ),
        ("Type".into(), Prop::Str("notify".into())),
        ("NotifyAccess".into(), Prop::Str("main".into())),
        ("Restart".into(), Prop::Str("always".into())),
        ("RestartUSec".into(), Prop::U64(200_000)),
        (
            "Environment".into(),
            Prop::Strv(vec![fields::assign(fields::AGENT, name)]),
        ),
        (
            "ExecStart".into(),
            Prop::Exec(vec![ExecCommand {
                path: HARNESS_IN_CONTAINER.into(),
                argv: literal_args(argv),
                ignore_failure: false,
            }]),
        ),
    ];
    stamp(FORWARD_UNIT.into(), None, properties, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecFile;

    fn host() -> Host {
        crate::plan::test_host()
    }

    fn spec(toml: &str) -> AgentSpec {
        let file = SpecFile::from_toml(toml, "test").unwrap();
        AgentSpec::validate(&AgentName::parse("alice").unwrap(), &file).unwrap()
    }

    #[test]
    fn the_proxy_is_sandboxed_under_its_own_user_in_hive_slice() {
        let p = proxy_service(&spec("root = \"/\"\nvolatile = \"yes\"\n"), &host());
        assert_eq!(p.unit, "hive-egress-alice.service");
        assert_eq!(p.get("Slice"), Some(&Prop::Str("hive.slice".into())));
        assert_eq!(p.get("DynamicUser"), Some(&Prop::Bool(true)));
        assert_eq!(p.get("ProtectSystem"), Some(&Prop::Str("strict".into())));
        assert_eq!(p.get("CapabilityBoundingSet"), Some(&Prop::U64(0)));
        // It writes nothing: its directory is the daemon's, seen read-only.
        assert_eq!(p.get("RuntimeDirectory"), None);
        assert_eq!(
            p.get("BindReadOnlyPaths"),
            Some(&Prop::Binds(vec![(
                "/run/private/hyperhive-egress/alice".into(),
                "/tmp/hive-egress".into()
            )]))
        );
        assert!(matches!(p.get("MemoryMax"), Some(Prop::U64(_))));
        assert!(matches!(p.get("TasksMax"), Some(Prop::U64(_))));
        assert!(
            matches!(p.get("RestrictAddressFamilies"), Some(Prop::AddressFamilies(f)) if f.len() == 3)
        );
    }

    #[test]
    fn the_proxy_cannot_reach_link_local_or_multicast_unless_an_admin_entry_names_it() {
        let plain = proxy_service(
            &spec("root = \"/\"\nvolatile = \"yes\"\negress = [\"api.example.com\", \"10.0.0.0/8:443\"]\n"),
            &host(),
        );
        let Some(Prop::IpPrefixes(deny)) = plain.get("IPAddressDeny") else {
            panic!("no IPAddressDeny");
        };
        let shown: Vec<String> = deny.iter().map(|(a, p)| format!("{a}/{p}")).collect();
        for net in ["169.254.0.0/16", "fe80::/10", "224.0.0.0/4", "ff00::/8"] {
            assert!(shown.contains(&net.to_string()), "{shown:?}");
        }
        // Not loopback: the host's resolver may be there.
        assert!(!shown.iter().any(|n| n.starts_with("127.")), "{shown:?}");
        assert_eq!(plain.get("IPAddressAllow"), Some(&Prop::IpPrefixes(vec![])));

        let metadata = proxy_service(
            &spec("root = \"/\"\nvolatile = \"yes\"\negress = [\"169.254.169.254:80\", \"10.0.0.0/8:443\", \"160.0.0.0/3:80\"]\n"),
            &host(),
        );
        assert_eq!(
            metadata.get("IPAddressAllow"),
            Some(&Prop::IpPrefixes(vec![
                ("160.0.0.0".parse().unwrap(), 3),
                ("169.254.169.254".parse().unwrap(), 32),
            ]))
        );
    }

    #[test]
    fn the_socket_carries_the_proxy_and_its_hash_covers_it() {
        let plain = spec("root = \"/\"\nvolatile = \"yes\"\n");
        let p = proxy_units(&plain, &host());
        assert_eq!(p.unit, "hive-egress-alice.socket");
        assert_eq!(
            p.get("Listen"),
            Some(&Prop::Pairs(vec![(
                "Stream".into(),
                "/run/private/hyperhive-egress/alice/proxy.sock".into()
            )]))
        );
        assert_eq!(p.get("SocketMode"), Some(&Prop::U32(0o666)));
        assert_eq!(p.aux.len(), 1);
        assert_eq!(p.aux[0].unit, "hive-egress-alice.service");
        // An admin's address entry changes only the service's properties: both are replaced.
        let entry = spec("root = \"/\"\nvolatile = \"yes\"\negress = [\"169.254.169.254:80\"]\n");
        let q = proxy_units(&entry, &host());
        let own = |u: &UnitPlan| -> Vec<(String, Prop)> {
            u.properties
                .iter()
                .filter(|(k, _)| k != "Environment")
                .cloned()
                .collect()
        };
        assert_eq!(own(&p), own(&q));
        assert_ne!(p.aux[0].hash, q.aux[0].hash);
        assert_ne!(p.hash, q.hash);
    }

    #[test]
    fn inside_the_container_a_socket_on_3128_carries_the_forwarder() {
        let p = forward_units(&spec("root = \"/\"\nvolatile = \"yes\"\n"));
        assert_eq!(p.unit, "hive-egress.socket");
        assert_eq!(
            p.get("Listen"),
            Some(&Prop::Pairs(vec![(
                "Stream".into(),
                "127.0.0.1:3128".into()
            )]))
        );
        assert_eq!(p.aux.len(), 1);
        assert_eq!(p.aux[0].unit, "hive-egress.service");
        let Some(Prop::Exec(cmd)) = p.aux[0].get("ExecStart") else {
            panic!("no ExecStart");
        };
        assert_eq!(
            cmd[0].argv[1..],
            ["egress-forward", "--to=/run/hive-egress/proxy.sock"]
        );
    }

    #[test]
    fn prefixes_overlap_when_the_shorter_holds_the_other() {
        let n = |s: &str, p: u8| (s.parse::<IpAddr>().unwrap(), p);
        assert!(overlap(n("169.254.169.254", 32), n("169.254.0.0", 16)));
        assert!(overlap(n("0.0.0.0", 0), n("169.254.0.0", 16)));
        assert!(overlap(n("::", 0), n("fe80::", 10)));
        assert!(!overlap(n("10.0.0.0", 8), n("169.254.0.0", 16)));
        assert!(!overlap(n("169.253.255.255", 32), n("169.254.0.0", 16)));
        assert!(!overlap(n("::ffff:169.254.1.1", 128), n("169.254.0.0", 16)));
    }

    #[test]
    fn the_allowlist_is_no_part_of_any_plan() {
        let a = spec("root = \"/\"\nvolatile = \"yes\"\n");
        let b = spec("root = \"/\"\nvolatile = \"yes\"\negress = [\"api.example.com\"]\n");
        assert_eq!(proxy_units(&a, &host()).hash, proxy_units(&b, &host()).hash);
        assert_eq!(
            super::super::container_unit(&a, &host()).hash,
            super::super::container_unit(&b, &host()).hash
        );
    }

    #[test]
    fn both_cases_of_the_proxy_variables() {
        let env = proxy_env();
        for k in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            assert!(env.contains(&format!("{k}=http://127.0.0.1:3128")), "{k}");
        }
        assert!(env.iter().any(|e| e.starts_with("no_proxy=")));
        assert!(profile_script().contains("export https_proxy="));
    }

    #[test]
    fn a_host_network_agent_has_no_egress_binds() {
        let s = spec("root = \"/\"\nvolatile = \"yes\"\nnetwork = \"host\"\n");
        assert!(container_args(&s, &host()).is_empty());
        let p = spec("root = \"/\"\nvolatile = \"yes\"\n");
        assert_eq!(
            container_args(&p, &host())[0],
            "--bind-ro=/run/private/hyperhive-egress/alice:/run/hive-egress"
        );
    }
}
