//! What an agent may ask for through its socket: an explicit allowlist of spec fields, so
//! a field added to specs later (`private_users`, `capabilities`, …) is refused by
//! construction until someone decides an agent may ask for it. Pure, except nothing: the
//! checks that need the host (does a bind source exist, is any part of it a symlink) live
//! in `hive::request_checks`. See docs/approvals.md "What an agent may ask for".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::bind::BindEntry;
use super::bounds::Defaults;
use super::size::Size;
use super::{AgentSpec, SpecError, SpecFile, RESERVED_TARGETS};

/// The fields an agent may ask for. None widens what the agent can reach beyond what an
/// admin sees in the request: PATH entries and environment act inside the container; a
/// bind's source is checked on the host (see [`protected_source`]); limits may only go
/// down. Never `root`, `volatile`, `network`, `harness`, `autostart`, nor any user
/// namespace or capability setting. `disk_max` is the one bound an agent may ask to raise
/// (its data grows; an admin decides), at most [`MAX_DISK_GROWTH`] times at once.
pub const ALLOWED_FIELDS: [&str; 8] = [
    "egress",
    "path",
    "env",
    "bind",
    "memory_max",
    "tasks_max",
    "cpu_weight",
    "disk_max",
];

/// The most one request may multiply an agent's disk bound by.
pub const MAX_DISK_GROWTH: u64 = 4;

/// Largest request payload, as compact JSON. A real spec change (a few paths, variables
/// or binds) is well under 1 KiB; 4 KiB leaves room for that and keeps what one agent can
/// park in the store and the journal small: 32 pending requests × 4 KiB = 128 KiB.
pub const MAX_PAYLOAD: usize = 4 * 1024;

/// A request as an agent may make it: only allowlisted fields, unknown keys refused at
/// every level (bind tables included).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    #[serde(default)]
    pub path: Vec<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub bind: Vec<BindEntry>,
    #[serde(default)]
    pub memory_max: Option<Size>,
    #[serde(default)]
    pub tasks_max: Option<u64>,
    #[serde(default)]
    pub cpu_weight: Option<u64>,
    /// More disk: above its bound, at most [`MAX_DISK_GROWTH`] times it.
    #[serde(default)]
    pub disk_max: Option<Size>,
    /// Names (never addresses) added to the egress allowlist; see [`MAX_EGRESS_ASKED`].
    #[serde(default)]
    pub egress: Vec<String>,
}

/// Most egress entries one request may add.
pub const MAX_EGRESS_ASKED: usize = 8;

impl AgentRequest {
    /// Parses a `spec_change` payload. The error is one line, safe to send back and log.
    pub fn parse(payload: &serde_json::Value) -> Result<AgentRequest, SpecError> {
        let Some(fields) = payload.as_object() else {
            return Err(SpecError::ChangeNotObject);
        };
        if let Some(key) = fields
            .keys()
            .find(|k| !ALLOWED_FIELDS.contains(&k.as_str()))
        {
            return Err(SpecError::FieldNotAllowed { field: shown(key) });
        }
        shown_text(payload)?;
        let req: AgentRequest = serde_json::from_value(payload.clone())
            .map_err(|e| SpecError::ChangeInvalid(super::one_line(&e.to_string())))?;
        if req == AgentRequest::default() {
            return Err(SpecError::ChangeEmpty);
        }
        Ok(req)
    }

    /// The request as a spec layer, to lay over the agent's spec.
    pub fn to_change(&self) -> SpecFile {
        SpecFile {
            path: self.path.clone(),
            env: self.env.clone(),
            bind: self.bind.clone(),
            memory_max: self.memory_max.clone(),
            tasks_max: self.tasks_max,
            cpu_weight: self.cpu_weight,
            disk_max: self.disk_max.clone(),
            egress: self.egress.clone(),
            ..SpecFile::default()
        }
    }

