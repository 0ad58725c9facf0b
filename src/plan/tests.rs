use super::*;
use crate::spec::{AgentName, AgentSpec, SpecFile, Volatile};

fn host() -> Host {
    Host {
        roots: Roots::default(),
        nspawn: "/usr/bin/systemd-nspawn".into(),
        hive_c0re: "/usr/bin/hive-c0re".into(),
        hive_harness: "/usr/bin/hive-harness".into(),
        base_path: vec![
            "/opt/git/bin".into(),
            "/run/current-system/sw/bin".into(),
            "/usr/bin".into(),
        ],
        journal: Some("/var/log/journal".into()),
        defaults: crate::spec::bounds::Defaults::shipped(8 << 30),
        disk_images: false,
    }
}

fn spec(toml: &str) -> AgentSpec {
    let file = SpecFile::from_toml(toml, "test").unwrap();
    AgentSpec::validate(&AgentName::parse("alice").unwrap(), &file).unwrap()
}

fn base() -> AgentSpec {
    spec("root = \"/\"\nvolatile = \"yes\"\n")
}

fn argv(plan: &UnitPlan) -> Vec<String> {
    match plan.get("ExecStart") {
        Some(Prop::Exec(cmds)) => cmds[0].argv.clone(),
        other => panic!("ExecStart: {other:?}"),
    }
}

