//! hyperhive's project tasks. `gen-docs` renders man pages and shell completions from the
//! same clap definitions the binaries parse with, so the docs cannot drift from the flags.
//! Packaging (nix/package.nix) runs it at build time; `scripts/verify-units` uses the man
//! pages to check every unit's `Documentation=`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// One binary whose pages and completions are generated.
pub struct Binary {
    /// The command as clap defines it; its name is the binary's name.
    pub command: clap::Command,
    /// Man section: 1 for user commands, 8 for daemons.
    pub section: &'static str,
    /// The FILES section of the top page: (path, what it is).
    pub files: &'static [(&'static str, &'static str)],
    /// The SEE ALSO section of the top page.
    pub see_also: &'static [&'static str],
}

/// The shells completions are written for, each in `completions/<shell>/`.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// hyperhive's binaries with clap definitions: `hivectl` (1), `hive-c0re` (8) and
/// `hive-harness` (8, it runs inside each agent's container).
pub fn binaries() -> Vec<Binary> {
    vec![
        Binary {
            command: hyperhive::cli::Args::command(),
            section: "1",
            files: &[
                (
                    "/etc/hyperhive/agents/NAME.toml",
                    "A declared agent spec, for example rendered by the NixOS module's \
                     services.hyperhive.agents.",
                ),
                (
                    "/var/lib/hyperhive/agents/NAME/spec.toml",
                    "The agent's normalized spec, as the daemon saved it.",
                ),
            ],
            see_also: &[
                "hive-c0re(8)",
                "systemctl(1)",
                "journalctl(1)",
                "machinectl(1)",
                "systemd-nspawn(1)",
            ],
        },
        Binary {
            command: hyperhive::cli::daemon::Args::command(),
            section: "8",
            files: &[
                ("/etc/hyperhive/agents/NAME.toml", "Declared agent specs."),
                (
                    "/var/lib/hyperhive/agents/NAME/state",
                    "The agent's persistent state, bound at /state; kept by destroy.",
                ),
                (
                    "/var/lib/hyperhive/agents/NAME/claude",
                    "The agent's own credentials (mode 0700), bound at /root/.claude; never \
                     shared between agents.",
                ),
                (
                    "/run/hyperhive/NAME/",
                    "The agent's runtime directory, bound at /run/hyperhive; preserved across \
                     restarts of the daemon.",
                ),
            ],
            see_also: &[
                "hivectl(1)",
                "hive-harness(8)",
                "systemd.unit(5)",
                "systemd-nspawn(1)",
                "machinectl(1)",
                "journalctl(1)",
            ],
        },
        Binary {
            command: hyperhive::cli::hive_harness::Args::command(),
            section: "8",
            files: &[
                (
                    "/run/hyperhive/hive.sock",
                    "The agent socket inside the container: the harness's only door to the host.",
                ),
                (
                    "/state/hyperhive-events.sqlite",
                    "The agent's durable event log, kept across destroy and recreate.",
                ),
            ],
            see_also: &[
                "hive-c0re(8)",
                "hivectl(1)",
                "systemd.service(5)",
                "sd_notify(3)",
            ],
        },
    ]
}

