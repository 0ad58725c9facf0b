//! The planned properties of a unit beside the ones systemd holds, as text an admin reads.
//! Drift itself is decided by the plan hash; this only shows where it lies. Pure: the live
//! values come in as D-Bus values read by the caller.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zbus::zvariant::{OwnedValue, Value};

use crate::journal::fields;
use crate::plan::{ExecCommand, Prop};

/// One property that differs. `None` on a side: not set there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub property: String,
    pub live: Option<String>,
    pub planned: Option<String>,
}

/// Limits a spec may leave out; systemd then reports its default for them, which is shown
/// as "not set" so that removing a limit from a spec shows up as a change.
const OPTIONAL: [&str; 3] = ["MemoryMax", "CPUWeight", "TasksMax"];

/// Lists systemd extends with what it derives itself (`RuntimeDirectory=` adds its path to
/// `RequiresMountsFor=`): planned entries all present is no change.
const EXTENDED: [&str; 1] = ["RequiresMountsFor"];

/// Entries hyperhive adds for one build only, never planned: they say who asked for the
/// build (an approval), not what runs.
fn per_build(entry: &str) -> bool {
    fields::value_of(entry, fields::APPROVAL_ID).is_some()
}

/// `live` holds the unit's properties (Unit and Service interfaces merged);
/// `defaults` the values systemd reports for an optional limit that was never set.
pub fn diff(
    planned: &[(String, Prop)],
    live: &HashMap<String, OwnedValue>,
    defaults: &HashMap<&str, String>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, prop) in planned {
        let Some(value) = live.get(key) else { continue };
        // A property systemd does not show in a shape we read is no evidence either way.
        let Some(live_text) = render_live(value) else {
            continue;
        };
        let planned_text = render_planned(prop);
        if EXTENDED.contains(&key.as_str()) {
            let have: Vec<&str> = live_text.split(' ').collect();
            if planned_text.split(' ').all(|w| have.contains(&w)) {
                continue;
            }
        }
        if live_text != planned_text {
            // A limit the live unit never set reads as systemd's default (CPUWeight's is
            // 2^64-1): "not set" is what it means.
            let unset =
                OPTIONAL.contains(&key.as_str()) && defaults.get(key.as_str()) == Some(&live_text);
            changes.push(Change {
                property: key.clone(),
                live: (!unset).then_some(live_text),
                planned: Some(planned_text),
            });
        }
    }
    for key in OPTIONAL {
        if planned.iter().any(|(k, _)| k == key) {
            continue;
        }
        let live_text = live.get(key).and_then(|v| render_live(v));
        if let (Some(text), Some(default)) = (live_text, defaults.get(key)) {
            if &text != default {
                changes.push(Change {
                    property: key.into(),
                    live: Some(text),
                    planned: None,
                });
            }
        }
    }
    changes
}

/// A planned value as text, in the same form [`render_live`] gives systemd's.
pub fn render_planned(p: &Prop) -> String {
    match p {
        Prop::Str(s) => s.clone(),
        Prop::Bool(b) => yes_no(*b).into(),
        Prop::U64(n) => n.to_string(),
        Prop::U32(n) => n.to_string(),
        Prop::Strv(v) => join(v.iter().map(String::as_str)),
        Prop::Exec(cmds) => cmds.iter().map(exec_text).collect::<Vec<_>>().join("; "),
        Prop::Bytes(v) => join(v.iter().map(|b| String::from_utf8_lossy(b).into_owned())),
        Prop::ExitStatus(codes) => join(codes.iter().map(i32::to_string)),
        Prop::Pairs(pairs) => join(pairs.iter().map(|(a, b)| format!("{a}:{b}"))),
        Prop::AddressFamilies(f) => join(f.iter().map(String::as_str)),
        Prop::IpPrefixes(nets) => join(nets.iter().map(|(a, p)| format!("{a}/{p}"))),
        Prop::Binds(binds) => join(binds.iter().map(|(src, dst)| format!("{src}:{dst}"))),
    }
}

