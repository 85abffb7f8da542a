//! `peerport-lab`: tools for peerport's benchmarks and network labs, kept
//! out of the product binary. `scripts/bench`, `scripts/flood` and
//! `scripts/lab/` run it beside `peerport`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

mod benchflood;
mod benchquic;
mod labwire;

/// Lab and bench tools for peerport.
#[derive(Debug, Parser)]
#[command(name = "peerport-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Baseline for scripts/bench: bare quinn and iroh QUIC bulk transfer,
    /// ping-pong and datagrams, no tunnel. Prints JSON.
    BenchQuic {
        /// Megabytes to move in the bulk transfer.
        #[arg(long, default_value_t = 256)]
        megabytes: usize,
        /// 1-byte ping-pong rounds.
        #[arg(long, default_value_t = 3000)]
        pings: usize,
        /// Seconds per paced datagram run (100 and 500 Mbit/s, 1350 and 1450 bytes).
        #[arg(long, default_value_t = 3.0)]
        udp_secs: f64,
    },
    /// For scripts/flood: sealed QUIC Initials (real first flights) to UDP
    /// ports on 127.0.0.1. Prints JSON.
    BenchFlood {
        /// Where to send (repeatable); only loopback addresses are accepted.
        #[arg(long = "target", value_name = "127.0.0.1:PORT", required = true)]
        targets: Vec<SocketAddr>,
        /// Packets per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    /// For the fault lab: a userspace Ethernet wire between two interfaces
    /// with delay, jitter, loss, a rate and blackouts (Linux, root).
    Wire {
        /// First interface.
        #[arg(long)]
        a: String,
        /// Second interface.
        #[arg(long)]
        b: String,
        /// `key=value` settings file, re-read when it changes.
        #[arg(long)]
        control: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BenchQuic {
            megabytes,
            pings,
            udp_secs,
        } => tokio::runtime::Runtime::new()?.block_on(benchquic::run(benchquic::BenchSpec {
            bulk_bytes: megabytes << 20,
            pings,
            datagram_runs: vec![(100, 1350), (100, 1450), (500, 1350), (500, 1450)],
            datagram_secs: udp_secs,
        })),
        Command::BenchFlood {
            targets,
            rate,
            secs,
        } => {
            anyhow::ensure!(
                targets.iter().all(|t| t.ip().is_loopback()),
                "bench-flood only sends to loopback addresses"
            );
            let r = benchflood::run(&targets, rate, secs)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Wire { a, b, control } => labwire::run(&a, &b, control),
    }
}
