use super::*;

fn name(n: &str) -> AgentName {
    AgentName::parse(n).unwrap()
}

fn minimal() -> SpecFile {
    SpecFile {
        root: Some("/".into()),
        volatile: Some(Volatile::Yes),
        ..Default::default()
    }
}

#[test]
fn defaults_fill_what_is_left_out() {
    let spec = AgentSpec::validate(&name("alice"), &minimal()).unwrap();
    // A private namespace unless an admin writes `network = "host"` (issue 23).
    assert_eq!(spec.network, Network::Private);
    assert_eq!(spec.memory_max, None);
    assert!(spec.binds.is_empty() && spec.path.is_empty() && spec.harness.is_empty());
}

#[test]
fn parses_a_full_spec_file() {
    let text = r#"
root = "/srv/agents/alice"
volatile = "overlay"
path = ["/opt/tools/bin", "/nix/store/abc-git/bin"]
bind = ["/srv/data:/data:ro", { source = "/srv/a:b", target = "/mnt/x y" }]
env = { FOO = "bar baz" }
memory_max = "512M"
cpu_weight = 200
tasks_max = 64
network = "host"
harness = ["claude", "--print"]
"#;
    let file = SpecFile::from_toml(text, "alice.toml").unwrap();
    let spec = AgentSpec::validate(&name("alice"), &file).unwrap();
    assert_eq!(spec.volatile, Volatile::Overlay);
    assert_eq!(spec.memory_max, Some(512 << 20));
    assert_eq!(spec.binds.len(), 2);
    assert!(spec.binds[0].readonly);
    assert_eq!(spec.binds[1].source, PathBuf::from("/srv/a:b"));
    assert_eq!(spec.binds[1].target, PathBuf::from("/mnt/x y"));
    assert_eq!(spec.network, Network::Host);
    assert_eq!(spec.harness, vec!["claude", "--print"]);
}

#[test]
fn saved_spec_round_trips() {
    let mut file = minimal();
    file.bind = vec![bind::BindEntry::Short(r"/a\:b c:/x:ro".into())];
    file.env.insert("K".into(), "v".into());
    file.memory_max = Some(size::Size::Text("1G".into()));
    let spec = AgentSpec::validate(&name("bob"), &file).unwrap();
    let text = spec.to_file().to_toml();
    let again =
        AgentSpec::validate(&name("bob"), &SpecFile::from_toml(&text, "saved").unwrap()).unwrap();
    assert_eq!(spec, again);
    assert_eq!(spec.binds[0].source, PathBuf::from("/a:b c"));
}

