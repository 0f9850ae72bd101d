//! `hub`: the server. Receives camera frames (UDP and TCP) and JSON telemetry (UDP) from
//! the seed clients and ours, acks them, and hands frames to statistics, disk, windows and
//! the HTTP view.
//!
//! This file only maps command-line flags onto [`udphub::hub::HubConfig`], starts the hub
//! through the library's [`udphub::Hub`] (as any program embedding it would), prints the
//! bound addresses, waits for Ctrl-C/SIGTERM and prints the summary.

use clap::Parser;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use udphub::hub::{HubConfig, SecuritySettings};
use udphub::secure::cidr::Cidr;
use udphub::shutdown::Shutdown;

/// Receive camera frames and telemetry from small devices.
///
/// Prints one line per service with the address it bound ("hub: img listening on udp
/// 127.0.0.1:9999"; with --http also "hub: http listening on http://127.0.0.1:8080"), then
/// "hub: ready"; on Ctrl-C or SIGTERM stops within about a second
/// and prints a summary (one JSON object with --json-summary). Logging: RUST_LOG (info by
/// default).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_override_self = true)]
struct Args {
    /// Address to bind every service on (0.0.0.0 to accept from the LAN).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// UDP port for JPEG frames (seed formats); 0 lets the OS choose.
    #[arg(long, default_value_t = 9999)]
    img_port: u16,
    /// UDP port for JSON messages; 0 lets the OS choose.
    #[arg(long, default_value_t = 6666)]
    msg_port: u16,
    /// TCP port for the length-prefixed JPEG stream; 0 lets the OS choose.
    #[arg(long, default_value_t = 8002)]
    tcp_port: u16,
    /// Turn the UDP image service off.
    #[arg(long)]
    no_img: bool,
    /// Turn the UDP message service off.
    #[arg(long)]
    no_msg: bool,
    /// Turn the TCP stream service off.
    #[arg(long)]
    no_tcp: bool,
    /// Largest frame a header may announce, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_frame_bytes: u64,
    /// Drop a partial UDP frame when its datagrams stop for this long.
    #[arg(long, default_value_t = 1000)]
    frame_timeout_ms: u64,
    /// Memory all partial UDP frames together may hold; past it the oldest is dropped.
    #[arg(long, default_value_t = 64 << 20)]
    max_partial_bytes: usize,
    /// Socket receive buffer to ask the kernel for on the image port, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    recv_buffer_bytes: usize,
    /// Append every valid message to FILE as a JSON line {"ts", "from", "msg"}.
    #[arg(long, value_name = "FILE")]
    msg_log: Option<PathBuf>,
    /// Save every intact frame's JPEG bytes into DIR ({transport}-{ip}-{port}-{seq}.jpg).
    #[arg(long, value_name = "DIR")]
    save_dir: Option<PathBuf>,
    /// With --save-dir, keep only every Nth frame of each source (1, N+1, 2N+1, ...).
    #[arg(long, default_value_t = 1, value_name = "N")]
    save_every: u64,
    /// Show each source in an OpenCV window (needs a display; ignored with a warning without one).
    #[arg(long)]
    display: bool,
    /// TCP connections served at once; further ones are refused.
    #[arg(long, default_value_t = 16)]
    tcp_max_conns: usize,
    /// TCP connections from one IP address at most; further ones from it are closed at
    /// once (a connection that has delivered no frame yet also gives way to a newcomer
    /// when all --tcp-max-conns are open).
    #[arg(long, default_value_t = 4, value_name = "N")]
    tcp_max_conns_per_addr: usize,
    /// Close a TCP connection that sends nothing for this long.
    #[arg(long, default_value_t = 30_000)]
    tcp_idle_timeout_ms: u64,
    /// How often per-source rates are logged.
    #[arg(long, default_value_t = 5000)]
    stats_interval_ms: u64,
    /// Serve a web view on ADDR (e.g. 127.0.0.1:8080; port 0 lets the OS choose): a live
    /// page at /, MJPEG at /stream/<source>, /snapshot/<source>.jpg, /state (JSON) and
    /// /metrics (Prometheus). Off by default.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// MJPEG viewers served at once with --http; more get a 503.
    #[arg(long, default_value_t = 16, value_name = "N")]
    http_max_viewers: usize,
    /// HTTP connections from one IP address at most (a browser opens up to 6); more get a
    /// 503. A connection that has not sent a whole request head also gives way to a newcomer
    /// when all --http-max-viewers + 32 places are taken.
    #[arg(long, default_value_t = 8, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_conns_per_addr: usize,
    // -- bounded disk and message budget (issue 11) --
    /// With --msg-log, start a new file past this many bytes (FILE -> FILE.1 -> ... ->
    /// FILE.N, the oldest dropped); at least 131072.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    msg_log_max_bytes: u64,
    /// With --msg-log, rotated files kept (FILE.1 .. FILE.N); 0 starts FILE again.
    #[arg(long, default_value_t = 4, value_name = "N")]
    msg_log_keep: u32,
    /// Append one JSON line per delivered frame (framed, seed UDP and seed TCP) to FILE:
    /// {"arrival_us", "source", "name", "frame", "bytes", "capture_us", "latency_ms",
    /// "clock", "quality"}. Written by its own thread (a full queue drops lines, counted,
    /// never slowing the receivers), rotated as --msg-log is.
    #[arg(long, value_name = "FILE")]
    frame_log: Option<PathBuf>,
    /// With --frame-log, start a new file past this many bytes (FILE -> FILE.1 -> ...);
    /// at least 131072.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    frame_log_max_bytes: u64,
    /// With --frame-log, rotated files kept (FILE.1 .. FILE.N); 0 starts FILE again.
    #[arg(long, default_value_t = 4, value_name = "N")]
    frame_log_keep: u32,
    /// With --save-dir, the most bytes of frames the folder holds; the oldest are deleted
    /// first (frames already there at start count).
    #[arg(long, default_value_t = 1 << 30, value_name = "BYTES")]
    save_max_bytes: u64,
    /// Message bytes per second (each message counts its length + 64) shared equally by
    /// the sending addresses; past its share a message is not recorded.
    #[arg(long, default_value_t = 8 << 20, value_name = "BYTES")]
    msg_budget_bytes_per_s: u64,
    /// Message bytes one address may send at once beyond its share (at least one largest
    /// datagram).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    msg_budget_burst_bytes: u64,
    // -- end of issue 11 flags --
    /// The hub's private key (written by `udphub-keygen FILE`); requires --authorized-keys.
    #[arg(long, value_name = "FILE", requires = "authorized_keys")]
    key: Option<PathBuf>,
    /// Require keys: one device per line, `<public key> <name>` (`#` comments); the name
    /// the file gives a key is the device's name. Reloaded on SIGHUP and within a second of
    /// a change. Unauthenticated datagrams and connections (plain framed, every seed format,
    /// the TCP stream, messages) are then refused silently, except from --allow-plain.
    #[arg(long, value_name = "FILE", requires = "key")]
    authorized_keys: Option<PathBuf>,
    /// With --authorized-keys, address ranges (CIDR, comma-separated, e.g.
    /// 192.168.1.0/24,10.0.0.7) whose unauthenticated senders are still taken, for legacy
    /// senders on a trusted subnet.
    #[arg(
        long,
        value_name = "CIDR,...",
        value_delimiter = ',',
        requires = "authorized_keys"
    )]
    allow_plain: Vec<Cidr>,
    /// Publish to this MQTT broker: `mqtt://[user[:password]@]host[:port]` (port 1883 by
    /// default). Telemetry, frame events, a retained JPEG and state per source, and this
    /// hub's status (see the README's MQTT section). A broker that is away is retried; the
    /// hub never waits for it.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// With --mqtt, read the password from this file (its first line) rather than the URL.
    #[arg(long, value_name = "FILE")]
    mqtt_password_file: Option<PathBuf>,
    /// With --mqtt, the first topic level(s).
    #[arg(long, default_value = "udphub", value_name = "PREFIX")]
    mqtt_prefix: String,
    /// With --mqtt, this hub's id in topics and payloads (default: the host name).
    #[arg(long, value_name = "ID")]
    mqtt_id: Option<String>,
    /// With --mqtt, retained JPEGs per source per second at most (0: none).
    #[arg(long, default_value_t = 1.0, value_name = "FPS")]
    mqtt_jpeg_fps: f64,
    /// A command (POST /api/sources/<source>/command, or MQTT PREFIX/<source>/command) not
    /// taken by its device within this many seconds expires, and the result says so.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS",
          value_parser = parse_ttl)]
    command_ttl: f64,
    /// Print the exit summary as one JSON object on stdout (for scripts, e.g. the loss
    /// sweep) instead of the text: per service its totals and each source's counts.
    #[arg(long)]
    json_summary: bool,
}

