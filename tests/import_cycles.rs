//! The house's doors, kept: no import circle between the core's files (`src/hive/`), and
//! none between the top-level rooms of `src/` (docs/architecture.md, "The rooms"). Pure
//! reading of the source: `use super::X`, `crate::hive::X` and `crate::X` paths, outside
//! comments and `#[cfg(test)] mod tests`; a name the core's `mod.rs` re-exports counts as
//! the file that defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// A room or file: its name and the paths of its source files.
fn entries(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            out.insert(name, rs_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.insert(name, vec![p]);
        }
    }
    out
}

fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rs_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The code of the files, without line comments and without their unit tests.
fn code(files: &[PathBuf]) -> String {
    let mut all = String::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        for line in text.lines() {
            all.push_str(line.split("//").next().unwrap());
            all.push('\n');
        }
    }
    all
}

/// The names right after each `prefix`: one identifier, or each first identifier of a
/// `{a, b::c, d}` group.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        // Not the tail of a longer path (`self::super::`, `xcrate::`).
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let n = ident(part.trim());
                if !n.is_empty() {
                    out.insert(n);
                }
            }
        } else {
            let n = ident(rest);
            if !n.is_empty() {
                out.insert(n);
            }
        }
    }
    out
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The core's file graph: which of its files each file names.
fn core_graph() -> Graph {
    let dir = src().join("hive");
    let files = entries(&dir);
    // `pub use x::{A, B};` in mod.rs: A and B are x's.
    let mut owner: BTreeMap<String, String> =
        files.keys().map(|k| (k.clone(), k.clone())).collect();
    let mod_rs = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    for line in mod_rs.lines().map(str::trim) {
        let Some(rest) = line
            .strip_prefix("pub use ")
            .or_else(|| line.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let Some((file, names)) = rest.split_once("::") else {
            continue;
        };
        for n in names.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !n.is_empty() && files.contains_key(file) {
                owner.entry(n.to_owned()).or_insert_with(|| file.to_owned());
            }
        }
    }
    let mut g = Graph::new();
    for (name, paths) in &files {
        if name == "mod" {
            continue;
        }
        let code = code(paths);
        let mut named = names_after(&code, "super::");
        named.extend(names_after(&code, "crate::hive::"));
        let deps = named
            .iter()
            .filter_map(|n| owner.get(n))
            .filter(|d| *d != name && *d != "mod")
            .cloned()
            .collect();
        g.insert(name.clone(), deps);
    }
    g
}

/// The rooms' graph: which top-level module of `src/` each one names.
fn room_graph() -> Graph {
    let rooms = entries(&src());
    let mut g = Graph::new();
    for (name, paths) in &rooms {
        if matches!(name.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let deps = names_after(&code(paths), "crate::")
            .into_iter()
            .filter(|d| d != name && rooms.contains_key(d) && d != "lib")
            .collect();
        g.insert(name.clone(), deps);
    }
    g
}

#[test]
fn the_cores_files_import_no_circle() {
    let g = core_graph();
    assert!(
        g.len() > 10 && g.values().map(BTreeSet::len).sum::<usize>() > 20,
        "{g:?}"
    );
    assert_eq!(cycles(&g), Vec::<Vec<String>>::new());
}

#[test]
fn the_rooms_of_src_import_no_circle() {
    let g = room_graph();
    assert!(
        g.contains_key("hive") && g["hive"].contains("systemd"),
        "{g:?}"
    );
    assert_eq!(cycles(&g), Vec::<Vec<String>>::new());
}

#[test]
fn a_circle_is_found() {
    let g: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(Graph::new(), |mut g, (from, to)| {
            g.entry(from.into()).or_default().insert(to.into());
            g.entry(to.into()).or_default();
            g
        });
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        names_after(
            "use super::{x, y::Z};\nlet q = crate::hive::w::f();",
            "super::"
        ),
        ["x", "y"].into_iter().map(String::from).collect()
    );
}
