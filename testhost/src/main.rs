//! `hive-testhost`: boot, use and stop a test host by hand (for the demo and for debugging
//! integration tests). The library does the work; this only parses arguments.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};

const USAGE: &str = "\
usage: hive-testhost up [--daemon] [--loop] [NAME]   boot a test host (--loop: with loop devices) and leave it running
       hive-testhost about                  boot one, print its systemd and cgroup mode, stop it
       hive-testhost down NAME              stop it and remove its state
       hive-testhost sh NAME CMD...         run CMD inside it
       hive-testhost ctl NAME CMD...        run a host-side systemctl/systemd-run/busctl against its bus";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hive-testhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    match cmd.as_str() {
        "up" => up(rest),
        "about" => about(),
        "down" => match rest {
            [name] => testhost::down(name),
            _ => bail!("{USAGE}"),
        },
        "sh" => match rest {
            [name, argv @ ..] if !argv.is_empty() => {
                let leader = testhost::leader_of(name)?;
                let mut cmd = testhost::nsenter_command(leader, argv);
                // The binaries built beside this one (hivectl, hive-c0re) are bound into
                // the host at the same path: put them on PATH, so `hive-testhost sh NAME
                // hivectl list` works as on an installed host.
                let exe = std::env::current_exe()?;
                let path = std::env::var("PATH").unwrap_or_default();
                if let Some(path) = exe
                    .parent()
                    .and_then(|d| testhost::path_with_bins(d, &path))
                {
                    cmd.env("PATH", path);
                }
                // Interactive use and scripts piped in need our stdin.
                Err(cmd.stdin(std::process::Stdio::inherit()).exec()).context("exec nsenter")
            }
            _ => bail!("{USAGE}"),
        },
        "ctl" => match rest {
            [name, argv @ ..] if !argv.is_empty() => {
                testhost::leader_of(name)?;
                let bus = format!(
                    "unix:path={}/run-dbus/system_bus_socket",
                    testhost::state_dir(name).display()
                );
                Err(testhost::ctl_command(&bus, argv).exec()).context("exec unshare")
            }
            _ => bail!("{USAGE}"),
        },
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

/// What a test run ran on: `HYPERHIVE_TESTHOST_OS`, systemd's version, the cgroup mode.
fn about() -> Result<()> {
    let host = testhost::TestHost::boot(testhost::Options::default())?;
    let version = host.run_ok(&["systemctl", "--version"]);
    let cgroup = host.run_ok(&["stat", "-fc", "%T", "/sys/fs/cgroup"]);
    let mode = match cgroup.as_str() {
        "cgroup2fs" => "cgroup v2 (unified)",
        "tmpfs" => "hybrid cgroups (v1 + v2)",
        other => other,
    };
    println!(
        "test host: {}, {}, {mode}",
        testhost::HostOs::from_env()?.as_str(),
        version.lines().next().unwrap_or("systemd ?")
    );
    Ok(())
}

fn up(args: &[String]) -> Result<()> {
    let mut opts = testhost::Options::default();
    for arg in args {
        match arg.as_str() {
            "--daemon" => opts.start_daemon = true,
            "--loop" => opts.loop_devices = true,
            a if a.starts_with('-') => bail!("unknown option {a}\n{USAGE}"),
            a if opts.name.is_none() => opts.name = Some(a.to_string()),
            _ => bail!("{USAGE}"),
        }
    }
    // The binaries built alongside this one (hive-c0re, hivectl, ...) are the ones to test.
    let exe = std::env::current_exe().context("locating hive-testhost")?;
    opts.bin_dir = exe.parent().map(Path::to_path_buf);
    if Path::new("units").is_dir() {
        opts.units_dir = Some("units".into());
    }
    let host = testhost::TestHost::boot(opts)?;
    println!(
        "up: {} nspawn={} leader={} ready_in={}ms",
        host.name(),
        host.nspawn_pid(),
        host.leader(),
        host.boot_time().as_millis()
    );
    println!("    DBUS_SYSTEM_BUS_ADDRESS={}", host.bus_address());
    println!("    stop with: hive-testhost down {}", host.name());
    host.detach();
    Ok(())
}