    /// The agent's spec with this request laid over it, if the request stays within what
    /// an agent may ask for: limits only go down (below the `defaults` where its spec sets
    /// none), bind sources avoid `protected` host paths (and their ancestors), bind targets
    /// leave hyperhive's own binds visible.
    pub fn apply_to(
        &self,
        current: &AgentSpec,
        defaults: &Defaults,
        protected: &[PathBuf],
    ) -> Result<AgentSpec, SpecError> {
        let name = &current.name;
        if self.egress.len() > MAX_EGRESS_ASKED {
            return Err(SpecError::Egress(format!(
                "egress: {} entries asked at once, at most {MAX_EGRESS_ASKED}",
                self.egress.len()
            ))
            .for_agent(name));
        }
        for raw in &self.egress {
            // Bare `*`, a wildcard over a top-level domain, bad names: refused by the parse.
            let entry: super::egress::EgressEntry = raw
                .parse()
                .map_err(|e: String| SpecError::Egress(e).for_agent(name))?;
            if entry.is_address() {
                return Err(SpecError::Egress(format!(
                    "egress entry \"{}\": an address or network; only an admin may allowlist one (ask for a name)",
                    super::one_line(raw)
                ))
                .for_agent(name));
            }
        }
        for entry in &self.bind {
            let b = entry.to_bind()?;
            if let Some(p) = protected_source(&b.source, protected) {
                return Err(SpecError::ProtectedSource {
                    protected: p.to_owned(),
                    path: b.source,
                });
            }
            if let Some(r) = RESERVED_TARGETS
                .iter()
                .find(|r| Path::new(r).starts_with(&b.target))
            {
                return Err(SpecError::HidesReserved {
                    target: b.target,
                    reserved: r,
                });
            }
        }
        let spec = current.with_change(&self.to_change())?;
        if self.memory_max.is_some() {
            lowers(
                "memory_max",
                current.memory_max,
                spec.memory_max,
                Some(defaults.memory_max),
            )
            .map_err(|e| e.for_agent(name))?;
        }
        if self.tasks_max.is_some() {
            lowers(
                "tasks_max",
                current.tasks_max,
                spec.tasks_max,
                Some(defaults.tasks_max),
            )
            .map_err(|e| e.for_agent(name))?;
        }
        if self.cpu_weight.is_some() {
            lowers(
                "cpu_weight",
                current.cpu_weight,
                spec.cpu_weight,
                Some(defaults.cpu_weight),
            )
            .map_err(|e| e.for_agent(name))?;
        }
        if self.disk_max.is_some() {
            grows_disk(current.disk_max.unwrap_or(defaults.disk_max), spec.disk_max)
                .map_err(|e| e.for_agent(name))?;
        }
        Ok(spec)
    }
}

/// A disk bound an agent asks for is above the one it has (an image is never shrunk) and
/// at most [`MAX_DISK_GROWTH`] times it.
fn grows_disk(now: u64, asked: Option<u64>) -> Result<(), SpecError> {
    let Some(asked) = asked else {
        return Ok(());
    };
    if asked <= now {
        return Err(SpecError::DiskMax(format!(
            "asked for {asked} bytes, not above its bound of {now}: a disk image is never shrunk"
        )));
    }
    if asked / MAX_DISK_GROWTH > now {
        return Err(SpecError::DiskMax(format!(
            "asked for {asked} bytes, more than {MAX_DISK_GROWTH} times its bound of {now} at once"
        )));
    }
    Ok(())
}

/// A limit an agent asks for must not exceed the one it has (`unset`, the daemon's
/// default, is what no value means).
fn lowers(
    field: &'static str,
    now: Option<u64>,
    asked: Option<u64>,
    unset: Option<u64>,
) -> Result<(), SpecError> {
    let now = now.or(unset);
    match (now, asked) {
        (Some(now), Some(asked)) if asked > now => {
            Err(SpecError::RaisesLimit { field, asked, now })
        }
        _ => Ok(()),
    }
}

/// The protected path `source` is, lies under, or holds, if any. `source` is clean
/// (absolute, no `..`); `/` holds everything, so it is always refused.
pub fn protected_source<'a>(source: &Path, protected: &'a [PathBuf]) -> Option<&'a Path> {
    if source == Path::new("/") {
        return Some(Path::new("/"));
    }
    protected
        .iter()
        .find(|p| source.starts_with(p) || p.starts_with(source))
        .map(PathBuf::as_path)
}