/// Writes `out/man/<bin>.<section>` (plus `<bin>-<sub>.<section>` per visible subcommand)
/// and `out/completions/{bash,zsh,fish}/` for every binary. Returns the files written.
pub fn gen_docs(out: &Path) -> Result<Vec<PathBuf>> {
    let man_dir = out.join("man");
    fs::create_dir_all(&man_dir).with_context(|| format!("creating {}", man_dir.display()))?;
    let mut written = Vec::new();
    for bin in binaries() {
        let name = bin.command.get_name().to_string();
        written.extend(man_pages(&bin, &man_dir).with_context(|| format!("man pages of {name}"))?);
        for shell in SHELLS {
            let dir = out.join("completions").join(shell.to_string());
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut cmd = bin.command.clone();
            let path = clap_complete::generate_to(shell, &mut cmd, &name, &dir)
                .with_context(|| format!("{shell} completions of {name}"))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The top page and one page per subcommand, all in the binary's section. clap_mangen's own
/// `generate_to` would put every page in section 1.
fn man_pages(bin: &Binary, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = bin.command.clone().disable_help_subcommand(true);
    // Builds the display names (hivectl-create) that subcommand pages are titled with.
    cmd.build();
    let source = format!(
        "hyperhive {}",
        cmd.get_version().unwrap_or(env!("CARGO_PKG_VERSION"))
    );
    let page = |cmd: &clap::Command, extra: Option<&Binary>| -> Result<PathBuf> {
        let man = Man::new(cmd.clone()).section(bin.section);
        let path = dir.join(man.get_filename());
        let mut text = Vec::new();
        man.render(&mut text)?;
        let mut text = retitle(&text, &man_title(cmd), bin.section, &source)?;
        text = synopsis_values(&text, cmd)?;
        text.extend(examples_section(&man_title(cmd))?);
        if let Some(bin) = extra {
            text.extend(extra_sections(bin)?);
        }
        write_file(&path, &text)?;
        Ok(path)
    };

    let mut written = vec![page(&cmd, Some(bin))?];
    let mut stack: Vec<clap::Command> = visible_subcommands(&cmd);
    while let Some(sub) = stack.pop() {
        written.push(page(&sub, None)?);
        stack.extend(visible_subcommands(&sub));
    }
    Ok(written)
}

fn visible_subcommands(cmd: &clap::Command) -> Vec<clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect()
}

fn man_title(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// Replaces clap_mangen's `.TH` line. It leaves an empty date unquoted, which shifts the
/// source into the date's place and drops the manual's name; and it gives subcommand pages
/// the subcommand's name as their source. Every argument is quoted here.
fn retitle(page: &[u8], title: &str, section: &str, source: &str) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(page).context("clap_mangen wrote non-UTF-8")?;
    let th = format!(
        ".TH {} {} {} {} {}",
        quote(title),
        quote(section),
        quote(""),
        quote(source),
        quote("hyperhive manual")
    );
    let mut out = String::with_capacity(text.len() + 32);
    let mut replaced = false;
    for line in text.split_inclusive('\n') {
        if !replaced && line.starts_with(".TH ") {
            out.push_str(&th);
            out.push('\n');
            replaced = true;
        } else {
            out.push_str(line);
        }
    }
    anyhow::ensure!(replaced, "clap_mangen wrote no .TH line");
    Ok(out.into_bytes())
}

/// clap_mangen's SYNOPSIS names options without their values (`[--spec]`); this puts each
/// option's value name (or its possible values) after it: `[--spec FILE]`,
/// `[--volatile no|yes|state|overlay]`, `[--path DIR]...`.
fn synopsis_values(page: &[u8], cmd: &clap::Command) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(page).context("clap_mangen wrote non-UTF-8")?;
    let mut out = String::with_capacity(text.len() + 256);
    let mut in_synopsis = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with(".SH ") {
            in_synopsis = line.trim_end() == ".SH SYNOPSIS";
            out.push_str(line);
            continue;
        }
        if !in_synopsis {
            out.push_str(line);
            continue;
        }
        let mut l = line.to_owned();
        for arg in cmd.get_arguments() {
            let (Some(long), true) = (arg.get_long(), arg.get_action().takes_values()) else {
                continue;
            };
            if arg.is_positional() || arg.is_hide_set() {
                continue;
            }
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_owned())
                .collect();
            // clap fills in the id, upper-cased, where no value name was given: the
            // possible values say more then.
            let id = arg.get_id().as_str().to_uppercase();
            let named = arg
                .get_value_names()
                .and_then(|n| n.first())
                .map(|n| n.to_string())
                .filter(|n| *n != id);
            let value = match named {
                Some(name) => name,
                None if !values.is_empty() => values.join("|"),
                None => id,
            };
            let flag = format!("\\fB\\-\\-{}\\fR]", long.replace('-', "\\-"));
            let with = format!(
                "\\fB\\-\\-{}\\fR \\fI{}\\fR]{}",
                long.replace('-', "\\-"),
                value.replace('-', "\\-"),
                if matches!(arg.get_action(), clap::ArgAction::Append) {
                    "..."
                } else {
                    ""
                }
            );
            l = l.replace(&flag, &with);
        }
        out.push_str(&l);
    }
    Ok(out.into_bytes())
}

