//! `udp-relay`: a lossy UDP relay for testing links. Put it between a UDP client and the
//! hub to see how a protocol behaves on a bad Wi-Fi link: it drops, duplicates, reorders and
//! delays datagrams with a seeded generator, in both directions, and can limit the bandwidth
//! (a narrow link with a queue) without network namespaces.
//!
//! This file only maps command-line flags onto [`udphub::relay::FaultConfig`]s (and their
//! [`udphub::relay::LinkConfig`]s), prints the bound address, waits for Ctrl-C/SIGTERM and
//! prints the counts per direction.

use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use udphub::relay::link::{DEFAULT_QUEUE_BYTES, MIN_QUEUE_BYTES};
use udphub::relay::{FaultConfig, LinkConfig, Relay};
use udphub::shutdown::{Shutdown, POLL_INTERVAL};

/// Relay UDP datagrams between clients and a server, dropping, duplicating, reordering,
/// delaying and rate-limiting them on purpose.
///
/// Each client gets its own source port toward the upstream, so the server sees one sender
/// per client. Prints "udp-relay: listening on udp ADDR -> UPSTREAM", then
/// "udp-relay: ready"; on Ctrl-C or SIGTERM prints the counts per direction and exits.
/// The same faults apply both ways (the replies use seed + 1, so the two directions decide
/// independently) unless --upstream-only. Logging: RUST_LOG (info by default).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address the clients send to (port 0 lets the OS choose).
    #[arg(long)]
    listen: SocketAddr,
    /// Server to relay to, e.g. the hub's image port.
    #[arg(long)]
    upstream: SocketAddr,
    /// Probability (0..1) that a datagram is dropped.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    loss: f64,
    /// Probability (0..1) that a datagram is sent twice.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    duplicate: f64,
    /// Probability (0..1) that a datagram is held back and sent after the next one.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    reorder: f64,
    /// Delay added to every datagram, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Extra random delay, uniform in 0..=JITTER milliseconds, per datagram.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Seed of the fault decisions; the same seed and traffic give the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Inject faults only toward the upstream; replies pass untouched (no rate limit either).
    #[arg(long)]
    upstream_only: bool,
    /// Limit each direction to a link of this many Mbit/s (> 0), after the faults above:
    /// datagrams leave one after the other, each (payload + 28 bytes of IPv4/UDP headers) * 8
    /// / rate after the one before, and wait in a queue of --queue-bytes meanwhile.
    #[arg(long, value_parser = rate_mbit)]
    rate_mbit: Option<f64>,
    /// The rate-limited link's queue, in bytes (payload + 28 per datagram, at least 1500;
    /// default 65536): a datagram that would overflow it is dropped and counted as a queue
    /// drop, apart from --loss. Needs --rate-mbit.
    #[arg(long, requires = "rate_mbit", value_parser = queue_bytes)]
    queue_bytes: Option<usize>,
    /// The rate-limited link as a token bucket of this many bytes, as `tc ... tbf burst`
    /// (at least 1500): datagrams leave at once while the bucket covers them, then at the
    /// rate; without it every datagram takes its serialization time. Needs --rate-mbit.
    #[arg(long, requires = "rate_mbit", value_parser = queue_bytes)]
    burst_bytes: Option<usize>,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("must be between 0 and 1, got {p}"))
    }
}

fn rate_mbit(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if r.is_finite() && r > 0.0 {
        Ok(r)
    } else {
        Err(format!("must be a positive number of Mbit/s, got {r}"))
    }
}

fn queue_bytes(s: &str) -> Result<usize, String> {
    let q: usize = s.parse().map_err(|e| format!("{e}"))?;
    if q >= MIN_QUEUE_BYTES {
        Ok(q)
    } else {
        Err(format!(
            "must be at least {MIN_QUEUE_BYTES} bytes (one full datagram), got {q}"
        ))
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let to_upstream = FaultConfig {
        loss: args.loss,
        duplicate: args.duplicate,
        reorder: args.reorder,
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        seed: args.seed,
        link: args.rate_mbit.map(|rate_mbit| LinkConfig {
            rate_mbit,
            queue_bytes: args.queue_bytes.unwrap_or(DEFAULT_QUEUE_BYTES),
            burst_bytes: args.burst_bytes.unwrap_or(0),
        }),
    };
    let to_client = if args.upstream_only {
        FaultConfig::default()
    } else {
        FaultConfig {
            seed: args.seed.wrapping_add(1),
            ..to_upstream
        }
    };

    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handler() {
        eprintln!("udp-relay: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    let relay = match Relay::start(
        args.listen,
        args.upstream,
        to_upstream,
        to_client,
        shutdown.clone(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("udp-relay: cannot start on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "udp-relay: listening on udp {} -> {}",
        relay.local_addr(),
        args.upstream
    );
    let _ = writeln!(out, "udp-relay: ready");
    let _ = out.flush();
    drop(out);

    while !shutdown.wait_timeout(POLL_INTERVAL) && !relay.is_finished() {}
    let failed = !shutdown.is_triggered();
    let stats = relay.join();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "udp-relay: to upstream: {}", stats.to_upstream);
    let _ = writeln!(out, "udp-relay: to client: {}", stats.to_client);
    let _ = writeln!(
        out,
        "udp-relay: clients: {} seen, {} still mapped",
        stats.clients_opened, stats.clients
    );
    let _ = out.flush();
    if failed {
        eprintln!("udp-relay: the relay stopped on its own (see the error above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