#[test]
fn flags_override_the_file() {
    let mut file = minimal();
    file.path = vec!["/a".into()];
    file.env.insert("K".into(), "file".into());
    file.cpu_weight = Some(10);
    let mut flags = SpecFile {
        path: vec!["/b".into()],
        cpu_weight: Some(20),
        ..Default::default()
    };
    flags.env.insert("K".into(), "flag".into());
    let merged = file.overlay(flags);
    assert_eq!(merged.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(merged.env["K"], "flag");
    assert_eq!(merged.cpu_weight, Some(20));
    assert_eq!(merged.root, Some("/".into()));
}

#[test]
fn bind_short_forms() {
    let b = |s: &str| bind::BindEntry::Short(s.into()).to_bind();
    assert_eq!(b("/x").unwrap().target, PathBuf::from("/x"));
    assert!(!b("/x:/y").unwrap().readonly);
    assert!(b("/x:/y:ro").unwrap().readonly);
    assert!(!b("/x:/y:rw").unwrap().readonly);
    assert_eq!(b(r"/x\:1:/y").unwrap().source, PathBuf::from("/x:1"));
    assert_eq!(b(r"/x\\y:/y").unwrap().source, PathBuf::from(r"/x\y"));
    assert!(b("/x:/y:rx").is_err());
    assert!(b("/x:/y:ro:more").is_err());
    assert!(b(r"/x\n").is_err());
    assert!(b("x:/y").is_err());
    assert!(b("/x:y").is_err());
}

#[test]
fn every_bad_value_is_one_line_naming_the_agent() {
    type Mutation = Box<dyn Fn(&mut SpecFile)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("no root", Box::new(|f| f.root = None)),
        ("relative root", Box::new(|f| f.root = Some("srv/a".into()))),
        (
            "dotdot root",
            Box::new(|f| f.root = Some("/srv/../etc".into())),
        ),
        (
            "host root writable",
            Box::new(|f| f.volatile = Some(Volatile::No)),
        ),
        ("relative path", Box::new(|f| f.path = vec!["bin".into()])),
        ("colon in path", Box::new(|f| f.path = vec!["/a:b".into()])),
        (
            "newline in path",
            Box::new(|f| f.path = vec!["/a\nb".into()]),
        ),
        (
            "reserved bind",
            Box::new(|f| f.bind = vec![bind::BindEntry::Short("/x:/state".into())]),
        ),
        (
            "nested reserved bind",
            Box::new(|f| f.bind = vec![bind::BindEntry::Short("/x:/run/hyperhive/s".into())]),
        ),
        (
            "bind over root",
            Box::new(|f| f.bind = vec![bind::BindEntry::Short("/x:/".into())]),
        ),
        (
            "bind twice",
            Box::new(|f| {
                f.bind = vec![
                    bind::BindEntry::Short("/x:/y".into()),
                    bind::BindEntry::Short("/z:/y".into()),
                ]
            }),
        ),
        (
            "bad env key",
            Box::new(|f| {
                f.env.insert("1A".into(), "v".into());
            }),
        ),
        (
            "env PATH",
            Box::new(|f| {
                f.env.insert("PATH".into(), "/x".into());
            }),
        ),
        (
            "env HIVE_",
            Box::new(|f| {
                f.env.insert("HIVE_AGENT".into(), "x".into());
            }),
        ),
        (
            "env newline",
            Box::new(|f| {
                f.env.insert("A".into(), "a\nb".into());
            }),
        ),
        (
            "memory text",
            Box::new(|f| f.memory_max = Some(size::Size::Text("lots".into()))),
        ),
        (
            "memory zero",
            Box::new(|f| f.memory_max = Some(size::Size::Bytes(0))),
        ),
        (
            "memory overflow",
            Box::new(|f| f.memory_max = Some(size::Size::Text("99999999999T".into()))),
        ),
        ("cpu weight 0", Box::new(|f| f.cpu_weight = Some(0))),
        ("cpu weight big", Box::new(|f| f.cpu_weight = Some(10_001))),
        ("tasks 0", Box::new(|f| f.tasks_max = Some(0))),
        (
            "empty harness",
            Box::new(|f| f.harness = Some(vec![String::new()])),
        ),
    ];
    for (what, mutate) in cases {
        let mut f = minimal();
        mutate(&mut f);
        let err = AgentSpec::validate(&name("alice"), &f)
            .expect_err(what)
            .to_string();
        assert!(err.starts_with("agent alice: "), "{what}: {err}");
        assert!(!err.contains('\n'), "{what}: {err}");
    }
}

#[test]
fn bad_toml_says_where() {
    let err = SpecFile::from_toml("root = \"/\"\nvolatile = \"maybe\"\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("a.toml: line 2:"), "{err}");
    assert!(!err.contains('\n'));
    let err = SpecFile::from_toml("rooot = \"/\"\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rooot"), "{err}");
}

#[test]
fn sizes() {
    use size::parse_bytes;
    assert_eq!(parse_bytes("1024").unwrap(), 1024);
    assert_eq!(parse_bytes("4K").unwrap(), 4096);
    assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
    assert!(parse_bytes("").is_err());
    assert!(parse_bytes("-1").is_err());
    assert!(parse_bytes("1.5G").is_err());
}

#[test]
fn a_requested_change_is_laid_over_and_validated() {
    let spec = AgentSpec::validate(&name("alice"), &minimal()).unwrap();
    let change =
        AgentSpec::change_from_json(&serde_json::json!({"path": ["/opt/approved/bin"]})).unwrap();
    let changed = spec.with_change(&change).unwrap();
    assert_eq!(changed.path, vec![PathBuf::from("/opt/approved/bin")]);
    assert_eq!(changed.root, spec.root);

    for bad in [
        serde_json::json!(["not", "an", "object"]),
        serde_json::json!({"path": "not-a-list"}),
        serde_json::json!({"nonsense": 1}),
    ] {
        assert!(AgentSpec::change_from_json(&bad).is_err(), "{bad}");
    }
    let relative = AgentSpec::change_from_json(&serde_json::json!({"path": ["bin"]})).unwrap();
    let err = spec.with_change(&relative).unwrap_err().to_string();
    assert!(err.starts_with("agent alice: path entry bin"), "{err}");
}

