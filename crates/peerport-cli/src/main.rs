//! The `peerport` binary: parse, set up logging, run the library.
//!
//! This crate is the edge: the commands ([`cli`], [`app`]), settings from
//! flags and files, declared once ([`settings`]), the views of
//! a running tunnel ([`views`], [`observe`]), the demo, and memory trimming.
//! The tunnel itself is the `peerport` library.

mod app;
mod cli;
mod demo;
mod memory;
mod observe;
mod out;
mod runtime;
mod settings;
mod tlsfile;
mod views;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Dependencies that log expected events as errors: webrtc-ice (a late STUN
/// answer), turn (a packet for a released allocation), iroh's relay
/// transport and noq's endpoint driver (their channels closing while an
/// endpoint closes), the Nostr relay
/// pool (every reconnect attempt, a relay going away), noq's warnings about
/// paths of a connection whose peer restarted. peerport reports ICE,
/// TURN, relay and Nostr failures itself, with what to do; `-v` shows them all.
const QUIET_DEPENDENCIES: &str = "webrtc_ice=off,turn=off,webrtc_util=off,iroh::socket::transports::relay=off,noq::endpoint=off,noq_proto=error,nostr_relay_pool=off";

/// peerport's own log lines for events the progress lines already say
/// (a session up, a path chosen, a session ended): shown with `-v`, or
/// when RUST_LOG asks for them (the lab and bench scripts read them).
const EVENT_LINES: &str = "peerport::event=warn";

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let args: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            match cli::missing_mode(&args, &e) {
                Some(message) => {
                    crate::out::say!("error: {message}");
                    return ExitCode::from(app::exit::USAGE);
                }
                None => e.exit(),
            }
        }
    };
    let quiet = matches!(cli.command, cli::Command::Demo { .. });
    let default = match cli.verbose {
        0 if quiet => format!("error,{QUIET_DEPENDENCIES}"),
        0 if cli.log_format == cli::LogFormat::Text => {
            format!("warn,peerport=info,{EVENT_LINES},{QUIET_DEPENDENCIES}")
        }
        0 => format!("warn,peerport=info,{QUIET_DEPENDENCIES}"),
        1 => "info,peerport=debug".to_string(),
        _ => "debug,peerport=trace".to_string(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // a stderr that fails (a closed pipe) loses log lines and nothing else:
    // tracing-subscriber would report the failure with `eprintln!`, which
    // panics on the same stderr, in whichever task logged (a signal task
    // that panics never stops the process)
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(observe::LogWriter)
        .log_internal_errors(false);
    match cli.log_format {
        cli::LogFormat::Json => fmt.json().with_ansi(false).init(),
        cli::LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    raise_fd_limit();
    let rt = match runtime::build(&cli.command) {
        Ok(rt) => rt,
        Err(e @ runtime::RuntimeError::BadThreads(_)) => {
            crate::out::say!("error: {e}");
            return ExitCode::from(app::exit::USAGE);
        }
        Err(e) => {
            crate::out::say!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // the allocator returns a burst's memory; stops with the runtime
    let reclaim = tokio_util::sync::CancellationToken::new();
    rt.spawn(memory::reclaim(reclaim.clone()));
    let result = rt.block_on(async {
        let r = app::run(cli).await;
        // endpoints of exchanges given up midway finish closing
        peerport::closing::wait(std::time::Duration::from_secs(1)).await;
        r
    });
    reclaim.cancel();
    let code = if let Some(sig) = app::stop_signal() {
        // stopped by Ctrl-C or SIGTERM: 130 / 143, as shells expect
        ExitCode::from(128 + sig as u8)
    } else {
        match result {
            Ok(()) => ExitCode::from(app::exit::OK),
            // the reader of stdout went away (`| head`): nothing to report
            Err(e) if out::is_closed(&e) => ExitCode::from(app::exit::OK),
            Err(e) => {
                crate::out::say!("error: {}", app::render_error(&e));
                ExitCode::from(app::exit_code(&e))
            }
        }
    };
    // Do not wait for a blocking read of stdin (a paste prompt) to return.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

/// Raise the soft limit on open descriptors to the hard one, as Go
/// programs do: each carried TCP connection costs a descriptor, and the
/// usual soft limit (1024) is reached by a few hundred clients. The hard
/// limit stays what the administrator set (`LimitNOFILE=` in the units).
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}
