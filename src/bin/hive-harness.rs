//! hive-harness, run inside an agent's container as hive-harness.service. See
//! docs/socket-protocol.md.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = hyperhive::cli::hive_harness::Args::parse();
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
    match runtime.block_on(hyperhive::cli::hive_harness::run(args)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            let (code, msg) = hyperhive::cli::classify(&e);
            eprintln!("hive-harness: {msg}");
            ExitCode::from(code)
        }
    }
}
