//! The UDP message service: one JSON value per datagram, answered `get the msg`.
//!
//! Which reply a datagram gets, and that a message is acknowledged only once it is
//! recorded, is decided by the socket-free [`crate::proto::msg_receiver`]; this loop moves
//! datagrams in and replies out, and does the recording. With `--msg-log`, each valid
//! message is appended to the log as one JSON line *before* the reply is sent (an
//! unbuffered write, so it is in the kernel once `write` returns): a message that was
//! answered is never lost, even on Ctrl-C. Invalid datagrams get a short error reply and a
//! log line with the detail.
//!
//! The loop waits on nothing but the socket: per message it parses, counts (atomics), hands
//! the text to the HTTP view under a lock it only tries to take (see
//! [`Stats::try_set_last_message`]), and replies; with `--msg-log`, one `write` of the line.
//!
//! With keys (`--authorized-keys`), secure datagrams go through the port's
//! [`SecureGate`] first: a handshake is answered, an authenticated framed message is
//! recorded under the name the key file gives the device, and every reply to a device with
//! a session is sealed in it. Unauthenticated messages are taken only from `--allow-plain`.
//!
//! Bounded (issue 11): the receiver charges each sender's share of the message budget
//! before parsing, and an over-budget datagram is neither parsed nor logged; the log
//! rotates by size ([`super::msg_log`]). When the log cannot be written (disk full), the
//! message is answered as not recorded, the outage is logged once, and the next message
//! tries again: recording resumes by itself once there is room.
//!
//! Commands down (issue 15): each time round, the loop takes the commands waiting in its
//! [`CommandPort`] (never waiting for one) into the receiver, which puts them in replies
//! ([`crate::proto::commands`]); expiries are the receiver's `poll_timeout`, and every
//! result goes back through the port (to the MQTT bridge) and into the log.

