//! hive-c0re, the hyperhive daemon. See hive-c0re(8) and docs/architecture.md.

use std::process::ExitCode;

use clap::Parser;
use hyperhive::cli::daemon::{Args, Command};

fn main() -> ExitCode {
    // Reaching a container's bus re-runs this binary as a namespace-joining helper.
    if let Some(code) = hyperhive::systemd::container_bus::run_if_helper() {
        return code;
    }
    let args = Args::parse();
    if let Some(Command::EgressProxy { agent, dir }) = &args.command {
        return hyperhive::cli::daemon::egress_proxy(agent, dir);
    }
    if let Some(Command::PortForward {
        agent,
        machine,
        dir,
        ports,
    }) = &args.command
    {
        return hyperhive::cli::daemon::port_forward(agent, machine, dir, ports);
    }
    hyperhive::logging::init("hive-c0re", log::LevelFilter::Info);
    if args.command.is_none() {
        // Before any other thread: it reads and clears the environment.
        let n = hyperhive::systemd::fd_store::take_inherited();
        if n > 0 {
            log::info!("took {n} container connections the previous daemon handed over; closing them once the agents are adopted");
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hive-c0re: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        None => runtime.block_on(hyperhive::cli::daemon::serve(args.opts)),
        Some(Command::EgressProxy { .. }) | Some(Command::PortForward { .. }) => {
            unreachable!("handled above")
        }
        Some(Command::UnregisterMachine { machine }) => runtime.block_on(
            hyperhive::cli::daemon::unregister_machine(&machine, args.opts.bus_address),
        ),
    };
    // Not torn down task by task: everything the daemon keeps is on disk or in systemd,
    // its calls are answered (serve drains them), and what the runtime still holds — a
    // connection to each agent's container, a listener per agent socket — the kernel
    // closes at exit. The teardown cost ~1 ms per agent on every restart's stop.
    std::mem::forget(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
