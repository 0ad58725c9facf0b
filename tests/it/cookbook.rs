//! docs/operations.md, run: every line of every ```sh cookbook block, inside a test host
//! set up as the cookbook describes it. Each must exit 0 and print something (journalctl's
//! `-- No entries --` is nothing), so the
//! admin's cookbook cannot drift from the code or from systemd.

use std::time::Duration;

use crate::common::*;

const DOC: &str = include_str!("../../docs/operations.md");

/// A stand-in for claude: asks for /opt/approved/bin until it has it, then once for
/// /opt/more/bin (which stays pending).
const ASKING: &str = r#"echo "$PATH" > /state/path
case ":$PATH:" in
  *:/opt/approved/bin:*) [ -s /state/asked-more ] || hive-harness request-approval spec_change '{"path":["/opt/more/bin"]}' > /state/asked-more ;;
  *) hive-harness request-approval spec_change '{"path":["/opt/approved/bin"]}' > /state/requested ;;
esac
exec sleep infinity"#;

/// The cookbook's "other host" is the test host itself: this ssh skips its options and the
/// destination and runs the rest locally, as sshd would on the far side.
const FAKE_SSH: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -p|-l|-o|-i|-J|-F) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift
if [ "$1" = systemd-stdio-bridge ]; then shift; exec systemd-stdio-bridge "$@"; fi
exec sh -c "$*"
"#;

const FAKE_SSH_DIR: &str = "/run/cookbook-ssh";

#[derive(Debug)]
struct Recipe {
    section: String,
    remote: bool,
    /// The situation the block needs, when not the cookbook's own (`sh cookbook claude`:
    /// a Claude Code agent, run by tests/it/claude.rs).
    situation: Option<String>,
    command: String,
}

/// A block's situation: its tag after the language (and `cookbook`), other than `remote`.
fn situation_of(tags: &[&str], skip: usize) -> Option<String> {
    tags.iter()
        .skip(skip)
        .find(|t| **t != "remote")
        .map(|t| t.to_string())
}

/// Every runnable line: in a block whose info string is `sh cookbook [remote]`, each line
/// that is not blank and not a comment (a trailing `\` joins the next line).
fn recipes(doc: &str) -> Vec<Recipe> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut block: Option<Vec<&str>> = None;
    let mut pending = String::new();
    for line in doc.lines() {
        if let Some(info) = line.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(info.split_whitespace().collect()),
            };
            continue;
        }
        let Some(tags) = &block else {
            if let Some(h) = line.strip_prefix("## ") {
                section = h.trim().to_owned();
            }
            continue;
        };
        if tags.first() != Some(&"sh") || tags.get(1) != Some(&"cookbook") {
            continue;
        }
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        out.push(Recipe {
            section: section.clone(),
            remote: tags.contains(&"remote"),
            situation: situation_of(tags, 2),
            command: std::mem::take(&mut pending),
        });
    }
    assert!(
        block.is_none(),
        "docs/operations.md: a code block is not closed"
    );
    out
}

fn follows(cmd: &str) -> bool {
    cmd.split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .any(|w| w == "-f" || w == "--follow")
}

/// Whether a command printed an answer: journalctl says `-- No entries --` when nothing
/// matched, which is no answer.
fn answered(stdout: &str) -> bool {
    stdout
        .lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && l != "-- No entries --")
}