#[test]
fn a_bind_table_with_an_unknown_key_is_refused_in_spec_files() {
    let err = SpecFile::from_toml(
        "root = \"/\"\nbind = [{ source = \"/\", target = \"/mnt/docs\", why = \"docs mirror\" }]\n",
        "alice.toml",
    )
    .unwrap_err().to_string();
    assert!(err.contains("unknown field `why`"), "{err}");
    assert!(err.starts_with("alice.toml: line 2:"), "{err}");
    let ok = SpecFile::from_toml(
        "root = \"/\"\nbind = [{ source = \"/srv\", target = \"/mnt\", readonly = true }, \"/a:/b\"]\n",
        "alice.toml",
    )
    .unwrap();
    assert_eq!(ok.bind.len(), 2);
    // The saved form reads back.
    assert_eq!(SpecFile::from_toml(&ok.to_toml(), "x").unwrap(), ok);
}

#[test]
fn hyperhives_bus_and_harness_dirs_are_reserved_targets() {
    for target in [
        "/run/dbus",
        "/run/dbus/system_bus_socket",
        "/opt/hyperhive/bin",
    ] {
        let mut f = SpecFile::from_toml("root = \"/\"\nvolatile = \"yes\"\n", "t").unwrap();
        f.bind = vec![bind::BindEntry::Short(format!("/srv:{target}"))];
        let err = AgentSpec::validate(&AgentName::parse("alice").unwrap(), &f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bound by hyperhive itself"), "{target}: {err}");
    }
}

#[test]
fn paths_that_are_not_utf8_are_refused_in_one_line() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/a\xff"));
    let mut f = SpecFile::from_toml("volatile = \"yes\"\n", "t").unwrap();
    f.root = Some(bad.clone());
    let err = AgentSpec::validate(&AgentName::parse("alice").unwrap(), &f)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "agent alice: root \"/a\\xFF\": not valid UTF-8");
    f.root = Some("/".into());
    f.path = vec![bad];
    assert!(AgentSpec::validate(&AgentName::parse("alice").unwrap(), &f)
        .unwrap_err()
        .to_string()
        .contains("not valid UTF-8"));
}

#[test]
fn a_type_error_names_the_field() {
    let e = SpecFile::from_toml("root = \"/\"\ncpu_weight = \"x\"\n", "s.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("s.toml: line 2: cpu_weight: "), "{e}");
    let e = SpecFile::from_toml("root = \"/\"\nbind = [\n  \"/a:/b\",\n  7,\n]\n", "s.toml")
        .unwrap_err()
        .to_string();
    // The bad element's own line (bind entries are parsed one by one).
    assert!(e.starts_with("s.toml: line 4: bind: "), "{e}");
    let e = SpecFile::from_toml("root = \"/\"\n[env]\nA = 1\n", "s.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("s.toml: line 3: env.A: "), "{e}");
}

#[test]
fn volatile_and_network_names_round_trip_and_refuse_in_one_line() {
    for v in [
        Volatile::No,
        Volatile::Yes,
        Volatile::State,
        Volatile::Overlay,
    ] {
        assert_eq!(v.as_str().parse::<Volatile>(), Ok(v));
    }
    for n in [Network::Host, Network::Private] {
        assert_eq!(n.as_str().parse::<Network>(), Ok(n));
    }
    assert_eq!(Volatile::Overlay.as_str(), "overlay");
    assert_eq!(
        "Yes".parse::<Volatile>().unwrap_err().to_string(),
        "invalid volatile mode \"Yes\": use no, yes, state or overlay"
    );
    assert_eq!(
        "bridge\n".parse::<Network>().unwrap_err().to_string(),
        "invalid network \"bridge\\n\": use host or private"
    );
}

#[test]
fn the_restart_grace_is_bounded_and_saved() {
    let mut file = minimal();
    file.restart_grace = Some(61);
    let e = AgentSpec::validate(&name("alice"), &file).unwrap_err();
    assert_eq!(
        e.to_string(),
        "agent alice: restart_grace 61: use 0 to 60 seconds"
    );
    file.restart_grace = Some(0);
    let spec = AgentSpec::validate(&name("alice"), &file).unwrap();
    assert_eq!(spec.restart_grace, Some(0));
    assert_eq!(spec.to_file().restart_grace, Some(0));
    assert_eq!(
        AgentSpec::validate(&name("alice"), &minimal())
            .unwrap()
            .restart_grace,
        None
    );
}
