//! Extra binds from the spec: `SRC[:DST[:ro|rw]]` strings (nspawn's syntax, `\:` escapes a
//! colon) or `{ source, target, readonly }` tables, so paths with colons stay writable.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::clean_abs_path;

/// A validated bind: absolute, clean paths on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub fn to_bind(&self) -> Result<Bind, String> {
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
fn parse_short(s: &str) -> Result<(PathBuf, PathBuf, bool), String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ (':' | '\\')) => parts.last_mut().unwrap().push(next),
                _ => {
                    return Err(format!(
                        "bind {:?}: a backslash may only escape ':' or '\\'",
                        s
                    ))
                }
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
                return Err(format!(
                "bind {:?}: unknown option {:?} (use ro or rw; escape a colon in a path as \\:)",
                s, other
            ))
            }
        },
        _ => {
            return Err(format!(
                "bind {:?}: too many ':' (use SRC:DST[:ro]; escape a colon in a path as \\:)",
                s
            ))
        }
    };
    let source = PathBuf::from(&parts[0]);
    let target = match parts.get(1) {
        Some(t) if !t.is_empty() => PathBuf::from(t),
        _ => source.clone(),
    };
    Ok((source, target, readonly))
}