/// A value systemd reports, as text; `None` for a shape agent units never use.
pub fn render_live(v: &Value<'_>) -> Option<String> {
    Some(match v {
        Value::Str(s) => s.to_string(),
        Value::Bool(b) => yes_no(*b).into(),
        Value::U64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::I32(n) => n.to_string(),
        Value::Value(inner) => return render_live(inner),
        Value::Array(a) => {
            let items = a.inner();
            match items.first() {
                None => String::new(),
                Some(Value::Str(_)) => join(
                    items
                        .iter()
                        .filter_map(|i| match i {
                            Value::Str(s) => Some(s.to_string()),
                            _ => None,
                        })
                        .filter(|s| !per_build(s)),
                ),
                Some(Value::Array(_)) => join(
                    items
                        .iter()
                        .filter_map(bytes)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .filter(|s| !per_build(s)),
                ),
                Some(Value::Structure(_)) => items
                    .iter()
                    .map(live_exec)
                    .collect::<Option<Vec<_>>>()?
                    .join("; "),
                Some(_) => return None,
            }
        }
        _ => return None,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn join<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    items
        .filter(|s| !per_build(s.as_ref()))
        .map(|s| s.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn bytes(v: &Value<'_>) -> Option<Vec<u8>> {
    match v {
        Value::Array(a) => a
            .inner()
            .iter()
            .map(|b| match b {
                Value::U8(x) => Some(*x),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// `-` marks a command whose failure is ignored, as in unit files.
fn exec_text(c: &ExecCommand) -> String {
    format!(
        "{}{}",
        if c.ignore_failure { "-" } else { "" },
        c.argv.join(" ")
    )
}

/// One entry of systemd's `ExecStart` (`a(sasbttttuii)`): path, argv, ignore-failure, then
/// timestamps and status we do not compare.
fn live_exec(v: &Value<'_>) -> Option<String> {
    let Value::Structure(s) = v else { return None };
    let f = s.fields();
    let argv = match f.get(1)? {
        Value::Array(a) => a
            .inner()
            .iter()
            .map(|x| match x {
                Value::Str(s) => Some(s.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    let ignore = matches!(f.get(2)?, Value::Bool(true));
    Some(exec_text(&ExecCommand {
        path: String::new(),
        argv,
        ignore_failure: ignore,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(v: Value<'_>) -> OwnedValue {
        v.try_to_owned().unwrap()
    }

    /// As systemd sends it: `a(sasbttttuii)`.
    fn live_exec_value(argv: &[&str], ignore: bool) -> Value<'static> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        Value::from(vec![(
            argv[0].clone(),
            argv,
            ignore,
            0u64,
            0u64,
            0u64,
            0u64,
            0u32,
            0i32,
            0i32,
        )])
    }

    #[test]
    fn equal_values_show_no_change_whatever_their_shape() {
        let planned = vec![
            ("Description".into(), Prop::Str("d".into())),
            ("Delegate".into(), Prop::Bool(true)),
            ("RestartUSec".into(), Prop::U64(500_000)),
            (
                "Environment".into(),
                Prop::Strv(vec!["A=1".into(), "HIVE_PLAN=p".into()]),
            ),
            (
                "LogExtraFields".into(),
                Prop::Bytes(vec![b"HIVE_AGENT=a".to_vec()]),
            ),
            (
                "ExecStopPost".into(),
                Prop::Exec(vec![ExecCommand {
                    path: "/bin/x".into(),
                    argv: vec!["/bin/x".into(), "y".into()],
                    ignore_failure: true,
                }]),
            ),
        ];
        let mut live = HashMap::new();
        live.insert("Description".to_string(), owned(Value::from("d")));
        live.insert("Delegate".to_string(), owned(Value::Bool(true)));
        live.insert("RestartUSec".to_string(), owned(Value::U64(500_000)));
        // An approval's stamp is per build, not part of what runs.
        live.insert(
            "Environment".to_string(),
            owned(Value::from(vec![
                "A=1",
                "HIVE_PLAN=p",
                "HIVE_APPROVAL_ID=7",
            ])),
        );
        live.insert(
            "LogExtraFields".to_string(),
            owned(Value::from(vec![
                b"HIVE_AGENT=a".to_vec(),
                b"HIVE_APPROVAL_ID=7".to_vec(),
            ])),
        );
        live.insert(
            "ExecStopPost".to_string(),
            owned(live_exec_value(&["/bin/x", "y"], true)),
        );
        assert_eq!(diff(&planned, &live, &HashMap::new()), vec![]);
    }

    #[test]
    fn a_changed_value_and_a_dropped_limit_are_shown() {
        let planned = vec![
            ("Environment".into(), Prop::Strv(vec!["PATH=/new".into()])),
            (
                "ExecStart".into(),
                Prop::Exec(vec![ExecCommand {
                    path: "/n".into(),
                    argv: vec!["/n".into(), "--a".into()],
                    ignore_failure: false,
                }]),
            ),
        ];
        let mut live = HashMap::new();
        live.insert(
            "Environment".to_string(),
            owned(Value::from(vec!["PATH=/old"])),
        );
        live.insert(
            "ExecStart".to_string(),
            owned(live_exec_value(&["/n", "--b"], false)),
        );
        live.insert("MemoryMax".to_string(), owned(Value::U64(1 << 30)));
        live.insert("TasksMax".to_string(), owned(Value::U64(4915)));
        let defaults = HashMap::from([
            ("MemoryMax", u64::MAX.to_string()),
            ("TasksMax", "4915".to_string()),
        ]);
        assert_eq!(
            diff(&planned, &live, &defaults),
            vec![
                Change {
                    property: "Environment".into(),
                    live: Some("PATH=/old".into()),
                    planned: Some("PATH=/new".into()),
                },
                Change {
                    property: "ExecStart".into(),
                    live: Some("/n --b".into()),
                    planned: Some("/n --a".into()),
                },
                Change {
                    property: "MemoryMax".into(),
                    live: Some((1u64 << 30).to_string()),
                    planned: None,
                },
            ]
        );
    }

    #[test]
    fn what_systemd_adds_to_requires_mounts_for_is_no_change() {
        let planned = vec![(
            "RequiresMountsFor".to_string(),
            Prop::Strv(vec!["/var/lib/hyperhive/agents/alice/disk".into()]),
        )];
        let live_with = |paths: Vec<&str>| {
            let v: Vec<String> = paths.into_iter().map(String::from).collect();
            HashMap::from([("RequiresMountsFor".to_string(), owned(Value::from(v)))])
        };
        let extended = live_with(vec![
            "/run/hyperhive/alice",
            "/var/lib/hyperhive/agents/alice/disk",
        ]);
        assert!(diff(&planned, &extended, &HashMap::new()).is_empty());
        let other = live_with(vec!["/run/hyperhive/alice"]);
        assert_eq!(diff(&planned, &other, &HashMap::new()).len(), 1);
    }

    #[test]
    fn a_limit_the_live_unit_never_set_reads_as_not_set() {
        let planned = vec![("CPUWeight".to_string(), Prop::U64(50))];
        let mut live = HashMap::new();
        live.insert("CPUWeight".to_string(), owned(Value::U64(u64::MAX)));
        let defaults = HashMap::from([("CPUWeight", u64::MAX.to_string())]);
        assert_eq!(
            diff(&planned, &live, &defaults),
            vec![Change {
                property: "CPUWeight".into(),
                live: None,
                planned: Some("50".into()),
            }]
        );
    }
}
