//! hive-harness, run inside an agent's container as hive-harness.service. See docs/socket-protocol.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The hyperhive harness: connects the agent's container to hive-c0re through the agent
/// socket and runs the agent's command
#[derive(Debug, Parser)]
#[command(name = "hive-harness", version)]
struct Args {
    /// The agent socket
    #[arg(long, env = "HIVE_SOCKET", default_value = hyperhive::socket::SOCKET_IN_CONTAINER)]
    socket: PathBuf,
    /// The agent's durable event log (SQLite)
    #[arg(long, default_value = "/state/hyperhive-events.sqlite")]
    events: PathBuf,
    /// The agent's command and its arguments (none: just stay connected)
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    hyperhive::logging::init("hive-harness", log::LevelFilter::Info);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hive-harness: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = hyperhive::harness::Options {
        socket: args.socket,
        events: args.events,
        command: args.command,
    };
    match runtime.block_on(hyperhive::harness::run(opts)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
