//! Property tests of everything that parses what an admin or an agent hands hyperhive: spec
//! files, agent names, the bind short form and its nspawn escaping, and the agent socket's
//! protocol. Each property runs through the public API, with a moderate number of cases so
//! the whole file stays within a few seconds.
//!
//! Every run uses a fresh seed; a failure prints it, and `HYPERHIVE_PROPTEST_SEED=<seed>`
//! replays exactly that run. Each property prints how many inputs it tried (`--nocapture`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use hyperhive::plan::{self, Host, Prop};
use hyperhive::socket::protocol::{encode, parse_request, Request};
use hyperhive::spec::bind::BindEntry;
use hyperhive::spec::size::Size;
use hyperhive::spec::{AgentName, AgentSpec, Network, SpecFile, Volatile, RESERVED_TARGETS};

/// Runs `test` on `cases` inputs drawn from `strategy` and reports how many it tried
/// (shrinking included). Panics with the seed and the smallest failing input.
fn check<S>(
    what: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let seed = std::env::var("HYPERHIVE_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let config = Config {
        cases,
        // Nothing is written into the source tree; the seed above replays a failure.
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let tried = AtomicU64::new(0);
    let result = TestRunner::new(config).run(&strategy, |value| {
        tried.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    let tried = tried.into_inner();
    eprintln!("property {what}: {tried} inputs tried");
    if let Err(e) = result {
        panic!("property {what} failed (HYPERHIVE_PROPTEST_SEED={seed}, {tried} inputs): {e}");
    }
}

/// How strictly [`one_line`] reads an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lines {
    /// No line feed and no carriage return anywhere.
    Strict,
    /// The same, except inside a `backtick-quoted` echo of the input. Known bug, reported:
    /// the TOML and JSON parsers echo an offending key or variant verbatim (`"a\rb" = 1` in
    /// a spec, `{"type":"a\nb"}` on the socket), so a line break from the input reaches the
    /// message. The suite-wide properties use this until that is fixed; the `bug_*` tests
    /// below hold the strict check.
    EchoTolerant,
}

/// An error fit for one line of stderr.
fn one_line(what: &str, err: &str, lines: Lines) -> Result<(), TestCaseError> {
    prop_assert!(!err.is_empty(), "{what}: empty error");
    let checked = match lines {
        Lines::Strict => err.to_owned(),
        Lines::EchoTolerant => outside_backticks(err),
    };
    prop_assert!(
        !checked.contains(['\n', '\r']),
        "{what}: error is not one line: {err:?}"
    );
    Ok(())
}

/// `err` without what stands between pairs of backticks.
fn outside_backticks(err: &str) -> String {
    err.split('`').step_by(2).collect()
}

// ---------------------------------------------------------------------------------------
// Agent names
// ---------------------------------------------------------------------------------------

/// `^[a-z][a-z0-9-]{0,30}$`, written out by hand as the contract states it.
fn name_reference(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 31
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn name_candidates() -> impl Strategy<Value = String> {
    prop_oneof![
        // Around the contract and its length limit.
        "[a-z][a-z0-9-]{0,34}",
        // Near misses: one odd character somewhere in an otherwise good name.
        (
            "[a-z][a-z0-9-]{0,20}",
            "[A-Z_./ \\\\:@\\x00\\n\u{e9}\u{131}\u{212a}]",
            any::<prop::sample::Index>()
        )
            .prop_map(|(s, bad, at)| {
                let i = at.index(s.len() + 1);
                format!("{}{}{}", &s[..i], bad, &s[i..])
            }),
        "[a-zA-Z0-9_./ -]{0,40}",
        any::<String>(),
    ]
}

#[test]
fn agent_names_are_exactly_the_contract() {
    check("agent name parse", 3_000, name_candidates(), |raw| {
        let parsed = AgentName::parse(&raw);
        prop_assert_eq!(
            parsed.is_ok(),
            name_reference(&raw),
            "{:?}: {:?}",
            raw,
            parsed
        );
        match parsed {
            Ok(name) => {
                prop_assert_eq!(name.as_str(), raw.as_str());
                let unit = name.container_unit();
                prop_assert_eq!(&unit, &format!("hive-agent-{raw}.service"));
                prop_assert_eq!(name.machine(), format!("h-{raw}"));
                prop_assert_eq!(AgentName::from_container_unit(&unit), Some(name.clone()));
                // The D-Bus object path is valid and tells names apart (sd_bus_path_encode).
                let path = hyperhive::api::agent_path(&raw);
                prop_assert!(
                    zbus::zvariant::ObjectPath::try_from(path.as_str()).is_ok(),
                    "{path}"
                );
                prop_assert_eq!(decode_agent_path(&path), raw);
            }
            Err(e) => one_line("agent name", &e.to_string(), Lines::Strict)?,
        }
        Ok(())
    });
}

/// The inverse of `sd_bus_path_encode` for the last path element.
fn decode_agent_path(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap();
    let mut out = Vec::new();
    let b = last.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            out.push(u8::from_str_radix(&last[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn only_our_own_unit_names_map_back_to_agents() {
    let unit = prop_oneof![
        name_candidates().prop_map(|n| format!("hive-agent-{n}.service")),
        name_candidates().prop_map(|n| format!("hive-agent-{n}")),
        name_candidates().prop_map(|n| format!("{n}.service")),
        any::<String>(),
    ];
    check("unit name → agent", 2_000, unit, |unit| {
        if let Some(name) = AgentName::from_container_unit(&unit) {
            prop_assert_eq!(name.container_unit(), unit);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Paths and binds
// ---------------------------------------------------------------------------------------

/// A path component with the characters that break naive escaping: spaces, colons,
/// backslashes, quotes, `$`, `=`, `,`, non-ASCII. Never `.` or `..`.
fn component() -> impl Strategy<Value = String> {
    "[a-z0-9 :\\\\_.,=$'\"#é日-]{1,8}".prop_filter("not . or ..", |c| c != "." && c != "..")
}

fn abs_path() -> impl Strategy<Value = PathBuf> {
    vec(component(), 1..4).prop_map(|parts| PathBuf::from(format!("/{}", parts.join("/"))))
}

/// The short form's escaping: `\` → `\\`, `:` → `\:`.
fn escape(p: &Path) -> String {
    p.to_str().unwrap().replace('\\', r"\\").replace(':', r"\:")
}

/// nspawn's reading of `--bind=`'s value: a backslash takes the next character literally,
/// an unescaped `:` separates.
fn nspawn_split(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => parts.last_mut().unwrap().extend(chars.next()),
            ':' => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

#[derive(Debug, Clone, Copy)]
enum ShortForm {
    SourceOnly,
    SourceColon,
    Target,
    TargetRo,
    TargetRw,
    EmptyTargetRo,
}

#[test]
fn bind_short_form_parses_back_to_the_paths() {
    let form = prop_oneof![
        Just(ShortForm::SourceOnly),
        Just(ShortForm::SourceColon),
        Just(ShortForm::Target),
        Just(ShortForm::TargetRo),
        Just(ShortForm::TargetRw),
        Just(ShortForm::EmptyTargetRo),
    ];
    check(
        "bind short form",
        2_000,
        (abs_path(), abs_path(), form),
        |(src, dst, form)| {
            let (s, target, readonly) = match form {
                ShortForm::SourceOnly => (escape(&src), src.clone(), false),
                ShortForm::SourceColon => (format!("{}:", escape(&src)), src.clone(), false),
                ShortForm::Target => (format!("{}:{}", escape(&src), escape(&dst)), dst, false),
                ShortForm::TargetRo => (format!("{}:{}:ro", escape(&src), escape(&dst)), dst, true),
                ShortForm::TargetRw => {
                    (format!("{}:{}:rw", escape(&src), escape(&dst)), dst, false)
                }
                ShortForm::EmptyTargetRo => (format!("{}::ro", escape(&src)), src.clone(), true),
            };
            let bind = BindEntry::Short(s.clone())
                .to_bind()
                .map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
            prop_assert_eq!(&bind.source, &src, "{:?}", s);
            prop_assert_eq!(&bind.target, &target, "{:?}", s);
            prop_assert_eq!(bind.readonly, readonly);
            Ok(())
        },
    );
}

#[test]
fn any_bind_string_is_parsed_or_refused_in_one_line() {
    let raw = prop_oneof![
        "[/a-z:\\\\ .ro]{0,24}",
        (abs_path(), "[:\\\\]{1,3}", "[a-z:\\\\]{0,6}")
            .prop_map(|(p, sep, tail)| format!("{}{sep}{tail}", p.display())),
        any::<String>(),
    ];
    check("bind string", 2_000, raw, |s| {
        match BindEntry::Short(s.clone()).to_bind() {
            Ok(b) => {
                prop_assert!(b.source.is_absolute() && b.target.is_absolute(), "{s:?}");
                prop_assert!(!b.source.to_string_lossy().contains("/../"));
            }
            Err(e) => one_line("bind", &e.to_string(), Lines::Strict)?,
        }
        Ok(())
    });
}

#[test]
fn bind_arg_escapes_so_nspawn_reads_back_the_paths() {
    check(
        "plan::bind_arg",
        2_000,
        (abs_path(), abs_path(), any::<bool>(), any::<bool>()),
        |(src, dst, ro, idmap)| {
            let arg = plan::bind_arg(&src, &dst, ro, idmap);
            let flag = if ro { "--bind-ro=" } else { "--bind=" };
            let value = arg
                .strip_prefix(flag)
                .ok_or_else(|| TestCaseError::fail(format!("{arg}: not {flag}")))?;
            let parts = nspawn_split(value);
            let mut expected = vec![src.display().to_string(), dst.display().to_string()];
            if idmap {
                expected.push("idmap".into());
            }
            prop_assert_eq!(parts, expected, "{}", arg);
            if idmap {
                return Ok(());
            }
            // Our short form speaks nspawn's syntax: the same string parses back too.
            let bind = BindEntry::Short(value.to_owned()).to_bind().unwrap();
            prop_assert_eq!((bind.source, bind.target), (src, dst));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------
// Spec files
// ---------------------------------------------------------------------------------------

const SPEC_KEYS: &[&str] = &[
    "root",
    "volatile",
    "path",
    "bind",
    "env",
    "memory_max",
    "cpu_weight",
    "tasks_max",
    "network",
    "harness",
    "source",
    "target",
    "readonly",
    "unknown",
    "Root",
    "env.FOO",
    "env.HIVE_X",
    "env.PATH",
    "\"quoted key\"",
    "'lit key'",
    "\"a\\nb\"",
    "\"a\\rb\"",
    "a.b.c",
    "",
];

fn toml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(SPEC_KEYS).prop_map(str::to_owned),
        1 => "[A-Za-z_][A-Za-z0-9_]{0,6}",
    ]
}

/// Text that a basic or literal TOML string might hold, escapes (good and bad) included.
fn toml_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[ -~]{0,8}",
        prop::sample::select(
            &[
                "\\n",
                "\\r",
                "\\t",
                "\\\"",
                "\\\\",
                "\\u00e9",
                "\\u2028",
                "\\U0001F600",
                "\\q",
                "\\u12",
                "\\x41",
                "\\:",
                "/srv/a\\\\:b",
                "/state",
                "/run/hyperhive/x",
                "/",
                "..",
                "/a/../b",
                "yes",
                "no",
                "overlay",
                "private",
                "512M",
                "0",
                "99999999999T",
                "18446744073709551615",
                "${PATH}",
                "$$",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
    ];
    let quote = prop::sample::select(&["\"", "'", "\"\"\"", "'''"][..]);
    (vec(piece, 0..5), quote).prop_map(|(p, q)| format!("{q}{}{q}", p.concat()))
}

fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => toml_string(),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => prop::sample::select(&[
            "18446744073709551615", "9223372036854775808", "0x1F", "1_000", "-0", "0", "1",
            "10000", "10001", "inf", "nan", "1e400", "3.5", "true", "false",
            "1979-05-27T07:32:00Z", "07:32:00", "", "=", "[", "{",
        ][..])
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            vec((toml_key(), inner), 0..4).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

/// `s` as a TOML basic string.
fn toml_str(s: String) -> String {
    toml::Value::String(s).to_string()
}

/// A value of roughly the right type for a spec key, often valid, sometimes just wrong.
fn spec_value(key: &'static str) -> BoxedStrategy<String> {
    let text = || prop_oneof!["[ -~]{0,10}", any::<String>()];
    let path = || {
        prop_oneof![
            3 => abs_path().prop_map(|p| p.display().to_string()),
            1 => "[/a-z.:]{0,12}",
            1 => any::<String>(),
        ]
    };
    let int =
        || prop_oneof![0i64..20_000, any::<i64>(), Just(i64::MAX),].prop_map(|i| i.to_string());
    match key {
        "root" => path().prop_map(toml_str).boxed(),
        "volatile" | "network" => prop_oneof![
            3 => prop::sample::select(&["no", "yes", "state", "overlay", "host", "private"][..])
                .prop_map(str::to_owned),
            1 => text(),
        ]
        .prop_map(toml_str)
        .boxed(),
        "path" => vec(path().prop_map(toml_str), 0..3)
            .prop_map(|v| format!("[{}]", v.join(", ")))
            .boxed(),
        "bind" => vec(
            prop_oneof![
                (
                    path(),
                    path(),
                    prop::sample::select(&["", ":ro", ":rw", ":x"][..])
                )
                    .prop_map(|(s, t, o)| toml_str(format!(
                        "{}:{}{o}",
                        escape(Path::new(&s)),
                        escape(Path::new(&t))
                    ))),
                (path(), prop::option::of(path()), any::<bool>()).prop_map(|(s, t, ro)| {
                    let t = t
                        .map(|t| format!(", target = {}", toml_str(t)))
                        .unwrap_or_default();
                    format!("{{ source = {}{t}, readonly = {ro} }}", toml_str(s))
                }),
            ],
            0..3,
        )
        .prop_map(|v| format!("[{}]", v.join(", ")))
        .boxed(),
        "env" => vec(("[A-Za-z_][A-Za-z0-9_]{0,6}|PATH|HIVE_X|1X|", text()), 0..3)
            .prop_map(move |kv| {
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                    .collect();
                format!("{{ {} }}", body.join(", "))
            })
            .boxed(),
        "memory_max" => prop_oneof![
            int(),
            (
                "[0-9]{1,8}",
                prop::sample::select(&["", "K", "M", "G", "T", "B", "X", " M"][..])
            )
                .prop_map(move |(n, u)| toml_str(format!("{n}{u}"))),
        ]
        .boxed(),
        "harness" => vec(text().prop_map(toml_str), 0..3)
            .prop_map(|v| format!("[{}]", v.join(", ")))
            .boxed(),
        _ => int().boxed(),
    }
}

/// TOML-ish documents: spec-shaped lines (often with a usable root, so validation gets
/// its turn), generic key/value lines, headers, comments and junk, with CRLF endings and
/// truncation now and then.
fn toml_ish() -> impl Strategy<Value = String> {
    let spec_line = prop::sample::select(
        &[
            "root",
            "volatile",
            "path",
            "bind",
            "env",
            "memory_max",
            "cpu_weight",
            "tasks_max",
            "network",
            "harness",
        ][..],
    )
    .prop_flat_map(|k| spec_value(k).prop_map(move |v| format!("{k} = {v}")));
    let line = prop_oneof![
        6 => spec_line,
        3 => (toml_key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(&["[env]", "[[bind]]", "[bind]", "[root]", "[[x]]", "["][..])
            .prop_map(str::to_owned),
        1 => "# [ -~]{0,10}",
        1 => any::<String>(),
    ];
    let head = prop::sample::select(
        &[
            "",
            "root = \"/srv/agent\"\n",
            "root = \"/\"\nvolatile = \"yes\"\n",
        ][..],
    );
    (
        head,
        vec(line, 0..6),
        any::<bool>(),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    )
        .prop_map(|(head, lines, crlf, cut)| {
            let mut text = format!("{head}{}", lines.join(if crlf { "\r\n" } else { "\n" }));
            if let Some(cut) = cut {
                let mut at = cut.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            text
        })
}

/// Parse, validate and, if valid, save and reload: never a panic, every error one line
/// that names where it came from, and what validates survives the round trip.
fn parse_validate_round_trip(text: &str, lines: Lines) -> Result<(), TestCaseError> {
    let origin = "/etc/hyperhive/agents/alice.toml";
    let file = match SpecFile::from_toml(text, origin) {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_string();
            prop_assert!(e.starts_with(&format!("{origin}: ")), "{e:?}");
            return one_line("spec file", &e, lines);
        }
    };
    let name = AgentName::parse("alice").unwrap();
    match AgentSpec::validate(&name, &file) {
        Ok(spec) => round_trip(&spec)?,
        Err(e) => {
            let e = e.to_string();
            prop_assert!(e.starts_with("agent alice: "), "{e:?}");
            one_line("spec", &e, lines)?;
        }
    }
    Ok(())
}

/// The saved form of a valid spec loads back as the same spec, and saving is stable.
fn round_trip(spec: &AgentSpec) -> Result<(), TestCaseError> {
    let text = spec.to_file().to_toml();
    let file = SpecFile::from_toml(&text, "saved")
        .map_err(|e| TestCaseError::fail(format!("saved spec does not parse: {e}\n{text}")))?;
    let again = AgentSpec::validate(&spec.name, &file)
        .map_err(|e| TestCaseError::fail(format!("saved spec does not validate: {e}\n{text}")))?;
    prop_assert_eq!(&again, spec, "{}", text);
    prop_assert_eq!(again.to_file().to_toml(), text);
    Ok(())
}

#[test]
fn toml_ish_text_never_panics_and_errors_are_one_line() {
    check("spec from TOML-ish text", 2_000, toml_ish(), |text| {
        parse_validate_round_trip(&text, Lines::EchoTolerant)
    });
}

#[test]
fn arbitrary_text_never_panics_and_errors_are_one_line() {
    check("spec from arbitrary text", 1_000, any::<String>(), |text| {
        parse_validate_round_trip(&text, Lines::EchoTolerant)
    });
}

/// Paths that validate: absolute, no `..`, no control characters; `//` and `/./` are
/// allowed in the input and cleaned by validation.
fn messy_abs_path() -> impl Strategy<Value = (PathBuf, PathBuf)> {
    vec(
        (component(), prop::sample::select(&["/", "//", "/./"][..])),
        1..4,
    )
    .prop_map(|parts| {
        let mut raw = String::new();
        let mut clean = String::new();
        for (c, sep) in parts {
            raw.push_str(sep);
            raw.push_str(&c);
            clean.push('/');
            clean.push_str(&c);
        }
        (PathBuf::from(raw), PathBuf::from(clean))
    })
}

/// Limits that fit TOML's integers (i64); see `bug_*_above_i64_max_*` below for the rest.
const TOML_INT_MAX: u64 = i64::MAX as u64;

fn env_key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}".prop_filter("reserved", |k| k != "PATH" && !k.starts_with("HIVE_"))
}

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,12}",
        any::<String>().prop_map(|s| s.chars().filter(|c| !c.is_control()).collect()),
    ]
}

fn memory_max() -> impl Strategy<Value = Option<Size>> {
    prop_oneof![
        Just(None),
        (1..=TOML_INT_MAX).prop_map(|b| Some(Size::Bytes(b))),
        (
            1u64..1_000_000,
            prop::sample::select(&["", "B", "K", "M", "G", "T"][..])
        )
            .prop_map(|(n, unit)| Some(Size::Text(format!("{n}{unit}")))),
    ]
}

fn valid_spec_file() -> impl Strategy<Value = SpecFile> {
    let bind = (messy_abs_path(), component(), any::<bool>(), any::<bool>());
    (
        (
            prop_oneof![Just(None), messy_abs_path().prop_map(Some)],
            prop::sample::select(
                &[
                    Volatile::No,
                    Volatile::Yes,
                    Volatile::State,
                    Volatile::Overlay,
                ][..],
            ),
            vec(messy_abs_path(), 0..3),
            vec(bind, 0..4),
            btree_map(env_key(), env_value(), 0..4),
        ),
        (
            memory_max(),
            prop::option::of(1u64..=10_000),
            prop::option::of(1..=TOML_INT_MAX),
            prop::option::of(prop::sample::select(&[Network::Host, Network::Private][..])),
            prop::option::of(vec(any::<String>().prop_map(|s| s.replace('\0', "")), 1..4)),
        ),
    )
        .prop_map(
            |(
                (root, volatile, path, binds, env),
                (memory_max, cpu_weight, tasks_max, network, harness),
            )| {
                // `/` needs a volatile mode; other roots take any.
                let (root, volatile) = match root {
                    None => (
                        PathBuf::from("/"),
                        if volatile == Volatile::No {
                            Volatile::Yes
                        } else {
                            volatile
                        },
                    ),
                    Some((raw, _)) => (raw, volatile),
                };
                let path = path
                    .into_iter()
                    .map(|(raw, _)| PathBuf::from(raw.to_str().unwrap().replace(':', "_")))
                    .collect();
                // Distinct targets under /mnt/<i>, so no two collide and none is reserved.
                let bind = binds
                    .into_iter()
                    .enumerate()
                    .map(|(i, ((src, _), leaf, short, ro))| {
                        let target = PathBuf::from(format!("/mnt/{i}/{leaf}"));
                        if short {
                            BindEntry::Short(format!(
                                "{}:{}{}",
                                escape(&src),
                                escape(&target),
                                if ro { ":ro" } else { "" }
                            ))
                        } else {
                            BindEntry::Full {
                                source: src,
                                target: Some(target),
                                readonly: ro,
                            }
                        }
                    })
                    .collect();
                let harness = harness.map(|mut h| {
                    if h[0].is_empty() {
                        h[0] = "claude".into();
                    }
                    h
                });
                SpecFile {
                    root: Some(root),
                    system: None,
                    volatile: Some(volatile),
                    path,
                    bind,
                    env,
                    memory_max,
                    cpu_weight,
                    tasks_max,
                    // Varied by the tasks bound: none, or a round size past the minimum.
                    disk_max: tasks_max.map(|t| Size::Bytes((64 + t % 4096) << 20)),
                    // Varied without widening the strategy tuple past proptest's arity.
                    autostart: cpu_weight.map(|w| w % 2 == 0),
                    private_users: tasks_max.map(|t| t % 2 == 0),
                    capabilities: match cpu_weight.map(|w| w % 3) {
                        Some(0) => vec!["CAP_NET_RAW".into()],
                        Some(1) => vec!["CAP_SYS_TTY_CONFIG".into(), "CAP_NET_RAW".into()],
                        _ => vec![],
                    },
                    // The turn loop needs a harness command; its timeout only with turns.
                    turns: harness.as_ref().and(tasks_max).map(|t| t % 3 == 0),
                    turn_timeout: harness
                        .as_ref()
                        .and(tasks_max)
                        .filter(|t| t % 3 == 0)
                        .map(|t| t % 86_400 + 1),
                    restart_grace: cpu_weight.map(|w| w % 61),
                    // A Claude Code agent's harness is claude itself: only without one.
                    claude: harness.is_none().then(|| hyperhive::spec::ClaudeFile {
                        model: cpu_weight.map(|w| format!("model-{w}")),
                        allowed_tools: tasks_max
                            .map(|t| vec![format!("Bash(echo {t}:*)")])
                            .unwrap_or_default(),
                        budget_usd_per_day: tasks_max.map(|t| (t % 100 + 1) as f64 / 4.0),
                        ..Default::default()
                    }),
                    // Egress only where it applies: a private network.
                    egress: match (network, tasks_max.map(|t| t % 3)) {
                        (Some(Network::Host), _) | (_, None) | (_, Some(0)) => vec![],
                        (_, Some(1)) => vec!["api.example.com".into(), "*.example.org:8443".into()],
                        _ => vec!["10.0.0.0/8:80".into(), "[fd00::1]".into()],
                    },
                    // Ports, too, only from a private network.
                    ports: match (network, cpu_weight) {
                        (Some(Network::Host), _) | (_, None) => vec![],
                        (_, Some(w)) => vec![(w % 65_535 + 1) as u16],
                    },
                    network,
                    harness,
                }
            },
        )
}

#[test]
fn valid_specs_round_trip_through_the_saved_form() {
    let name = AgentName::parse("alice").unwrap();
    check("valid spec round trip", 800, valid_spec_file(), |file| {
        let spec = AgentSpec::validate(&name, &file)
            .map_err(|e| TestCaseError::fail(format!("generated spec refused: {e}")))?;
        for b in &spec.binds {
            prop_assert!(!RESERVED_TARGETS.iter().any(|r| b.target.starts_with(r)));
        }
        round_trip(&spec)?;
        // The spec also survives being written as TOML by hand (the file layer itself).
        let text = file.to_toml();
        let reparsed = SpecFile::from_toml(&text, "layer")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(AgentSpec::validate(&name, &reparsed), Ok(spec.clone()));
        // And every bind reaches nspawn with its paths intact.
        let plan = plan::container_unit(&spec, &test_host());
        let Some(Prop::Exec(exec)) = plan.get("ExecStart") else {
            return Err(TestCaseError::fail("no ExecStart"));
        };
        // systemd turns `$$` back into `$` before nspawn sees the argument (the planner
        // doubles every `$` so systemd does not expand variables in a path).
        let args: Vec<String> = exec[0].argv.iter().map(|a| a.replace("$$", "$")).collect();
        for b in &spec.binds {
            let flag = if b.readonly { "--bind-ro=" } else { "--bind=" };
            let mut want = vec![
                b.source.display().to_string(),
                b.target.display().to_string(),
            ];
            if spec.private_users {
                want.push("idmap".into());
            }
            prop_assert!(
                args.iter()
                    .filter_map(|a| a.strip_prefix(flag))
                    .any(|v| nspawn_split(v) == want),
                "bind {:?} missing from {:?}",
                b,
                args
            );
        }
        // The env's values reach the harness unit intact, and no command line.
        let harness = plan::harness_unit(&spec, &test_host());
        let Some(Prop::Strv(env)) = harness.get("Environment") else {
            return Err(TestCaseError::fail("no harness Environment"));
        };
        for (k, v) in &spec.env {
            let kv = format!("{k}={v}");
            prop_assert!(env.contains(&kv), "{} missing from the harness", kv);
            prop_assert!(
                !args
                    .iter()
                    .any(|a| a.starts_with(&format!("--setenv={k}="))),
                "{} on the container's command line",
                k
            );
        }
        Ok(())
    });
}

fn test_host() -> Host {
    Host {
        roots: hyperhive::paths::Roots::default(),
        nspawn: "/usr/bin/systemd-nspawn".into(),
        hive_c0re: "/usr/bin/hive-c0re".into(),
        hive_harness: "/usr/bin/hive-harness".into(),
        base_path: vec!["/usr/bin".into()],
        journal: None,
        defaults: hyperhive::spec::bounds::Defaults::shipped(8 << 30),
        disk_images: false,
    }
}

/// A limit above i64::MAX validates, but TOML integers are i64, so saving the spec
/// (`to_toml`, "a spec always serializes") panics: `hivectl create x --tasks-max
/// 18446744073709551615` or `--memory-max 9000000T` aborts hivectl with a panic instead
/// of exit 2. Un-ignore once validation caps the limits (or saving accepts them).
#[test]
fn bug_limits_above_i64_max_validate_but_cannot_be_saved() {
    let name = AgentName::parse("alice").unwrap();
    for file in [
        SpecFile {
            root: Some("/".into()),
            volatile: Some(Volatile::Yes),
            tasks_max: Some(u64::MAX),
            ..Default::default()
        },
        SpecFile {
            root: Some("/".into()),
            volatile: Some(Volatile::Yes),
            memory_max: Some(Size::Text("9000000T".into())),
            ..Default::default()
        },
    ] {
        match AgentSpec::validate(&name, &file) {
            Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
            Ok(spec) => {
                let saved = std::panic::catch_unwind(|| spec.to_file().to_toml());
                assert!(saved.is_ok(), "validated, but saving panicked: {file:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The agent socket's protocol
// ---------------------------------------------------------------------------------------

/// Any JSON value; with `floats`, finite f64 numbers too (see
/// `bug_floats_change_through_the_protocol`).
fn json_value(floats: bool) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", move |f| if floats {
            serde_json::Number::from_f64(f).map(Value::Number)
        } else {
            Some(Value::from(f as i64))
        }),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request(floats: bool) -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u32>().prop_map(|version| Request::Hello { version }),
        Just(Request::Ping {}),
        ("[a-z0-9_]{1,64}", json_value(floats))
            .prop_map(|(name, data)| Request::Event { name, data }),
        (any::<String>(), json_value(floats))
            .prop_map(|(kind, payload)| Request::RequestApproval { kind, payload }),
    ]
}

#[test]
fn every_request_round_trips_through_encode() {
    check("protocol round trip", 2_000, request(false), |req| {
        let line = encode(&req);
        prop_assert_eq!(line.last(), Some(&b'\n'));
        prop_assert_eq!(
            line.iter().filter(|&&b| b == b'\n').count(),
            1,
            "a message is exactly one line"
        );
        let back = parse_request(&line[..line.len() - 1])
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&line))))?;
        prop_assert_eq!(back, req);
        Ok(())
    });
}

#[test]
fn arbitrary_bytes_never_panic_and_errors_are_one_line() {
    check(
        "protocol arbitrary bytes",
        3_000,
        vec(any::<u8>(), 0..256),
        |bytes| check_parse(&bytes, Lines::EchoTolerant),
    );
}

fn check_parse(bytes: &[u8], lines: Lines) -> Result<(), TestCaseError> {
    match parse_request(bytes) {
        Ok(req) => {
            // What was accepted means the same once re-encoded.
            let line = encode(&req);
            prop_assert_eq!(parse_request(&line[..line.len() - 1]).ok(), Some(req));
        }
        Err(e) => one_line("protocol", &e, lines)?,
    }
    Ok(())
}

/// JSON-shaped lines close to real messages: known and unknown types (escapes included),
/// known and unknown fields, odd values, duplicate keys.
fn json_ish() -> impl Strategy<Value = String> {
    let json_str = |s: &str| serde_json::to_string(s).unwrap();
    let type_name = prop_oneof![
        prop::sample::select(
            &[
                "hello",
                "ping",
                "event",
                "request_approval",
                "welcome",
                "pong",
                "error",
                "",
                "Hello",
                "a\nb",
                "a\rb",
                "ping\n",
                "\u{2028}",
                "\u{0}",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    let field = prop_oneof![
        prop::sample::select(
            &["version", "name", "data", "kind", "payload", "agent", "type", "x\ny", "id",][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    let value = prop_oneof![
        json_value(true).prop_map(|v| v.to_string()),
        prop::sample::select(
            &[
                "1",
                "-1",
                "4294967296",
                "1e3",
                "\"turn_done\"",
                "\"Bad Name\"",
                "\"a\\nb\"",
                "null",
                "{}",
                "[]",
                "\"\\ud800\"",
                "01",
                "1.",
                "tru",
                "\"",
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    (
        prop::option::of(type_name),
        vec((field, value), 0..4),
        any::<bool>(),
    )
        .prop_map(move |(ty, fields, type_last)| {
            let mut parts: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", json_str(&k)))
                .collect();
            if let Some(ty) = ty {
                let t = format!("\"type\":{}", json_str(&ty));
                if type_last {
                    parts.push(t);
                } else {
                    parts.insert(0, t);
                }
            }
            format!("{{{}}}", parts.join(","))
        })
}

#[test]
fn json_shaped_lines_never_panic_and_errors_are_one_line() {
    check("protocol JSON-shaped lines", 2_000, json_ish(), |line| {
        check_parse(line.as_bytes(), Lines::EchoTolerant)
    });
}

#[test]
fn event_names_are_exactly_the_contract() {
    let name = prop_oneof!["[a-z0-9_]{0,66}", "[a-zA-Z0-9_ .-]{0,10}", any::<String>()];
    check("protocol event name", 2_000, name, |name| {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let line = serde_json::json!({"type": "event", "name": name}).to_string();
        let parsed = parse_request(line.as_bytes());
        prop_assert_eq!(parsed.is_ok(), ok, "{}: {:?}", line, parsed);
        Ok(())
    });
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200usize, 10_000, 100_000] {
        let open = "[".repeat(depth);
        for line in [
            open.clone(),
            format!("{{\"type\":\"event\",\"name\":\"x\",\"data\":{open}"),
            format!(
                "{{\"type\":\"request_approval\",\"kind\":\"k\",\"payload\":{}1{}}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            ),
        ] {
            let err = parse_request(line.as_bytes()).unwrap_err();
            assert!(!err.contains(['\n', '\r']), "{err}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bugs found here (fixed; each test holds its fix)
// ---------------------------------------------------------------------------------------

/// A spec error echoes the offending key or value verbatim, and `from_toml` only replaces
/// `\n`: a `\r` from the input stays, so the one-line error is not one line on a terminal
/// (the same path lets any other control character, e.g. ESC, reach the admin's terminal).
/// Reproduction: `printf '"a\\rb" = 1\n' > s.toml; hivectl create x --spec s.toml`.
#[test]
fn bug_spec_errors_echo_carriage_returns() {
    for text in [
        "\"a\\rb\" = 1",
        "volatile = \"a\\rb\"",
        "network = \"x\\r\\ny\"",
        "\"a\\rb\" = 1\n\"a\\rb\" = 2",
    ] {
        let err = SpecFile::from_toml(text, "s.toml").unwrap_err().to_string();
        assert!(!err.contains(['\n', '\r']), "{text:?} → {err:?}");
    }
    check(
        "spec from TOML-ish text, strict",
        3_000,
        toml_ish(),
        |text| parse_validate_round_trip(&text, Lines::Strict),
    );
}

/// `parse_request` passes serde_json's message through, which echoes an unknown variant or
/// field with its line breaks decoded. Reproduction: send `{"type":"a\nb"}` on an agent
/// socket; the error reply (and anything that logs it) holds a real newline.
#[test]
fn bug_socket_errors_echo_line_breaks() {
    for line in [
        r#"{"type":"a\nb"}"#,
        r#"{"type":"ping","x\ny":1}"#,
        r#"{"type":"hello","version":1,"a\rb":0}"#,
    ] {
        let err = parse_request(line.as_bytes()).unwrap_err();
        assert!(!err.contains(['\n', '\r']), "{line} → {err:?}");
    }
    check(
        "protocol JSON-shaped lines, strict",
        3_000,
        json_ish(),
        |line| check_parse(line.as_bytes(), Lines::Strict),
    );
}

/// serde_json parses floats "best effort" unless its `float_roundtrip` feature is on, so
/// a float an agent sends in an event's `data` or an approval's `payload` can come back a
/// bit different: -1.7306805550172174e305 is read as -1.7306805550172176e305. Fix: enable
/// `serde_json/float_roundtrip` in Cargo.toml.
#[test]
fn bug_floats_change_through_the_protocol() {
    let req = Request::Event {
        name: "x".into(),
        data: serde_json::json!(-1.7306805550172174e305),
    };
    let line = encode(&req);
    assert_eq!(parse_request(&line[..line.len() - 1]), Ok(req));
    check(
        "protocol round trip with floats",
        2_000,
        request(true),
        |req| {
            let line = encode(&req);
            prop_assert_eq!(parse_request(&line[..line.len() - 1]), Ok(req));
            Ok(())
        },
    );
}