fn strv(plan: &UnitPlan, key: &str) -> Vec<String> {
    match plan.get(key) {
        Some(Prop::Strv(v)) => v.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn names_follow_the_contract() {
    let plan = container_unit(&base(), &host());
    assert_eq!(plan.unit, "hive-agent-alice.service");
    assert_eq!(plan.machine.as_deref(), Some("h-alice"));
    assert_eq!(plan.get("Slice"), Some(&Prop::Str("hive.slice".into())));
}

#[test]
fn every_required_property_is_explicit() {
    let plan = container_unit(&base(), &host());
    for key in [
        "Description",
        "Slice",
        "Type",
        "NotifyAccess",
        "KillMode",
        "Delegate",
        "Environment",
        "RuntimeDirectory",
        "RuntimeDirectoryPreserve",
        "Restart",
        "RestartUSec",
        "ExecStart",
        "ExecStopPost",
        "LogExtraFields",
    ] {
        assert!(plan.get(key).is_some(), "{key} missing");
    }
    assert_eq!(plan.get("Type"), Some(&Prop::Str("notify".into())));
    assert_eq!(
        plan.get("RuntimeDirectoryPreserve"),
        Some(&Prop::Str("yes".into()))
    );
    assert_eq!(strv(&plan, "RuntimeDirectory"), vec!["hyperhive/alice"]);
    assert_eq!(plan.get("RuntimeDirectoryMode"), Some(&Prop::U32(0o700)));
    assert_eq!(plan.get("Restart"), Some(&Prop::Str("on-failure".into())));
    // No spec limits: the daemon's defaults, never systemd's (unbounded) ones.
    let d = host().defaults;
    assert_eq!(plan.get("MemoryMax"), Some(&Prop::U64(d.memory_max)));
    assert_eq!(
        plan.get("MemoryHigh"),
        Some(&Prop::U64(crate::spec::bounds::memory_high(d.memory_max)))
    );
    assert_eq!(plan.get("TasksMax"), Some(&Prop::U64(d.tasks_max)));
    assert_eq!(plan.get("CPUWeight"), Some(&Prop::U64(d.cpu_weight)));
    assert_eq!(plan.get("OOMPolicy"), Some(&Prop::Str("continue".into())));
}

#[test]
fn other_defaults_are_another_plan_and_explicit_limits_ignore_them() {
    let mut other = host();
    other.defaults.tasks_max = 99;
    // An agent on the defaults drifts when they change (reconcile rebuilds it)...
    assert_ne!(
        container_unit(&base(), &host()).hash,
        container_unit(&base(), &other).hash
    );
    // ...one whose spec sets every bound keeps its plan.
    let s = spec(
        "root = \"/\"\nvolatile = \"yes\"\nmemory_max = \"1G\"\ntasks_max = 10\ncpu_weight = 7\n",
    );
    let plan = container_unit(&s, &other);
    assert_eq!(plan.hash, container_unit(&s, &host()).hash);
    assert_eq!(plan.get("MemoryMax"), Some(&Prop::U64(1 << 30)));
    assert_eq!(
        plan.get("MemoryHigh"),
        Some(&Prop::U64(crate::spec::bounds::memory_high(1 << 30)))
    );
    assert_eq!(plan.get("TasksMax"), Some(&Prop::U64(10)));
    assert_eq!(plan.get("CPUWeight"), Some(&Prop::U64(7)));
}

#[test]
fn path_is_the_agents_then_the_hosts_never_inherited() {
    let s = spec(
        "root = \"/\"\nvolatile = \"yes\"\npath = [\"/nix/store/x-tool/bin\", \"/usr/bin\"]\n",
    );
    let plan = container_unit(&s, &host());
    let env = strv(&plan, "Environment");
    assert_eq!(
        env[0],
        "PATH=/nix/store/x-tool/bin:/usr/bin:/opt/hyperhive/bin:/opt/git/bin:/run/current-system/sw/bin"
    );
    assert!(env.contains(&"HIVE_AGENT=alice".to_string()));
    assert!(env.iter().any(|e| e == &format!("HIVE_PLAN={}", plan.hash)));
}

#[test]
fn nspawn_boots_the_root_as_h_name_with_the_agent_dirs_bound() {
    let plan = container_unit(&base(), &host());
    let a = argv(&plan);
    assert_eq!(a[0], "/usr/bin/systemd-nspawn");
    for want in [
        "--keep-unit",
        "--register=yes",
        "--machine=h-alice",
        "--directory=/",
        "--volatile=yes",
        "--notify-ready=yes",
        "--boot",
        "--private-users=pick",
        "--private-users-ownership=off",
        "--bind=/var/lib/hyperhive/agents/alice/state:/state:idmap",
        "--bind=/var/lib/hyperhive/agents/alice/claude:/root/.claude:idmap",
        "--bind-ro=/run/hyperhive/alice:/run/hyperhive:idmap",
        "--bind-ro=/usr/bin/hive-harness:/opt/hyperhive/bin/hive-harness",
        "--drop-capability=CAP_NET_RAW,CAP_NET_BROADCAST,CAP_LINUX_IMMUTABLE,CAP_AUDIT_CONTROL,CAP_SYS_TTY_CONFIG",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
    }
    // Its own machine ID and an idmapped journal directory on the host, which its
    // journald (an unprivileged host UID) can write and `journalctl -m` reads.
    let id = agent_machine_id(&AgentName::parse("alice").unwrap());
    assert_eq!(id.len(), 32);
    for want in [
        format!("--uuid={id}"),
        "--link-journal=no".into(),
        format!("--bind=/var/log/journal/{id}:/var/log/journal/{id}:idmap"),
    ] {
        assert!(a.contains(&want), "{want} missing from {a:?}");
    }
    // The daemon reaches the container's bus from inside its namespaces, never through
    // a bind of the container's /run/dbus the agent could redirect.
    assert!(!a.iter().any(|x| x.contains("/run/dbus")), "{a:?}");
    // Kernel arguments come after `--`, flags before it.
    let sep = a.iter().position(|x| x == "--").unwrap();
    assert!(a[..sep].iter().any(|x| x == "--boot"));
    // Its systemd's boot is not held up by its own mount table watch.
    let burst = format!("--setenv={MOUNT_BURST_VAR}={MOUNT_BURST}");
    assert!(a[..sep].contains(&burst), "{burst} missing from {a:?}");
}

#[test]
fn private_network_unless_host_is_asked() {
    // The default: a namespace of its own with only lo (issue 23).
    let a = argv(&container_unit(&base(), &host()));
    assert!(a.iter().any(|x| x == "--private-network"), "{a:?}");
    // `network = "host"`, an admin's choice: no flag at all, so nspawn makes no netns.
    let s = spec("root = \"/\"\nvolatile = \"yes\"\nnetwork = \"host\"\n");
    let a = argv(&container_unit(&s, &host()));
    assert!(!a.iter().any(|x| x.contains("network")), "{a:?}");
}

#[test]
fn binds_escape_colons_and_keep_spaces() {
    let s = spec(
        "root = \"/\"\nvolatile = \"yes\"\nbind = [{ source = '/srv/my data:v2', target = '/data' }, '/etc/x:/etc/x:ro']\n",
    );
    let a = argv(&container_unit(&s, &host()));
    assert!(
        a.iter()
            .any(|x| x == r"--bind=/srv/my data\:v2:/data:idmap"),
        "{a:?}"
    );
    assert!(
        a.iter().any(|x| x == "--bind-ro=/etc/x:/etc/x:idmap"),
        "{a:?}"
    );
    assert_eq!(
        bind_arg(Path::new(r"/a\b"), Path::new("/c"), false, false),
        r"--bind=/a\\b:/c"
    );
}

#[test]
fn limits_and_env_are_carried() {
    let s = spec(
        "root = \"/\"\nvolatile = \"yes\"\nmemory_max = \"1G\"\ncpu_weight = 50\ntasks_max = 99\nenv = { A = \"b c\" }\n",
    );
    let plan = container_unit(&s, &host());
    assert_eq!(plan.get("MemoryMax"), Some(&Prop::U64(1 << 30)));
    assert_eq!(plan.get("CPUWeight"), Some(&Prop::U64(50)));
    assert_eq!(plan.get("TasksMax"), Some(&Prop::U64(99)));
    // The env's values are secrets: on no command line (ExecStart is readable by every
    // host user over the bus), only on the harness unit inside the container.
    assert!(
        !argv(&plan).iter().any(|x| x.contains("b c")),
        "{:?}",
        argv(&plan)
    );
    let harness = crate::plan::harness_unit(&s, &host());
    assert!(strv(&harness, "Environment").contains(&"A=b c".to_string()));
}

#[test]
fn an_admin_may_turn_the_user_namespace_off_and_keep_capabilities() {
    let s = spec(
        "root = \"/\"\nvolatile = \"yes\"\nprivate_users = false\ncapabilities = [\"CAP_NET_RAW\"]\n",
    );
    let a = argv(&container_unit(&s, &host()));
    assert!(!a.iter().any(|x| x.starts_with("--private-users")), "{a:?}");
    assert!(a
        .iter()
        .any(|x| x == "--bind=/var/lib/hyperhive/agents/alice/state:/state"));
    assert!(a.iter().any(|x| x
        == "--drop-capability=CAP_NET_BROADCAST,CAP_LINUX_IMMUTABLE,CAP_AUDIT_CONTROL,CAP_SYS_TTY_CONFIG"));
    let err = AgentSpec::validate(
        &AgentName::parse("alice").unwrap(),
        &SpecFile::from_toml(
            "root = \"/\"\nvolatile = \"yes\"\ncapabilities = [\"CAP_SYS_MODULE\"]\n",
            "t",
        )
        .unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("CAP_SYS_MODULE") && err.contains("keepable"),
        "{err}"
    );
}

#[test]
fn an_own_root_is_idmapped_a_lent_one_is_not() {
    let s = spec("root = \"/var/lib/machines/alice\"\n");
    let a = argv(&container_unit(&s, &host()));
    assert!(
        a.iter().any(|x| x == "--private-users-ownership=auto"),
        "{a:?}"
    );
}

#[test]
fn stop_post_unregisters_the_machine_and_may_fail() {
    let plan = container_unit(&base(), &host());
    match plan.get("ExecStopPost") {
        Some(Prop::Exec(c)) => {
            assert_eq!(
                c[0].argv,
                vec!["/usr/bin/hive-c0re", "unregister-machine", "h-alice"]
            );
            assert!(c[0].ignore_failure);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hash_is_stable_and_follows_the_spec() {
    let a = container_unit(&base(), &host());
    assert_eq!(a.hash, container_unit(&base(), &host()).hash);
    assert_eq!(a.hash.len(), 16);
    let mut other = base();
    other.volatile = Volatile::Overlay;
    assert_ne!(a.hash, container_unit(&other, &host()).hash);
}

#[test]
fn container_hash_covers_the_harness_but_not_autostart() {
    let a = container_unit(&base(), &host());
    let mut harness = base();
    harness.harness = vec!["claude".into(), "--print".into()];
    let b = container_unit(&harness, &host());
    let without_stamp = |p: &UnitPlan| {
        p.properties
            .iter()
            .filter(|(k, _)| k != "Environment")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_stamp(&a),
        without_stamp(&b),
        "the harness command is no property of the container unit"
    );
    assert_ne!(a.hash, b.hash, "yet changing it is drift");
    let mut manual = base();
    manual.autostart = false;
    assert_eq!(a.hash, container_unit(&manual, &host()).hash);
}

#[test]
fn moved_roots_move_every_path() {
    let mut h = host();
    h.roots = Roots {
        state: "/tmp/s".into(),
        run: "/run/hh-test".into(),
        config: "/tmp/c".into(),
    }
    .validate()
    .unwrap();
    let plan = container_unit(&base(), &h);
    assert_eq!(strv(&plan, "RuntimeDirectory"), vec!["hh-test/alice"]);
    assert!(argv(&plan)
        .iter()
        .any(|x| x == "--bind=/tmp/s/agents/alice/state:/state:idmap"));
    assert!(Roots {
        run: "/tmp/r".into(),
        ..Roots::default()
    }
    .validate()
    .is_err());
    assert!(Roots {
        run: "/run".into(),
        ..Roots::default()
    }
    .validate()
    .is_err());
}

#[test]
fn harness_unit_runs_the_specs_command_with_the_agents_path() {
    let s = spec(
        "root = \"/\"\nvolatile = \"yes\"\npath = [\"/opt/x/bin\"]\nharness = [\"claude\", \"--print\"]\nenv = { K = \"v\" }\n",
    );
    let plan = harness_unit(&s, &host());
    assert_eq!(plan.unit, "hive-harness.service");
    assert_eq!(plan.machine, None);
    assert_eq!(plan.get("Type"), Some(&Prop::Str("notify".into())));
    assert_eq!(
        plan.get("WatchdogUSec"),
        Some(&Prop::U64(HARNESS_WATCHDOG_USEC))
    );
    assert_eq!(plan.get("Restart"), Some(&Prop::Str("on-failure".into())));
    let env = strv(&plan, "Environment");
    assert_eq!(env[0], format!("PATH={}", agent_path(&s, &host())));
    assert!(env[0].starts_with("PATH=/opt/x/bin:/opt/hyperhive/bin:"));
    assert!(env.contains(&"HIVE_SOCKET=/run/hyperhive/hive.sock".to_string()));
    assert!(env.contains(&"K=v".to_string()));
    assert_eq!(
        argv(&plan),
        vec!["/opt/hyperhive/bin/hive-harness", "--", "claude", "--print"]
    );
}

#[test]
fn harness_without_a_command_just_stays_connected() {
    assert_eq!(
        argv(&harness_unit(&base(), &host())),
        vec!["/opt/hyperhive/bin/hive-harness"]
    );
}

#[test]
fn harness_hash_follows_the_path() {
    let a = harness_unit(&base(), &host());
    let mut b = base();
    b.path.push("/opt/new/bin".into());
    assert_ne!(a.hash, harness_unit(&b, &host()).hash);
}

#[test]
fn an_approval_stamps_logs_and_environment_but_not_the_hash() {
    for mut plan in [
        container_unit(&base(), &host()),
        harness_unit(&base(), &host()),
    ] {
        let hash = plan.hash.clone();
        stamp_approval(&mut plan, 12);
        assert_eq!(plan.hash, hash);
        assert!(strv(&plan, "Environment").contains(&"HIVE_APPROVAL_ID=12".to_string()));
        match plan.get("LogExtraFields") {
            Some(Prop::Bytes(f)) => assert!(f.contains(&b"HIVE_APPROVAL_ID=12".to_vec())),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn dollars_reach_the_program_verbatim() {
    let s = spec(
        "root = \"/\"\nvolatile = \"yes\"\nbind = ['/srv/a${HIVE_AGENT}b:/data']\nenv = { FOO = \"x${PATH}y\" }\nharness = [\"sh\", \"-c\", \"echo $PATH\"]\n",
    );
    let a = argv(&container_unit(&s, &host()));
    assert!(
        a.iter()
            .any(|x| x == "--bind=/srv/a$${HIVE_AGENT}b:/data:idmap"),
        "{a:?}"
    );
    // Environment= values are not expanded by systemd: the env reaches the harness as is.
    assert!(strv(&harness_unit(&s, &host()), "Environment").contains(&"FOO=x${PATH}y".to_string()));
    let h = argv(&harness_unit(&s, &host()));
    assert_eq!(h.last().unwrap(), "echo $$PATH");
    assert_eq!(
        literal_args(vec!["/bin/$x".into(), "$y".into()]),
        vec!["/bin/$x", "$$y"]
    );
}