/// EXAMPLES for a page, by its title (`hivectl-create`); none for a page not listed.
pub fn examples(title: &str) -> &'static [(&'static str, &'static str)] {
    match title {
        "hivectl" => &[
            ("hivectl list", "Every agent, with its container unit's state."),
            ("hivectl status alice", "One agent: units, restarts, why it last crashed, its harness, pending approvals, recent log lines."),
            ("hivectl logs alice \\-n 50 \\-\\-no\\-pager", "Her story: daemon events, her container and harness, and systemd's lines about her units."),
            ("hivectl approvals", "What agents are asking for."),
        ],
        "hivectl-create" => &[
            ("hivectl create alice \\-\\-root / \\-\\-volatile yes", "An ephemeral copy of the host as alice's container."),
            ("hivectl create bob \\-\\-spec bob.toml \\-\\-cpu\\-weight 50", "From a spec file, one field overridden by a flag."),
            ("hivectl create bob \\-\\-spec bob.toml \\-\\-replace", "bob exists with another spec: without \\-\\-replace create refuses (exit 2) and lists the differences."),
        ],
        "hivectl-status" => &[
            ("hivectl status alice", "Including \\(lqLast crash:\\(rq: when, killed by which signal or exited with which status, and the invocation that died."),
            ("hivectl status alice \\-\\-json", "The same as JSON."),
        ],
        "hivectl-logs" => &[
            ("hivectl logs alice \\-f", "Follow her log."),
            ("hivectl logs alice \\-x \\-\\-since \\(dq1 hour ago\\(dq", "With the catalog's explanation of each hyperhive event."),
        ],
        "hivectl-destroy" => &[
            ("hivectl destroy alice", "Stop and remove her units and spec; her state and credentials stay."),
            ("hivectl destroy alice \\-\\-purge", "Also delete her state and credentials (also after a plain destroy)."),
        ],
        "hivectl-approve" => &[
            ("hivectl approve 12 \\-\\-note \\(dqtools are vetted\\(dq", "Approve and apply: the agent's spec is changed and the agent rebuilt."),
        ],
        "hivectl-plan" => &[
            ("hivectl plan \\-\\-all", "What a reload would do with every agent, and why."),
            ("hivectl plan alice \\-\\-json", "Checks, units and the diff against what systemd runs, as JSON."),
        ],
        "hive-harness-request-approval" => &[
            ("hive\\-harness request\\-approval spec_change \\(aq{\\(dqpath\\(dq: [\\(dq/opt/x/bin\\(dq]}\\(aq", "Ask for /opt/x/bin on the agent's PATH; prints the approval's id."),
        ],
        _ => &[],
    }
}

fn examples_section(title: &str) -> Result<Vec<u8>> {
    let list = examples(title);
    if list.is_empty() {
        return Ok(Vec::new());
    }
    // Roff source, already escaped in the table above.
    let mut out = String::from(".SH EXAMPLES\n");
    for (cmd, what) in list {
        out.push_str(&format!(".TP\n\\fB{cmd}\\fR\n{what}\n"));
    }
    Ok(out.into_bytes())
}

fn quote(arg: &str) -> String {
    format!("\"{}\"", arg.replace('\\', "\\e").replace('"', "\\(dq"))
}

fn extra_sections(bin: &Binary) -> Result<Vec<u8>> {
    let mut roff = Roff::default();
    if !bin.files.is_empty() {
        roff.control("SH", ["FILES"]);
        for (path, what) in bin.files {
            roff.control("TP", []);
            roff.text([bold(*path)]);
            roff.text([roman(*what)]);
        }
    }
    if !bin.see_also.is_empty() {
        roff.control("SH", ["SEE ALSO"]);
        let mut line = Vec::new();
        for (i, page) in bin.see_also.iter().enumerate() {
            if i > 0 {
                line.push(roman(", "));
            }
            line.push(bold(*page));
        }
        roff.text(line);
    }
    let mut out = Vec::new();
    roff.to_writer(&mut out)?;
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.flush())
        .with_context(|| format!("writing {}", path.display()))
}