fn state_file(h: &TestHost, file: &str) -> String {
    let out = h.run(&[
        "cat",
        &format!("/var/lib/hyperhive/agents/alice/disk/state/{file}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The situation the cookbook talks about: alice asked, approval 1 was approved and
/// applied, she asked again (2, pending), her container and then her harness were killed
/// once and are back; bob hit the start limit (crash_loop) and was destroyed. The host has
/// loop devices, as a real one does: each agent's disk is its own image (persistence.md).
fn the_situation() -> TestHost {
    let h = TestHost::boot(Options {
        bin_dir: Some(bin_dir()),
        units_dir: Some(units_dir()),
        start_daemon: true,
        loop_devices: true,
        ..Default::default()
    })
    .expect("booting the test host");
    h.create("alice", &["--harness", "sh", "-c", ASKING]);
    h.wait_for("alice's first request", Duration::from_secs(15), || {
        !state_file(&h, "requested").is_empty()
    });
    assert_eq!(
        state_file(&h, "requested"),
        "1",
        "the cookbook's approval 1"
    );
    let out = h.hivectl_ok(&["approve", "1"]);
    assert!(out.contains("applied"), "{out}");
    h.wait_for("alice's second request", Duration::from_secs(15), || {
        !state_file(&h, "asked-more").is_empty()
    });

    let pid = h.unit_show("alice", "MainPID");
    h.run_ok(&["kill", "-9", &pid]);
    h.wait_for(
        "alice restarted by systemd",
        Duration::from_secs(30),
        || h.unit_show("alice", "NRestarts") == "1",
    );
    h.wait_active("alice");
    h.wait_for("alice's harness back", Duration::from_secs(30), || {
        h.run(&[
            "systemctl",
            "-M",
            "h-alice",
            "is-active",
            "hive-harness.service",
        ])
        .status
        .success()
    });
    // Her harness crashed once too, and came back.
    kill_harness(&h, "alice", "KILL");
    wait_entry(
        &h,
        "alice's harness_crash",
        &["HIVE_EVENT=harness_crash", "HIVE_AGENT=alice"],
    );
    h.wait_for("alice's harness back", Duration::from_secs(30), || {
        h.run(&[
            "systemctl",
            "-M",
            "h-alice",
            "is-active",
            "hive-harness.service",
        ])
        .status
        .success()
    });
    // bob's bind source vanished: every restart fails until systemd gives up (crash_loop);
    // he is destroyed, the journal keeps his story.
    h.run_ok(&["mkdir", "-p", "/srv/vanishing"]);
    h.create("bob", &["--bind", "/srv/vanishing:/data"]);
    h.run_ok(&["rmdir", "/srv/vanishing"]);
    let pid = h.unit_show("bob", "MainPID");
    h.run_ok(&["kill", "-9", &pid]);
    wait_entry(
        &h,
        "bob's crash_loop",
        &["HIVE_EVENT=crash_loop", "HIVE_AGENT=bob"],
    );
    h.hivectl_ok(&["destroy", "bob"]);
    assert_eq!(h.agent_units(), vec!["hive-agent-alice.service"]);
    h.run_ok(&[
        "sh",
        "-c",
        &format!(
            "mkdir -p {FAKE_SSH_DIR} && cat > {FAKE_SSH_DIR}/ssh <<'EOF'\n{FAKE_SSH}EOF\nchmod 755 {FAKE_SSH_DIR}/ssh"
        ),
    ]);
    h
}

#[test]
fn the_cookbook_is_complete() {
    let all = recipes(DOC);
    let mut sections: Vec<&str> = all.iter().map(|r| r.section.as_str()).collect();
    sections.dedup();
    for want in [
        "Is alice up?",
        "Why did alice crash?",
        "What is pending?",
        "What did approval 1 change?",
        "Follow alice's log",
        "Restart the daemon without touching agents",
        "Where are alice's notes and credentials?",
        "Reach another host",
        "Stop everything",
    ] {
        assert!(sections.contains(&want), "no runnable section {want:?}");
    }
    // Each answer is given twice: the stock tools and hivectl.
    for s in &sections {
        let cmds: Vec<&Recipe> = all.iter().filter(|r| r.section == *s).collect();
        assert!(
            cmds.iter().any(|r| r.command.contains("hivectl")),
            "{s}: no hivectl command"
        );
        assert!(
            cmds.iter().any(|r| !r.command.starts_with("hivectl")),
            "{s}: no stock systemd command"
        );
    }
}

#[test]
fn every_cookbook_command_runs_and_answers() {
    let all = recipes(DOC);
    assert!(
        all.len() >= 30,
        "only {} runnable commands found",
        all.len()
    );
    let h = the_situation();
    run_recipes(&h, None);
}

/// The PATH recipes run with: hivectl, then the usual directories.
fn recipe_path() -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        bin_dir().display()
    )
}

/// Runs every recipe of `situation` (`None`: the cookbook's own) in `h`.
fn run_recipes(h: &TestHost, situation: Option<&str>) {
    let all: Vec<Recipe> = recipes(DOC)
        .into_iter()
        .filter(|r| r.situation.as_deref() == situation)
        .collect();
    assert!(!all.is_empty(), "no recipes for {situation:?}");
    let base = recipe_path();
    let mut failures = Vec::new();
    for r in &all {
        let path = if r.remote {
            format!("PATH={FAKE_SSH_DIR}:{base}")
        } else {
            format!("PATH={base}")
        };
        let follow = follows(&r.command);
        let cmd = if follow {
            format!("timeout 2 {}", r.command)
        } else {
            r.command.clone()
        };
        let mut out = h.run(&["env", &path, "sh", "-c", &cmd]);
        // Some events are journaled just after the command that causes them returns (the
        // startup reconcile's `adopted` follows READY=1, so `systemctl restart` is back
        // first): a journal query that found nothing yet is asked again, for a bounded
        // while, as an admin would look again.
        let t0 = std::time::Instant::now();
        while !follow
            && r.command.starts_with("journalctl")
            && out.status.success()
            && !answered(&String::from_utf8_lossy(&out.stdout))
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(200));
            out = h.run(&["env", &path, "sh", "-c", &cmd]);
        }
        let code = out.status.code();
        // timeout's 124: the follow ran until it was stopped.
        let ok = code == Some(0) || (follow && code == Some(124));
        let printed = String::from_utf8_lossy(&out.stdout);
        if !ok || !answered(&printed) {
            failures.push(format!(
                "[{}] {}\n    exit {:?}; stdout {:?}; stderr {:?}",
                r.section,
                r.command,
                code,
                printed.chars().take(300).collect::<String>(),
                stderr(&out)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cookbook commands failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn recipes_are_read_as_written() {
    let doc = "## A\n\n```sh cookbook\n# comment\nls /  # trailing\n\nfoo \\\n  bar\n```\n\n```sh\nnot run\n```\n\n## B\n```sh cookbook remote\nhivectl -H x list\n```\n";
    let r = recipes(doc);
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(r[0].command, "ls /  # trailing");
    assert_eq!(r[1].command, "foo bar");
    assert_eq!((r[2].section.as_str(), r[2].remote), ("B", true));
    assert!(follows("journalctl -f -m X"));
    assert!(!follows("ls -l  # -f"));
    assert!(!answered("-- No entries --\n"));
    assert!(!answered("\n  \n"));
    assert!(answered("-- No entries --\nx\n"));
}

/// One shown output: `$ command` and the lines it printed, `…` for what varies.
#[derive(Debug)]
struct Shown {
    section: String,
    situation: Option<String>,
    command: String,
    expected: Vec<String>,
}

/// Every `$ command` in a ```console block, with the lines shown under it.
fn shown_outputs(doc: &str) -> Vec<Shown> {
    let mut out: Vec<Shown> = Vec::new();
    let mut section = String::new();
    let mut in_console = None::<bool>;
    let mut situation = None;
    for line in doc.lines() {
        if let Some(info) = line.strip_prefix("```") {
            let tags: Vec<&str> = info.split_whitespace().collect();
            in_console = match in_console {
                Some(_) => None,
                None => Some(tags.first() == Some(&"console")),
            };
            situation = situation_of(&tags, 1);
            continue;
        }
        match in_console {
            None => {
                if let Some(h) = line.strip_prefix("## ") {
                    section = h.trim().to_owned();
                }
            }
            Some(false) => {}
            Some(true) => {
                if let Some(cmd) = line.strip_prefix("$ ") {
                    out.push(Shown {
                        section: section.clone(),
                        situation: situation.clone(),
                        command: cmd.to_owned(),
                        expected: Vec::new(),
                    });
                } else if let Some(s) = out.last_mut() {
                    s.expected.push(line.trim_end().to_owned());
                }
            }
        }
    }
    out
}

/// Whether `actual` matches a shown line: `…` stands for any text.
fn line_matches(shown: &str, actual: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    if parts.len() == 1 {
        return shown == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// The shown lines against what the command printed: runs of lines between lone `…`
/// lines appear consecutively and in order; without a `…` at its start (end) the output
/// starts (ends) with the shown lines. `None` when it matches, else why not.
fn output_mismatch(expected: &[String], actual: &[&str]) -> Option<String> {
    let runs: Vec<&[String]> = expected.split(|l| l == "…").collect();
    let open_start = expected.first().is_some_and(|l| l == "…");
    let open_end = expected.last().is_some_and(|l| l == "…");
    let mut at = 0;
    for (i, run) in runs.iter().enumerate() {
        if run.is_empty() {
            continue;
        }
        let fits = |start: usize| {
            start + run.len() <= actual.len()
                && run
                    .iter()
                    .zip(&actual[start..])
                    .all(|(e, a)| line_matches(e, a.trim_end()))
        };
        let start = if i == 0 && !open_start {
            fits(0).then_some(0)
        } else {
            (at..actual.len()).find(|&s| fits(s))
        };
        let Some(start) = start else {
            return Some(format!("not found in order: {:?}", run[0]));
        };
        at = start + run.len();
    }
    if !open_end && at != actual.len() {
        return Some(format!(
            "output goes on after the shown lines: {:?}",
            actual.get(at)
        ));
    }
    None
}

#[test]
fn shown_outputs_are_read_and_matched_as_written() {
    let doc = "## A\n```console\n$ hivectl x\nfoo … bar\n…\nend\n```\n```sh\n$ not shown\n```\n";
    let s = shown_outputs(doc);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].command, "hivectl x");
    assert!(output_mismatch(&s[0].expected, &["foo 1 bar", "x", "y", "end"]).is_none());
    assert!(output_mismatch(&s[0].expected, &["foo 1 baz", "end"]).is_some());
    assert!(output_mismatch(&s[0].expected, &["foo 1 bar", "end", "more"]).is_some());
    assert!(line_matches("a … c … e", "a b c d e"));
    assert!(!line_matches("a … c", "a b d"));
}

/// The cookbook's recipes and shown outputs for `situation` (e.g. `claude`), run in a
/// test host the caller set up as that situation.
pub fn check_situation(h: &TestHost, situation: &str) {
    check_shown(h, Some(situation));
    run_recipes(h, Some(situation));
}

#[test]
fn every_shown_output_is_what_the_command_prints() {
    let shown = shown_outputs(DOC);
    assert!(shown.len() >= 10, "only {} shown outputs", shown.len());
    let h = the_situation();
    check_shown(&h, None);
}

/// Compares every shown output of `situation` (`None`: the cookbook's own) with what its
/// command prints in `h`.
fn check_shown(h: &TestHost, situation: Option<&str>) {
    let shown: Vec<Shown> = shown_outputs(DOC)
        .into_iter()
        .filter(|s| s.situation.as_deref() == situation)
        .collect();
    assert!(!shown.is_empty(), "no shown outputs for {situation:?}");
    let path = format!("PATH={}", recipe_path());
    let mut failures = Vec::new();
    for s in &shown {
        let out = h.run(&["env", &path, "sh", "-c", &s.command]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        if let Some(why) = output_mismatch(&s.expected, &lines) {
            failures.push(format!(
                "[{}] $ {}: {why}\n--- printed:\n{}",
                s.section,
                s.command,
                lines
                    .iter()
                    .take(40)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} shown outputs differ:\n{}",
        failures.len(),
        shown.len(),
        failures.join("\n\n")
    );
}
