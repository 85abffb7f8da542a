//! The async runtime a command runs on.
//!
//! A tunnel endpoint (`sender`, `receiver`, `run`, `share`, `connect`)
//! runs on one thread: a session is one QUIC connection whose state one
//! thread works on at a time, and handing each packet between a task on
//! one worker and the connection's driver on another cost more than the
//! second core gave (docs/benchmarks.md, "Runtime: one thread"). The
//! servers (`rendezvous`, `demo`) and the short commands keep a worker per
//! core. `PEERPORT_THREADS=N` sets N threads for any command (a sender
//! serving many receivers at once may want several).

use tokio::runtime::{Builder, Runtime};

use crate::cli::Command;

/// Tasks a one-thread runtime runs between two looks at its sockets
/// (tokio's default is 61). Under a bulk transfer some task is always
/// ready, so the scheduler looks for new events only this often: with 61,
/// a ping beside a copy waited about 2 ms in each process; with 8, 0.5-0.7
/// ms round trip at the same throughput (docs/benchmarks.md, "Turns
/// again").
const EVENT_INTERVAL: u32 = 8;

/// The environment variable that sets the number of runtime threads.
pub const THREADS_ENV: &str = "PEERPORT_THREADS";

/// Why the runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `PEERPORT_THREADS` is not a number of threads.
    #[error("{THREADS_ENV}={0:?} is not a number of threads: set it to 1 or more, or unset it")]
    BadThreads(String),
    /// The operating system refused (threads, the I/O driver).
    #[error("cannot start the async runtime: {0}")]
    Start(#[source] std::io::Error),
}

/// How many threads `command` runs on: `None` for one per core.
fn threads(command: &Command, env: Option<&str>) -> Result<Option<usize>, RuntimeError> {
    if let Some(v) = env {
        return match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(RuntimeError::BadThreads(v.to_string())),
        };
    }
    Ok(match command {
        Command::Sender { .. }
        | Command::Receiver { .. }
        | Command::Run { .. }
        | Command::Share { .. }
        | Command::Connect { .. } => Some(1),
        _ => None,
    })
}

/// The runtime for `command` (see the module docs).
pub fn build(command: &Command) -> Result<Runtime, RuntimeError> {
    let env = std::env::var(THREADS_ENV).ok();
    let rt = match threads(command, env.as_deref())? {
        Some(1) => Builder::new_current_thread()
            .event_interval(EVENT_INTERVAL)
            .enable_all()
            .build(),
        Some(n) => Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => Runtime::new(),
    };
    rt.map_err(RuntimeError::Start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn command(args: &[&str]) -> Command {
        crate::cli::Cli::try_parse_from(args).unwrap().command
    }

    fn sender() -> Command {
        command(&[
            "peerport",
            "sender",
            "ice",
            "--source",
            "tcp://127.0.0.1:22",
        ])
    }

    #[test]
    fn tunnel_endpoints_get_one_thread_servers_one_per_core() {
        let sender = sender();
        assert_eq!(threads(&sender, None).unwrap(), Some(1));
        let rendezvous = command(&["peerport", "rendezvous"]);
        assert_eq!(threads(&rendezvous, None).unwrap(), None);
    }

    #[test]
    fn the_environment_decides_when_set() {
        let sender = sender();
        assert_eq!(threads(&sender, Some("4")).unwrap(), Some(4));
        assert_eq!(threads(&sender, Some(" 1 ")).unwrap(), Some(1));
        for bad in ["0", "", "two", "-1"] {
            let e = threads(&sender, Some(bad)).unwrap_err();
            assert!(e.to_string().contains("PEERPORT_THREADS"), "{e}");
        }
    }
}