impl Args {
    fn config(&self) -> HubConfig {
        let enabled = |off: bool, port: u16| (!off).then_some(port);
        HubConfig {
            bind: self.bind,
            img_port: enabled(self.no_img, self.img_port),
            msg_port: enabled(self.no_msg, self.msg_port),
            tcp_port: enabled(self.no_tcp, self.tcp_port),
            max_frame_bytes: self.max_frame_bytes,
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
            max_partial_bytes: self.max_partial_bytes,
            recv_buffer_bytes: self.recv_buffer_bytes,
            msg_log: self.msg_log.clone(),
            save_dir: self.save_dir.clone(),
            save_every: self.save_every,
            display: self.display,
            tcp_max_conns: self.tcp_max_conns,
            tcp_max_conns_per_addr: self.tcp_max_conns_per_addr,
            tcp_idle_timeout: Duration::from_millis(self.tcp_idle_timeout_ms.max(1)),
            stats_interval: Duration::from_millis(self.stats_interval_ms.max(100)),
            http: self.http,
            http_max_viewers: self.http_max_viewers,
            http_max_conns_per_addr: self.http_max_conns_per_addr,
            msg_log_max_bytes: self.msg_log_max_bytes,
            msg_log_keep: self.msg_log_keep,
            frame_log: self.frame_log.clone(),
            frame_log_max_bytes: self.frame_log_max_bytes,
            frame_log_keep: self.frame_log_keep,
            save_max_bytes: self.save_max_bytes,
            msg_budget_bytes_per_s: self.msg_budget_bytes_per_s,
            msg_budget_burst_bytes: self.msg_budget_burst_bytes,
            security: match (&self.key, &self.authorized_keys) {
                (Some(key), Some(authorized_keys)) => Some(SecuritySettings {
                    key: key.clone(),
                    authorized_keys: authorized_keys.clone(),
                    allow_plain: self.allow_plain.clone(),
                }),
                _ => None,
            },
            command_ttl: Duration::from_secs_f64(self.command_ttl),
            ..HubConfig::default()
        }
    }
}

