//! The telemetry client's run: send one JSON message per datagram, each answered (or not)
//! before the next, with status lines every second and a summary at the end.
//!
//! Messages come from `--data` (the same text every `--interval-ms`, like the seed's
//! `udp_client_2.py`) or from stdin, one per line: invalid lines are reported on stderr
//! with their line number and skipped, blank lines are skipped, and the end of stdin ends
//! the run. Stdin is read on a thread of its own so Ctrl-C is noticed while no line comes;
//! that thread is left blocked in its read when the run ends (the process exits anyway).
//!
//! `--interval-ms` is the least time between two sends (the seed sleeps 10 ms before each
//! reply); a reply that takes longer simply delays the next send.
//!
//! Commands from the hub (framed only, issue 15) are printed as one JSON line each on
//! stdout, `{"command": <json>, "id": N}`, or with `--on-command PROGRAM` handed to that
//! program on its stdin, one at a time between two sends ([`run_command`]: its output goes
//! to stderr, it is killed past its timeout, and a failure is logged, never fatal).

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::error::ClientError;
use super::msg_sender::{
    check_line, check_message, Line, MsgOutcome, MsgProtocol, MsgSender, SEED_MSG_LIMIT,
};
use super::stats::{
    msg_status_line, msg_summary, spawn_status_printer, MsgStats, RateMeter, SharedMsgStats,
};
use crate::hub::net::LogLimiter;
use crate::shutdown::{Shutdown, POLL_INTERVAL};

/// Everything `msg-client` can be told (apart from where messages come from).
#[derive(Clone, Debug)]
pub struct MsgClientConfig {
    pub hub: SocketAddr,
    /// Least time between two sends.
    pub interval: Duration,
    /// Stop after sending this many messages.
    pub count: Option<u64>,
    /// Longest wait for each reply.
    pub reply_timeout: Duration,
    /// How often to print a status line on stderr (`None`: never).
    pub status_interval: Option<Duration>,
    /// The message format (framed, with a name, or the seed's).
    pub protocol: MsgProtocol,
    /// Run this program for each command (its JSON on stdin) instead of printing it, and
    /// kill it past the timeout.
    pub on_command: Option<(std::path::PathBuf, Duration)>,
}

/// Where the messages come from.
pub enum Messages {
    /// The same JSON text, again and again (`--data`).
    Repeat(String),
    /// One message per line (`--stdin`).
    Lines(Box<dyn BufRead + Send>),
}

/// What a run did.
#[derive(Debug)]
pub struct MsgReport {
    /// The summary text (for stdout).
    pub summary: String,
    pub stats: MsgStats,
    /// How long the run took, the time the rates are over.
    pub elapsed: Duration,
    /// The error that ended the run early, if any.
    pub error: Option<ClientError>,
}

impl MsgReport {
    /// A run succeeds when nothing failed and at least one message was answered.
    pub fn success(&self) -> bool {
        self.error.is_none() && self.stats.counts.answered > 0
    }
}

enum LineEvent {
    /// A line (1-based number, bytes with their line ending).
    Line(u64, Vec<u8>),
    End(Option<io::Error>),
}

/// Read lines on a thread of its own; at most a few lines are read ahead.
fn spawn_line_reader(mut reader: Box<dyn BufRead + Send>) -> io::Result<Receiver<LineEvent>> {
    let (tx, rx) = mpsc::sync_channel(16);
    thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut number = 0u64;
        loop {
            let mut line = Vec::new();
            let event = match reader.read_until(b'\n', &mut line) {
                Ok(0) => LineEvent::End(None),
                Ok(_) => {
                    number += 1;
                    LineEvent::Line(number, line)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => LineEvent::End(Some(e)),
            };
            let end = matches!(event, LineEvent::End(_));
            if tx.send(event).is_err() || end {
                return;
            }
        }
    })?;
    Ok(rx)
}

fn lock(stats: &SharedMsgStats) -> MutexGuard<'_, MsgStats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

/// The messages of a run, once checked and started.
enum Input {
    Repeat(String),
    Lines(Receiver<LineEvent>),
}

/// What the input has next.
enum Next<'a> {
    /// `--data` is lent, not copied per message.
    Message(Cow<'a, str>),
    /// Nothing yet (look at the shutdown flag and ask again).
    Wait,
    End(Option<ClientError>),
}

