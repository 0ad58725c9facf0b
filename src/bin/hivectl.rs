//! hivectl, the hyperhive admin CLI. See hivectl(1).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Reaching a container's bus re-runs this binary as a namespace-joining helper.
    if let Some(code) = hyperhive::systemd::container_bus::run_if_helper() {
        return code;
    }
    let args = match hyperhive::cli::Args::try_parse() {
        Ok(args) => args,
        // --help and --version print as clap does; a usage error is one line, exit 2.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("hivectl: {}", hyperhive::cli::clap_one_line(&e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hivectl: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hyperhive::cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, msg) = hyperhive::cli::classify(&e);
            eprintln!("hivectl: {msg}");
            ExitCode::from(code)
        }
    }
}