/// `--command-ttl`: seconds, more than 0 and at most a day.
fn parse_ttl(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 86_400.0 => Ok(t),
        _ => Err(format!("{s:?}: seconds, more than 0 and at most 86400")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handler() {
        eprintln!("hub: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    if args.authorized_keys.is_some() {
        if let Err(e) = udphub::hub::reload::install_sighup() {
            eprintln!("hub: cannot install the SIGHUP handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mqtt = match mqtt_config(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = udphub::Hub::builder()
        .config(args.config())
        .keep_frames(mqtt.is_some())
        .keep_messages(mqtt.is_some())
        .shutdown_flag(shutdown.clone())
        .start();
    let hub = match started {
        Ok(h) => h,
        Err(e) => {
            eprintln!("hub: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let b = hub.running().bound;
        for (name, proto, addr) in [
            ("img", "udp", b.img),
            ("msg", "udp", b.msg),
            ("tcp", "tcp", b.tcp),
        ] {
            if let Some(addr) = addr {
                let _ = writeln!(out, "hub: {name} listening on {proto} {addr}");
            }
        }
        if let Some(addr) = b.http {
            let _ = writeln!(out, "hub: http listening on http://{addr}");
        }
        let _ = writeln!(out, "hub: ready");
        let _ = out.flush();
    }
    let bridge = match mqtt.map(|m| start_bridge(m, &hub, &shutdown)).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("hub: mqtt: {e}");
            hub.shutdown();
            return ExitCode::FAILURE;
        }
    };
    // the bridge ends with the hub (same flag) and flushes first, so the summary has its
    // final counts
    if let Some(bridge) = bridge {
        stop_bridge(bridge);
    }
    let report = hub.wait();
    if args.json_summary {
        match serde_json::to_string(&report.summary) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("hub: cannot write the JSON summary: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.summary.text());
    }
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}

#[cfg(feature = "mqtt")]
type MqttSettings = udphub::mqtt::bridge::MqttConfig;
#[cfg(not(feature = "mqtt"))]
type MqttSettings = std::convert::Infallible;

/// The `--mqtt*` flags, checked; `None` without `--mqtt`.
fn mqtt_config(args: &Args) -> Result<Option<MqttSettings>, String> {
    let Some(url) = &args.mqtt else {
        return Ok(None);
    };
    #[cfg(not(feature = "mqtt"))]
    {
        let _ = url;
        Err("this hub was built without the `mqtt` cargo feature: --mqtt is not available".into())
    }
    #[cfg(feature = "mqtt")]
    {
        use udphub::mqtt::{self, publisher::PublisherConfig, BrokerUrl};
        let mut broker = BrokerUrl::parse(url).map_err(|e| format!("--mqtt {e}"))?;
        if let Some(file) = &args.mqtt_password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--mqtt-password-file {}: {e}", file.display()))?;
            broker.password = Some(text.lines().next().unwrap_or("").to_string());
        }
        if !args.mqtt_prefix.split('/').all(mqtt::is_topic_level) {
            return Err(format!(
                "--mqtt-prefix {:?}: topic levels separated by '/', none empty, no '+' or '#'",
                args.mqtt_prefix
            ));
        }
        let hub_id = args.mqtt_id.clone().unwrap_or_else(mqtt::host_name);
        if !mqtt::is_topic_level(&hub_id) {
            return Err(format!(
                "--mqtt-id {hub_id:?}: one topic level: not empty, no '/', '+' or '#'"
            ));
        }
        if !(args.mqtt_jpeg_fps.is_finite() && args.mqtt_jpeg_fps >= 0.0) {
            return Err(format!(
                "--mqtt-jpeg-fps {}: must be 0 or more",
                args.mqtt_jpeg_fps
            ));
        }
        Ok(Some(mqtt::bridge::MqttConfig {
            broker,
            publisher: PublisherConfig {
                prefix: args.mqtt_prefix.clone(),
                hub_id,
                jpeg_fps: args.mqtt_jpeg_fps,
            },
        }))
    }
}

#[cfg(feature = "mqtt")]
type RunningBridge = udphub::mqtt::bridge::Bridge;
#[cfg(not(feature = "mqtt"))]
type RunningBridge = std::convert::Infallible;

#[cfg(feature = "mqtt")]
fn start_bridge(
    config: MqttSettings,
    hub: &udphub::Hub,
    shutdown: &Shutdown,
) -> std::io::Result<RunningBridge> {
    let broker = config.broker.clone();
    println!(
        "hub: mqtt publishing to {broker} under {}/",
        config.publisher.prefix
    );
    let bridge = udphub::mqtt::bridge::Bridge::spawn(
        config,
        hub.frames(),
        hub.messages(),
        hub.running().commands.clone(),
        shutdown.clone(),
    )?;
    hub.running()
        .stats
        .attach_mqtt(broker.to_string(), bridge.counters());
    Ok(bridge)
}

#[cfg(not(feature = "mqtt"))]
fn start_bridge(
    config: MqttSettings,
    _hub: &udphub::Hub,
    _shutdown: &Shutdown,
) -> std::io::Result<RunningBridge> {
    match config {}
}

/// Wait (after the shutdown) for the bridge to flush and stop.
#[cfg(feature = "mqtt")]
fn stop_bridge(bridge: RunningBridge) {
    bridge.join();
}

#[cfg(not(feature = "mqtt"))]
fn stop_bridge(bridge: RunningBridge) {
    match bridge {}
}