/// Run the telemetry client until it is done or `shutdown` is triggered. An unusable
/// `--data` or a socket that cannot be opened is an `Err` before anything is sent.
pub fn run(
    config: &MsgClientConfig,
    messages: Messages,
    shutdown: &Shutdown,
) -> Result<MsgReport, ClientError> {
    let (what, input) = match messages {
        Messages::Repeat(text) => {
            if let Err(source) = check_message(text.as_bytes()) {
                return Err(ClientError::Data { text, source });
            }
            if text.len() > SEED_MSG_LIMIT && matches!(config.protocol, MsgProtocol::Seed) {
                eprintln!(
                    "msg-client: note: --data is {} bytes; the seed server reads only \
                     {SEED_MSG_LIMIT} bytes of a message",
                    text.len()
                );
            }
            (
                format!("--data {text} -> {}", config.hub),
                Input::Repeat(text),
            )
        }
        Messages::Lines(reader) => (
            format!("stdin lines -> {}", config.hub),
            Input::Lines(
                spawn_line_reader(reader).map_err(|source| ClientError::Spawn {
                    what: "stdin reader",
                    source,
                })?,
            ),
        ),
    };
    let mut sender =
        MsgSender::open_with(config.hub, config.reply_timeout, config.protocol.clone()).map_err(
            |source| ClientError::OpenSocket {
                hub: config.hub,
                source,
            },
        )?;
    log::info!("sending {what}");

    let stats: SharedMsgStats = Arc::new(Mutex::new(MsgStats::default()));
    let stop = Shutdown::new();
    let status = config.status_interval.and_then(|interval| {
        let (stats, stop) = (stats.clone(), stop.clone());
        let mut meter = RateMeter::new(Instant::now());
        spawn_status_printer(interval, stop, move || {
            let s = lock(&stats);
            let rate = meter.rate(Instant::now(), s.counts.sent);
            msg_status_line(&s.counts, rate, s.rtt.percentile(50.0))
        })
        .map_err(|e| log::warn!("no status lines: {e}"))
        .ok()
    });

    let started = Instant::now();
    let mut rejections = LogLimiter::new(10);
    let mut warned_long = false;
    let mut next_send = started;
    let mut sent = 0u64;
    let mut error = None;
    loop {
        if shutdown.is_triggered() || config.count.is_some_and(|n| sent >= n) {
            break;
        }
        let next = match &input {
            Input::Repeat(text) => Next::Message(Cow::Borrowed(text)),
            Input::Lines(rx) => next_line(rx, &stats),
        };
        let text = match next {
            Next::Message(text) => text,
            Next::Wait => continue,
            Next::End(e) => {
                error = e;
                break;
            }
        };
        if text.len() > SEED_MSG_LIMIT
            && matches!(input, Input::Lines(_))
            && matches!(config.protocol, MsgProtocol::Seed)
            && !warned_long
        {
            warned_long = true;
            eprintln!(
                "msg-client: note: a message of {} bytes; the seed server reads only \
                 {SEED_MSG_LIMIT} bytes of a message",
                text.len()
            );
        }
        let now = Instant::now();
        if now < next_send && shutdown.wait_timeout(next_send - now) {
            break;
        }
        next_send = Instant::now() + config.interval;
        let outcome = match sender.send(&text) {
            Ok(outcome) => outcome,
            Err(e) => {
                error = Some(ClientError::Socket(e));
                break;
            }
        };
        sent += 1;
        let mut s = lock(&stats);
        s.counts.sent = sent;
        match outcome {
            MsgOutcome::Answered { rtt } => {
                s.counts.answered += 1;
                s.rtt.record(rtt);
            }
            MsgOutcome::Rejected { reply, rtt } => {
                s.counts.rejected += 1;
                s.rtt.record(rtt);
                if let Some(suppressed) = rejections.allow(Instant::now()) {
                    eprintln!(
                        "msg-client: message {sent} rejected by the hub: {reply}{suppressed}"
                    );
                }
            }
            MsgOutcome::NoReply => s.counts.lost += 1,
            MsgOutcome::SendFailed(e) => {
                s.counts.lost += 1;
                log::warn!("message {sent}: sending failed: {e}");
            }
        }
        drop(s);
        while let Some(command) = sender.take_command() {
            match &config.on_command {
                None => print_command(&command),
                Some((program, timeout)) => {
                    if let Err(e) = run_command(program, *timeout, &command) {
                        log::warn!("command {}: {}: {e}", command.id, program.display());
                    }
                }
            }
        }
        let mut s = lock(&stats);
        s.counts.late_replies = sender.late_replies();
        s.counts.resent = sender.resent();
        s.counts.ignored = sender.ignored();
    }
    stop.trigger();
    if let Some(status) = status {
        let _ = status.join();
    }
    let elapsed = started.elapsed();
    let stats = lock(&stats).clone();
    Ok(MsgReport {
        summary: msg_summary(&what, &stats, elapsed),
        stats,
        elapsed,
        error,
    })
}

