//! Extra binds from the spec: `SRC[:DST[:ro|rw]]` strings (nspawn's syntax, `\:` escapes a
//! colon) or `{ source, target, readonly }` tables, so paths with colons stay writable.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{clean_abs_path, SpecError};

/// A validated bind: absolute, clean paths on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// A bind as a spec file or an approval request writes it. Tables refuse keys they do not
/// know: a bind `{ source = "/", target = "/mnt/docs", why = "docs" }` must not pass with
/// the key silently dropped, since whoever reads the spec would take it at its word.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum BindEntry {
    Short(String),
    Full {
        source: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<PathBuf>,
        #[serde(default)]
        readonly: bool,
    },
}

/// The table form, strict about its keys; [`BindEntry`]'s own deserializer picks the form
/// by the value's shape, so a bad table is told its own error rather than serde's
/// "did not match any variant".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindTable {
    source: PathBuf,
    #[serde(default)]
    target: Option<PathBuf>,
    #[serde(default)]
    readonly: bool,
}

impl<'de> Deserialize<'de> for BindEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BindEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a bind: \"SRC[:DST[:ro]]\" or a table { source, target, readonly }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BindEntry, E> {
                Ok(BindEntry::Short(s.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BindEntry, A::Error> {
                let t = BindTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(BindEntry::Full {
                    source: t.source,
                    target: t.target,
                    readonly: t.readonly,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl From<&Bind> for BindEntry {
    fn from(b: &Bind) -> Self {
        Self::Full {
            source: b.source.clone(),
            target: Some(b.target.clone()),
            readonly: b.readonly,
        }
    }
}

impl BindEntry {
    pub fn to_bind(&self) -> Result<Bind, SpecError> {
        let (source, target, readonly) = match self {
            Self::Short(s) => parse_short(s)?,
            Self::Full {
                source,
                target,
                readonly,
            } => (
                source.clone(),
                target.clone().unwrap_or_else(|| source.clone()),
                *readonly,
            ),
        };
        Ok(Bind {
            source: clean_abs_path("bind source", &source)?,
            target: clean_abs_path("bind target", &target)?,
            readonly,
        })
    }
}

/// Splits `SRC[:DST[:ro|rw]]` on colons that are not escaped with a backslash.
fn parse_short(s: &str) -> Result<(PathBuf, PathBuf, bool), SpecError> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ (':' | '\\')) => parts.last_mut().unwrap().push(next),
                _ => return Err(SpecError::BindEscape(s.to_owned())),
            },
            ':' => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    let readonly = match parts.len() {
        1 | 2 => false,
        3 => match parts[2].as_str() {
            "ro" => true,
            "rw" => false,
            other => {
                return Err(SpecError::BindOption {
                    bind: s.to_owned(),
                    option: other.to_owned(),
                })
            }
        },
        _ => return Err(SpecError::BindColons(s.to_owned())),
    };
    let source = PathBuf::from(&parts[0]);
    let target = match parts.get(1) {
        Some(t) if !t.is_empty() => PathBuf::from(t),
        _ => source.clone(),
    };
    Ok((source, target, readonly))
}
