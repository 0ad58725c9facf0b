//! `cargo run -p xtask -- gen-docs OUTDIR`: see the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "hyperhive's project tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write man pages (OUTDIR/man) and bash, zsh and fish completions
    /// (OUTDIR/completions/<shell>) for hivectl and hive-c0re
    GenDocs {
        /// Directory to write into; created if missing
        outdir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.task {
        Task::GenDocs { outdir } => xtask::gen_docs(&outdir).map(|files| {
            println!("wrote {} files under {}", files.len(), outdir.display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
