//! `xtask gen-docs` into a temp dir: every page and completion file is there, the top
//! pages list every subcommand, and groff (through `man`, which must be installed) renders
//! each page without a warning.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;

fn subcommand_names(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn writes_man_pages_for_every_subcommand_and_completions_for_every_shell() {
    let out = tempfile::tempdir().unwrap();
    let written = xtask::gen_docs(out.path()).unwrap();
    for path in &written {
        assert!(
            path.is_file(),
            "{} was reported but is missing",
            path.display()
        );
    }

    let hivectl_subs = subcommand_names(&hyperhive::cli::Args::command());
    assert!(hivectl_subs.contains(&"create".to_string()));
    let c0re_subs = subcommand_names(&hyperhive::cli::daemon::Args::command());
    let harness_subs = subcommand_names(&hyperhive::cli::hive_harness::Args::command());

    let mut expected = BTreeSet::from([
        "hivectl.1".to_string(),
        "hive-c0re.8".to_string(),
        "hive-harness.8".to_string(),
    ]);
    expected.extend(hivectl_subs.iter().map(|s| format!("hivectl-{s}.1")));
    expected.extend(c0re_subs.iter().map(|s| format!("hive-c0re-{s}.8")));
    expected.extend(harness_subs.iter().map(|s| format!("hive-harness-{s}.8")));
    assert_eq!(listing(&out.path().join("man")), expected);

    for (dir, names) in [
        (
            "bash",
            ["hive-c0re.bash", "hive-harness.bash", "hivectl.bash"],
        ),
        (
            "fish",
            ["hive-c0re.fish", "hive-harness.fish", "hivectl.fish"],
        ),
        ("zsh", ["_hive-c0re", "_hive-harness", "_hivectl"]),
    ] {
        let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            listing(&out.path().join("completions").join(dir)),
            want,
            "{dir}"
        );
    }

    let hivectl = fs::read_to_string(out.path().join("man/hivectl.1")).unwrap();
    for sub in &hivectl_subs {
        assert!(
            hivectl.contains(&format!("hivectl\\-{sub}(1)")),
            "hivectl.1 does not list {sub}"
        );
    }
    let c0re = fs::read_to_string(out.path().join("man/hive-c0re.8")).unwrap();
    assert!(
        c0re.contains(".TH \"hive-c0re\" \"8\""),
        "hive-c0re.8 is not in section 8"
    );
    assert!(c0re.contains("SEE ALSO") && c0re.contains("/run/hyperhive/NAME/"));

    // The bash completion parses (bash is always there; zsh and fish may not be).
    let status = Command::new("bash")
        .arg("-n")
        .arg(out.path().join("completions/bash/hivectl.bash"))
        .status()
        .unwrap();
    assert!(status.success(), "hivectl.bash has a syntax error");
}

#[test]
fn every_page_renders_without_groff_warnings() {
    // Not a skip: a page that groff cannot render must fail the suite, so man has to be
    // there (scripts/ensure-deps.sh installs man-db, which brings groff).
    assert!(
        Command::new("man").arg("--version").output().is_ok(),
        "man is not installed: run scripts/ensure-deps.sh (apt-get install man-db)"
    );
    let out = tempfile::tempdir().unwrap();
    xtask::gen_docs(out.path()).unwrap();
    for name in listing(&out.path().join("man")) {
        let page = out.path().join("man").join(&name);
        let run = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success() && stderr.trim().is_empty(),
            "{name}: {stderr}"
        );
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(text.contains("NAME"), "{name} rendered no NAME section");
    }
}

#[test]
fn the_binary_takes_gen_docs_outdir() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("new/dir");
    let run = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("gen-docs")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(dir.join("man/hivectl.1").is_file());
    assert!(dir.join("completions/zsh/_hivectl").is_file());
}

#[test]
fn synopses_name_option_values_and_pages_have_examples() {
    let out = tempfile::tempdir().unwrap();
    xtask::gen_docs(out.path()).unwrap();
    let create = fs::read_to_string(out.path().join("man/hivectl-create.1")).unwrap();
    let synopsis = create
        .split(".SH SYNOPSIS")
        .nth(1)
        .and_then(|s| s.split(".SH ").next())
        .unwrap();
    for want in [
        r"[\fB\-\-spec\fR \fIFILE\fR]",
        r"[\fB\-\-root\fR \fIDIR\fR]",
        r"[\fB\-\-volatile\fR \fIno|yes|state|overlay\fR]",
        r"[\fB\-\-path\fR \fIDIR\fR]...",
        r"[\fB\-\-autostart\fR \fIyes|no\fR]",
        r"[\fB\-\-replace\fR]",
    ] {
        assert!(synopsis.contains(want), "{want} missing from: {synopsis}");
    }
    for page in [
        "hivectl.1",
        "hivectl-create.1",
        "hivectl-status.1",
        "hivectl-logs.1",
    ] {
        let text = fs::read_to_string(out.path().join("man").join(page)).unwrap();
        assert!(text.contains(".SH EXAMPLES"), "{page} has no EXAMPLES");
    }
}
