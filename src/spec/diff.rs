//! What differs between two specs of one agent, field by field, in the words of the spec
//! file: what `hivectl create` shows before it refuses to clobber an agent.

use super::AgentSpec;

/// One line per field that differs, `field: old → new` (`unset` where a field is not set).
/// Environment values may be secret: for `env` only the keys are named.
pub fn differences(old: &AgentSpec, new: &AgentSpec) -> Vec<String> {
    let as_map = |s: &AgentSpec| match serde_json::to_value(s.to_file()) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(old), as_map(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if x == y {
            continue;
        }
        if key == "env" {
            let keys_of = |v: Option<&serde_json::Value>| {
                v.and_then(|v| v.as_object()).cloned().unwrap_or_default()
            };
            let (ex, ey) = (keys_of(x), keys_of(y));
            let mut names: Vec<&String> = ex.keys().chain(ey.keys()).collect();
            names.sort();
            names.dedup();
            for n in names {
                match (ex.get(n), ey.get(n)) {
                    (Some(_), None) => out.push(format!("env {n}: removed")),
                    (None, Some(_)) => out.push(format!("env {n}: added")),
                    (p, q) if p != q => out.push(format!("env {n}: value changed")),
                    _ => {}
                }
            }
            continue;
        }
        out.push(format!("{key}: {} → {}", show(x), show(y)));
    }
    out
}

/// Longest value shown; a longer one (a harness script) is cut, its head is enough to
/// tell which side is which.
const SHOWN: usize = 60;

fn show(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "unset".into(),
        Some(v) => {
            let text = v.to_string();
            match text.char_indices().nth(SHOWN) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AgentName, SpecFile};

    fn spec(toml: &str) -> AgentSpec {
        let name = AgentName::parse("bob").unwrap();
        AgentSpec::validate(&name, &SpecFile::from_toml(toml, "t").unwrap()).unwrap()
    }

    const BASE: &str = "root = \"/\"\nvolatile = \"yes\"\n";

    #[test]
    fn identical_specs_have_no_differences() {
        assert!(differences(&spec(BASE), &spec(BASE)).is_empty());
    }

    #[test]
    fn each_field_that_differs_is_named_with_both_values() {
        let old = spec(&format!("{BASE}cpu_weight = 50\npath = [\"/opt/x/bin\"]\n"));
        let new = spec(BASE);
        assert_eq!(
            differences(&old, &new),
            ["cpu_weight: 50 → unset", "path: [\"/opt/x/bin\"] → unset"]
        );
        assert_eq!(
            differences(&new, &old),
            ["cpu_weight: unset → 50", "path: unset → [\"/opt/x/bin\"]"]
        );
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(200);
        let old = spec(&format!("{BASE}harness = [\"{long}\"]\n"));
        let d = differences(&old, &spec(BASE));
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("harness: [\"xxx"), "{d:?}");
        assert!(d[0].ends_with("… → unset"), "{d:?}");
        assert!(d[0].len() < 100, "{d:?}");
    }

    #[test]
    fn env_values_are_never_shown() {
        let old = spec(&format!("{BASE}[env]\nTOKEN = \"s3cret\"\nA = \"1\"\n"));
        let new = spec(&format!("{BASE}[env]\nTOKEN = \"other\"\nB = \"2\"\n"));
        let d = differences(&old, &new);
        assert_eq!(
            d,
            ["env A: removed", "env B: added", "env TOKEN: value changed"]
        );
        assert!(!d.join(" ").contains("s3cret"));
    }
}