/// The next valid stdin line; invalid ones are reported and counted here.
/// `{"command": <json>, "id": N}` on stdout, flushed.
fn print_command(command: &super::msg_sender::Command) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "{{\"command\": {}, \"id\": {}}}",
        command.json, command.id
    );
    let _ = out.flush();
}

/// Run `program` with the command's JSON on its stdin and its stdout and stderr on ours
/// (stderr), waiting at most `timeout` (then it is killed). `Err`: it could not start,
/// failed, or took too long.
pub fn run_command(
    program: &std::path::Path,
    timeout: Duration,
    command: &super::msg_sender::Command,
) -> io::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let stdout: Stdio = match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => fd.into(),
        Err(_) => Stdio::null(),
    };
    let mut child = Command::new(program)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .env("UDPHUB_COMMAND_ID", command.id.to_string())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // a program that does not read its input still runs; the write error is not its fault
        let _ = stdin.write_all(command.json.as_bytes());
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return match status.success() {
                true => Ok(()),
                false => Err(io::Error::other(format!("exited with {status}"))),
            };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "still running after {timeout:?}: killed"
            )));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn next_line(rx: &Receiver<LineEvent>, stats: &SharedMsgStats) -> Next<'static> {
    match rx.recv_timeout(POLL_INTERVAL) {
        Ok(LineEvent::Line(number, bytes)) => match check_line(&bytes) {
            Line::Blank => Next::Wait,
            Line::Message(text) => Next::Message(Cow::Owned(text.to_owned())),
            Line::Invalid(why) => {
                eprintln!("msg-client: stdin line {number}: {why}; skipped");
                lock(stats).counts.invalid_lines += 1;
                Next::Wait
            }
        },
        Ok(LineEvent::End(None)) | Err(RecvTimeoutError::Disconnected) => Next::End(None),
        Ok(LineEvent::End(Some(e))) => Next::End(Some(ClientError::Stdin(e))),
        Err(RecvTimeoutError::Timeout) => Next::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::seed_msg::MSG_ACK;
    use std::net::UdpSocket;

    fn config(hub: SocketAddr) -> MsgClientConfig {
        MsgClientConfig {
            hub,
            interval: Duration::ZERO,
            count: None,
            reply_timeout: Duration::from_secs(10),
            status_interval: None,
            // the seed server these tests stand in for
            protocol: MsgProtocol::Seed,
            on_command: None,
        }
    }

    /// Answers `n` messages and returns their texts.
    fn answering_server(n: usize) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let addr = hub.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            (0..n)
                .map(|_| {
                    let (len, from) = hub.recv_from(&mut buf).unwrap();
                    hub.send_to(MSG_ACK, from).unwrap();
                    String::from_utf8(buf[..len].to_vec()).unwrap()
                })
                .collect()
        });
        (addr, handle)
    }

    #[test]
    fn repeats_data_count_times() {
        let (addr, server) = answering_server(3);
        let c = MsgClientConfig {
            count: Some(3),
            ..config(addr)
        };
        let report = run(&c, Messages::Repeat("[0,0,0,1]".into()), &Shutdown::new()).unwrap();
        assert_eq!(server.join().unwrap(), ["[0,0,0,1]"; 3]);
        assert!(report.success(), "{}", report.summary);
        assert_eq!(report.stats.counts.answered, 3);
        assert!(report
            .summary
            .contains("messages: sent 3, answered 3, rejected 0, lost 0"));
    }

    #[test]
    fn stdin_lines_skip_blank_and_invalid_ones() {
        let (addr, server) = answering_server(2);
        let input = b"[1, 2]\n\n{bad\n  \n{\"a\": \"b\"}\r\n[1,".to_vec();
        let messages = Messages::Lines(Box::new(io::Cursor::new(input)));
        let report = run(&config(addr), messages, &Shutdown::new()).unwrap();
        assert_eq!(server.join().unwrap(), ["[1, 2]", "{\"a\": \"b\"}"]);
        let c = report.stats.counts;
        assert_eq!((c.sent, c.answered, c.invalid_lines), (2, 2, 2));
        assert!(report.success());
    }

    #[test]
    fn invalid_data_is_refused_before_sending() {
        let err = run(
            &config("127.0.0.1:9".parse().unwrap()),
            Messages::Repeat("[0,0,".into()),
            &Shutdown::new(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, ClientError::Data { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("--data") && err.contains("JSON"), "{err}");
    }
}
