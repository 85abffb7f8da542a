//! The `peerport` binary: parse, set up logging, run the library.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = peerport::cli::Cli::parse();
    let quiet = matches!(cli.command, peerport::cli::Command::Demo { .. });
    let default = match cli.verbose {
        0 if quiet => "error",
        0 => "warn,peerport=info,webrtc_ice=error,turn=error,webrtc_util=error",
        1 => "info,peerport=debug",
        _ => "debug,peerport=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(peerport::app::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