/// Refuses text an admin would be shown but could not read for what it is: control
/// characters, and Unicode format characters (category Cf: bidi overrides and isolates,
/// zero-width joiners and spaces, invisible operators, tags), which can make a request
/// display as something it is not. Checks every key and string in `value`.
pub fn shown_text(value: &serde_json::Value) -> Result<(), SpecError> {
    match value {
        serde_json::Value::String(s) => check_text(s),
        serde_json::Value::Array(items) => items.iter().try_for_each(shown_text),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_text(k)?;
            shown_text(v)
        }),
        _ => Ok(()),
    }
}

/// One string: see [`shown_text`].
pub fn check_text(s: &str) -> Result<(), SpecError> {
    match s.chars().find(|&c| c.is_control() || is_format(c)) {
        Some(bad) => Err(SpecError::InvisibleText {
            text: shown(s),
            bad,
        }),
        None => Ok(()),
    }
}

/// Unicode's general category Cf (format), as of Unicode 15.
pub fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD
        | 0x0600..=0x0605
        | 0x061C
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F)
}

/// A string as an error may echo it: escaped, and cut short.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_default).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AgentName;
    use serde_json::json;

    fn spec(extra: &str) -> AgentSpec {
        let file = SpecFile::from_toml(&format!("root = \"/\"\nvolatile = \"yes\"\n{extra}"), "t")
            .unwrap();
        AgentSpec::validate(&AgentName::parse("alice").unwrap(), &file).unwrap()
    }

    #[test]
    fn an_agent_may_ask_for_egress_names_but_never_addresses_or_everything() {
        let current = spec("");
        let ask = |v: serde_json::Value| {
            AgentRequest::parse(&json!({ "egress": v }))
                .and_then(|r| r.apply_to(&current, &Defaults::shipped(8 << 30), &protected()))
        };
        let granted = ask(json!(["api.example.com", "*.pypi.org:8443"])).unwrap();
        assert_eq!(granted.egress.len(), 2);
        for bad in [
            json!(["*"]),
            json!(["*.com"]),
            json!(["10.0.0.0/8"]),
            json!(["192.0.2.1:443"]),
            json!(["[::1]"]),
            json!((0..9)
                .map(|i| format!("h{i}.example.com"))
                .collect::<Vec<_>>()),
        ] {
            let err = ask(bad.clone()).unwrap_err().to_string();
            assert!(err.starts_with("agent alice: egress"), "{bad}: {err}");
        }
        // Not on a host-network agent: it reaches everything already.
        let host = spec("network = \"host\"\n");
        assert!(AgentRequest::parse(&json!({"egress": ["a.example.com"]}))
            .unwrap()
            .apply_to(&host, &Defaults::shipped(8 << 30), &protected())
            .is_err());
    }

    fn protected() -> Vec<PathBuf> {
        crate::paths::Roots {
            state: "/var/lib/hyperhive".into(),
            run: "/run/hyperhive".into(),
            config: "/etc/hyperhive".into(),
        }
        .protected()
    }

    fn ask(v: serde_json::Value) -> Result<AgentSpec, SpecError> {
        AgentRequest::parse(&v)?.apply_to(
            &spec("memory_max = 1073741824\n"),
            &Defaults::shipped(8 << 30),
            &protected(),
        )
    }

    #[test]
    fn only_allowlisted_fields_may_be_asked_for() {
        for field in [
            json!({"root": "/"}),
            json!({"volatile": "no"}),
            json!({"network": "private"}),
            json!({"harness": ["sh"]}),
            json!({"autostart": false}),
            json!({"private_users": false}),
            json!({"capabilities": ["CAP_SYS_ADMIN"]}),
            json!({"turns": false}),
            json!({"turn_timeout": 86400}),
            json!({"path": ["/x"], "root": "/"}),
        ] {
            let err = AgentRequest::parse(&field).unwrap_err().to_string();
            assert!(err.contains("may not be requested by an agent"), "{err}");
            assert!(!err.contains('\n'));
        }
        assert!(ask(json!({"path": ["/opt/x/bin"], "env": {"A": "b"}})).is_ok());
        assert!(AgentRequest::parse(&json!({})).is_err(), "empty");
        assert!(AgentRequest::parse(&json!([1])).is_err(), "not an object");
    }

    #[test]
    fn bind_tables_refuse_unknown_keys() {
        let err = AgentRequest::parse(
            &json!({"bind": [{"source": "/srv/docs", "target": "/mnt/docs", "why": "docs mirror"}]}),
        )
        .unwrap_err().to_string();
        assert!(err.contains("unknown field `why`"), "{err}");
    }

    #[test]
    fn protected_sources_their_insides_and_their_parents_are_refused() {
        for src in [
            "/",
            "/proc",
            "/proc/1/root",
            "/sys",
            "/dev/sda",
            "/run",
            "/run/dbus",
            "/etc/hyperhive",
            "/var/lib/hyperhive/agents/bob/claude",
            "/var/lib",
            "/var",
            "/etc",
        ] {
            let err = ask(json!({"bind": [format!("{src}:/mnt/x")]}))
                .unwrap_err()
                .to_string();
            assert!(err.contains("an agent may not bind"), "{src}: {err}");
        }
        assert!(ask(json!({"bind": ["/srv/docs:/mnt/docs:ro"]})).is_ok());
        assert!(ask(json!({"bind": ["/srv/../proc:/mnt/x"]}))
            .unwrap_err()
            .to_string()
            .contains(".."));
        assert!(ask(json!({"bind": ["srv:/mnt/x"]})).is_err(), "relative");
    }

    #[test]
    fn targets_may_not_hide_hyperhives_own_binds() {
        for target in [
            "/run/dbus",
            "/opt/hyperhive",
            "/opt",
            "/run",
            "/root",
            "/state/x",
        ] {
            let err = ask(json!({"bind": [format!("/srv/docs:{target}")]}))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("hyperhive binds") || err.contains("bound by hyperhive"),
                "{target}: {err}"
            );
        }
    }

    #[test]
    fn disk_may_grow_by_a_bounded_factor_and_never_shrink() {
        // The test spec sets no disk_max: the shipped default (10G) is its bound.
        assert!(ask(json!({"disk_max": "20G"})).is_ok());
        let err = ask(json!({"disk_max": "5G"})).unwrap_err().to_string();
        assert!(err.contains("never shrunk"), "{err}");
        let err = ask(json!({"disk_max": "41G"})).unwrap_err().to_string();
        assert!(err.contains("4 times"), "{err}");
        assert!(ask(json!({"disk_max": "1K"})).is_err(), "below the floor");
    }

    #[test]
    fn limits_only_go_down() {
        assert!(ask(json!({"memory_max": "512M"})).is_ok());
        let err = ask(json!({"memory_max": "2G"})).unwrap_err().to_string();
        assert!(err.contains("may only lower"), "{err}");
        assert!(ask(json!({"tasks_max": 100})).is_ok(), "from unlimited");
        assert!(ask(json!({"cpu_weight": 50})).is_ok());
        assert!(
            ask(json!({"cpu_weight": 200})).is_err(),
            "above the default"
        );
    }

    #[test]
    fn format_and_control_characters_are_refused_in_keys_and_values() {
        for bad in [
            json!({"env": {"A": "x\u{202E}gpj.exe"}}),
            json!({"env": {"A\u{200B}": "x"}}),
            json!({"path": ["/opt/\u{2066}x"]}),
            json!({"env": {"A": "\u{1b}[2J"}}),
            json!({"env": {"A": "tag\u{E0041}"}}),
        ] {
            let err = AgentRequest::parse(&bad).unwrap_err().to_string();
            assert!(err.contains("invisible or control character"), "{err}");
            assert!(!err.contains('\n') && !err.contains('\u{202E}'), "{err}");
        }
        assert!(check_text("héllo wörld ✓ 日本").is_ok());
    }
}