use super::command_inbox::CommandPort;
use super::msg_log::{MsgLog, WriteOutage};
use super::net::{is_timeout, LogLimiter};
use super::reload;
use super::source::Service;
use super::stats::{SourceCache, Stats};
use crate::proto::msg_receiver::{MsgReceiver, Received};
use crate::proto::secure_gate::{Opened, Refusal, SecureGate, SecurityConfig};
use crate::secure::authorized::KeyFile;
use crate::shutdown::{wait_until, ReadTimeout, Shutdown};
use crate::wire::MAX_UDP_PAYLOAD;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Run the message service on `socket` until shutdown, with `receiver`'s budget.
/// Every recorded message is also offered to each of `taps` (a program embedding the hub,
/// the HTTP view's plots);
/// with a command port, commands are taken from it and their results given back.
pub fn run(
    socket: UdpSocket,
    mut receiver: MsgReceiver,
    security: Option<(SecurityConfig, KeyFile)>,
    mut log_file: Option<MsgLog>,
    (taps, commands): (Vec<Arc<super::MessageTap>>, Option<CommandPort>),
    stats: Arc<Stats>,
    shutdown: Shutdown,
) {
    let (mut gate, mut keys) = match security {
        Some((security, file)) => (
            Some(SecureGate::new(security)),
            Some(reload::Watcher::new(file, "msg", Instant::now())),
        ),
        None => (None, None),
    };
    let mut outage = WriteOutage::default();
    let mut over_budget_logs = LogLimiter::new(1);
    let mut read_timeout = ReadTimeout::new();
    let mut sources = SourceCache::new(Service::Msg, stats.clone());
    let mut limiter = LogLimiter::new(10);
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    // The newest message when the HTTP view was reading the previous one at that moment
    // (rare): offered again at the next message or poll tick, never waited for.
    let mut unpublished: Option<(SocketAddr, String, f64)> = None;
    while !shutdown.is_triggered() {
        take_commands(&mut receiver, commands.as_ref(), &stats, Instant::now());
        let wait = wait_until(receiver.poll_timeout(), Instant::now());
        if let Err(e) = read_timeout.set(wait, |t| socket.set_read_timeout(t)) {
            log::error!("msg: cannot set the socket timeout: {e}");
            return;
        }
        if let (Some(keys), Some(gate)) = (&mut keys, &mut gate) {
            keys.poll(Instant::now(), |file| gate.set_keys(file.keys().clone()));
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if is_timeout(&e) => {
                if let Some((from, text, at_s)) = &unpublished {
                    if stats.try_set_last_message(*from, text, *at_s) {
                        unpublished = None;
                    }
                }
                continue;
            }
            Err(e) => {
                if let Some(suppressed) = limiter.allow(Instant::now()) {
                    log::warn!("msg: receive error: {e}{suppressed}");
                }
                continue;
            }
        };
        // a command submitted while the loop waited rides the reply to this very message
        take_commands(&mut receiver, commands.as_ref(), &stats, Instant::now());
        // a secure datagram: answered (handshake), refused, or opened to its plaintext
        let mut opened = None;
        if let Some(gate) = gate.as_mut().filter(|_| SecureGate::is_secure(&buf[..n])) {
            match gate.open(from, &buf[..n], Instant::now()) {
                Opened::Reply(reply) => {
                    if let Err(e) = socket.send_to(&reply, from) {
                        log::debug!("msg: cannot answer the handshake of {from}: {e}");
                    }
                    continue;
                }
                Opened::Refused(why) => {
                    sources.get(from).rejected.fetch_add(1, Relaxed);
                    sources.count_refused(why.as_str());
                    log::debug!("msg: refused a datagram from {from}: {}", why.as_str());
                    continue;
                }
                Opened::Plaintext { name, plaintext } => opened = Some((name, plaintext)),
            }
        }
        let received = match &opened {
            Some((name, plaintext)) => {
                receiver.handle_authenticated(from, plaintext, name, Instant::now())
            }
            None => receiver.handle_datagram(from, &buf[..n], Instant::now()),
        };
        match received {
            Received::Message { text, name } => {
                let authenticated = opened.is_some();
                let shown = name.and_then(|n| sources.shown_name(from, n, authenticated));
                let recorded = match &mut log_file {
                    None => Ok(()),
                    Some(log_file) => log_file.append(from, shown.as_deref(), text),
                };
                match &recorded {
                    Err(e) => outage.failed("msg: --msg-log", e, Instant::now()),
                    Ok(()) => outage.succeeded("msg: --msg-log"),
                }
                receiver.handle_recorded(recorded.is_ok());
                if recorded.is_ok() {
                    sources.record_item(from, n);
                    for tap in &taps {
                        tap.offer(from, shown.clone(), text);
                    }
                    let at_s = stats.uptime().as_secs_f64();
                    unpublished = (!stats.try_set_last_message(from, text, at_s))
                        .then(|| (from, text.to_owned(), at_s));
                    log::debug!("msg: from {from}: {text}");
                }
            }
            Received::Duplicate { name, seq } => {
                log::debug!(
                    "msg: {name} ({from}) sent message {seq} again: answered, not recorded again"
                );
            }
            Received::BadFramed(e) => {
                sources.get(from).rejected.fetch_add(1, Relaxed);
                if let Some(suppressed) = limiter.allow(Instant::now()) {
                    log::warn!("msg: {n}-byte datagram from {from}: {e}{suppressed}");
                }
            }
            Received::Refused => {
                sources.get(from).rejected.fetch_add(1, Relaxed);
                sources.count_refused(Refusal::Plain.as_str());
                log::debug!("msg: refused {n} bytes from {from}: not in --allow-plain");
            }
            Received::OverBudget => {
                sources.get(from).rejected.fetch_add(1, Relaxed);
                if let Some(suppressed) = over_budget_logs.allow(Instant::now()) {
                    log::warn!(
                        "msg: {from} is past its share of the message budget: \
                         {n}-byte message not recorded{suppressed}"
                    );
                }
            }
            Received::Invalid(e) => {
                sources.get(from).corrupt.fetch_add(1, Relaxed);
                if let Some(suppressed) = limiter.allow(Instant::now()) {
                    log::warn!("msg: {n}-byte datagram from {from} is {e}{suppressed}");
                }
            }
        }
        while let Some(t) = receiver.poll_transmit() {
            let Some(t) = (match &mut gate {
                Some(gate) => gate.seal_reply(t),
                None => Some(t),
            }) else {
                continue;
            };
            if let Err(e) = socket.send_to(&t.payload, t.to) {
                log::debug!("msg: cannot reply to {}: {e}", t.to);
            }
        }
    }
    let counts = receiver.commands().counts();
    if counts.submitted > 0 {
        log::info!(
            "msg: commands: {} submitted, {} delivered, {} expired, {} rejected, {} waiting",
            counts.submitted,
            counts.delivered,
            counts.expired,
            counts.rejected,
            receiver.commands().waiting()
        );
    }
    if let Some(log_file) = &log_file {
        if let Err(e) = log_file.sync() {
            log::error!("msg: cannot flush the message log: {e}");
        }
    }
    log::debug!("msg: stopped");
}

/// Take the commands submitted since last time, expire what is due at `now`, and pass the
/// results on (and log them). Never waits.
fn take_commands(
    receiver: &mut MsgReceiver,
    port: Option<&CommandPort>,
    stats: &Stats,
    now: Instant,
) {
    let Some(port) = port else { return };
    let mut changed = false;
    while let Ok(c) = port.rx.try_recv() {
        receiver.commands().submit(c.id, &c.source, &c.json, now);
        changed = true;
    }
    if receiver.poll_timeout().is_some_and(|t| t <= now) {
        receiver.handle_timeout(now);
    }
    while let Some(result) = receiver.poll_command_event() {
        changed = true;
        log::info!(
            "msg: command {} for {}: {:?}{}",
            result.id,
            result.source,
            result.status,
            result
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        port.result(result);
    }
    if changed {
        let waiting = receiver.commands().waiting();
        stats.set_commands(receiver.commands().counts(), waiting);
    }
}
