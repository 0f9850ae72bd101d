//! `msg-client`: telemetry. Sends one JSON value per UDP datagram to the hub (the seed's
//! `udp_client_2.py` format), either the same `--data` at an interval or each line of
//! stdin, and waits (bounded) for each reply.
//!
//! This file only maps flags onto [`udphub::client::msg::MsgClientConfig`] and prints the
//! result; the work is in [`udphub::client::msg`].

use clap::Parser;
use std::io::BufReader;
use std::process::ExitCode;
use std::time::Duration;
use udphub::client::cli_args::{parse_name, KeyArgs};
use udphub::client::msg::{self, Messages, MsgClientConfig};
use udphub::client::msg_sender::MsgProtocol;
use udphub::client::resolve_hub;
use udphub::client::stats::{json_line, MsgSummary};
use udphub::shutdown::Shutdown;
use udphub::wire::name::SourceName;

/// Send JSON telemetry messages to the hub, one per UDP datagram.
///
/// Prints a status line every second on stderr and a summary on stdout when it ends (after
/// --count messages, at the end of stdin, or on Ctrl-C). Exits non-zero when no message at
/// all was answered. Logging: RUST_LOG (info by default).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The JSON value to send, as given (checked to be valid JSON before anything is sent).
    #[arg(
        long,
        default_value = "[0,0,0,1]",
        value_name = "JSON",
        conflicts_with = "stdin"
    )]
    data: String,
    /// Send each line of stdin as one message instead of --data: invalid lines are reported
    /// with their line number and skipped, blank lines are skipped, end of input ends the run.
    #[arg(long)]
    stdin: bool,
    /// Least time between two messages, in milliseconds.
    #[arg(long, default_value_t = 10, value_name = "MS")]
    interval_ms: u64,
    /// Stop after sending N messages (default: until Ctrl-C or the end of stdin).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// The hub's message address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:6666")]
    hub: String,
    /// Longest wait for each reply; a message without one counts as lost.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    reply_timeout_ms: u64,
    /// How often the status line is printed on stderr; 0 turns it off.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    status_interval_ms: u64,
    /// Wire format: framed (udphub's own: the hub records each message exactly once, and
    /// a message whose reply is lost is sent again) or seed (for a seed server: no
    /// resends, a seed server would record a resent message twice).
    #[arg(long, value_enum, default_value_t = MsgFormat::Framed)]
    protocol: MsgFormat,
    /// framed: the name the hub shows this sender as (in --msg-log lines, /state, the
    /// stats): 1-64 characters of A-Z a-z 0-9 . _ - (default: this machine's host name).
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    name: Option<SourceName>,
    /// framed: run PROGRAM for each command the hub sends (its JSON on PROGRAM's stdin,
    /// its id in UDPHUB_COMMAND_ID; PROGRAM's output goes to stderr), one at a time between
    /// two messages, instead of printing each as a JSON line {"command": ..., "id": N} on
    /// stdout. A failing or hanging program is logged and the client goes on.
    #[arg(long, value_name = "PROGRAM")]
    on_command: Option<std::path::PathBuf>,
    /// With --on-command, kill PROGRAM if it runs longer than this.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    on_command_timeout_ms: u64,
    #[command(flatten)]
    keys: KeyArgs,
    /// Print the summary as one JSON object on stdout (for scripts, e.g. the benchmark)
    /// instead of the text; times in microseconds, `null` where there is no value.
    #[arg(long)]
    json_summary: bool,
}

/// `--protocol`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum MsgFormat {
    Framed,
    Seed,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let hub = match resolve_hub(&args.hub) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("msg-client: {e}");
            return ExitCode::from(2);
        }
    };
    if args.reply_timeout_ms == 0 {
        eprintln!("msg-client: --reply-timeout-ms must be positive");
        return ExitCode::from(2);
    }
    let keys = match args
        .keys
        .device_keys(matches!(args.protocol, MsgFormat::Framed), "msg-client")
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("msg-client: {e}");
            return ExitCode::from(2);
        }
    };
    let config = MsgClientConfig {
        hub,
        interval: Duration::from_millis(args.interval_ms),
        count: args.count,
        reply_timeout: Duration::from_millis(args.reply_timeout_ms),
        status_interval: (args.status_interval_ms > 0)
            .then(|| Duration::from_millis(args.status_interval_ms)),
        protocol: match args.protocol {
            MsgFormat::Framed => MsgProtocol::Framed {
                name: args.name.clone().unwrap_or_else(SourceName::of_this_host),
                keys,
            },
            MsgFormat::Seed => MsgProtocol::Seed,
        },
        on_command: args
            .on_command
            .clone()
            .map(|p| (p, Duration::from_millis(args.on_command_timeout_ms.max(1)))),
    };
    let messages = if args.stdin {
        Messages::Lines(Box::new(BufReader::new(std::io::stdin())))
    } else {
        Messages::Repeat(args.data.clone())
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handler() {
        eprintln!("msg-client: cannot install the Ctrl-C handler: {e}");
        return ExitCode::from(2);
    }
    let report = match msg::run(&config, messages, &shutdown) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("msg-client: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json_summary {
        let error = report.error.as_ref().map(ToString::to_string);
        println!(
            "{}",
            json_line(&MsgSummary::of(&report.stats, report.elapsed, error))
        );
    } else {
        print!("{}", report.summary);
    }
    if let Some(e) = &report.error {
        eprintln!("msg-client: error: {e}");
    }
    if report.success() {
        return ExitCode::SUCCESS;
    }
    if report.stats.counts.answered == 0 {
        eprintln!(
            "msg-client: no message was answered: is the hub's message service at {}?",
            config.hub
        );
    }
    ExitCode::FAILURE
}
