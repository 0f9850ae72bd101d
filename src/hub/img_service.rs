//! The UDP image service: a thin loop that moves datagrams between the socket and the
//! image receiver ([`crate::proto::image_receiver`]: the seed formats and the framed one)
//! and hands intact frames on.
//!
//! The loop waits on nothing but the socket, until the receiver's next timer
//! ([`ImageReceiver::poll_timeout`]: a stalled frame to expire) or one poll interval (to
//! notice shutdown), whichever is first; all slow work happens on the consumers' threads.
//!
//! With keys, it also reloads `--authorized-keys` when asked (SIGHUP) or when the file
//! changed (looked at every [`reload::CHECK_EVERY`]): a removed key's sessions end at once.

use super::net::{is_timeout, LogLimiter};
use super::reload;
use super::sinks::{Arrival, FrameSinks};
use super::source::{Service, SourceId};
use super::stats::{SourceCache, Stats};
use crate::client::stats::Samples;
use crate::proto::framed_receiver::WallClock;
use crate::proto::image_receiver::{Delivered, ImageConfig, ImageEvent, ImageReceiver, Outcome};
use crate::proto::secure_gate::SecurityConfig;
use crate::secure::authorized::KeyFile;
use crate::shutdown::{wait_until, ReadTimeout, Shutdown};
use crate::wire::MAX_UDP_PAYLOAD;
use std::net::UdpSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Run the image service on `socket` until shutdown.
pub fn run(
    socket: UdpSocket,
    config: ImageConfig,
    security: Option<(SecurityConfig, KeyFile)>,
    stats: Arc<Stats>,
    sinks: FrameSinks,
    shutdown: Shutdown,
) {
    let (mut reassembler, mut keys) = match security {
        Some((security, key_file)) => (
            ImageReceiver::with_security(config, security),
            Some(reload::Watcher::new(key_file, "img", Instant::now())),
        ),
        None => (ImageReceiver::new(config), None),
    };
    let mut read_timeout = ReadTimeout::new();
    let mut sources = SourceCache::new(Service::Img, Arc::clone(&stats));
    let mut limiter = LogLimiter::new(10);
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    let mut ack_delay = Samples::new();
    let mut last_rebuilt = Default::default();
    // the hub's wall clock for seed frames' arrival (framed frames carry the receiver's)
    let wall = WallClock::system();
    while !shutdown.is_triggered() {
        let wake = reassembler.poll_timeout();
        let wait = wait_until(wake, Instant::now());
        if let Err(e) = read_timeout.set(wait, |t| socket.set_read_timeout(t)) {
            log::error!("img: cannot set the socket timeout: {e}");
            return;
        }
        let received = socket.recv_from(&mut buf);
        let now = Instant::now();
        match received {
            Ok((n, from)) => reassembler.handle_datagram(from, &buf[..n], now),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                if let Some(suppressed) = limiter.allow(now) {
                    log::warn!("img: receive error: {e}{suppressed}");
                }
            }
        }
        if wake.is_some_and(|w| now >= w) {
            reassembler.handle_timeout(now);
        }
        if let Some(keys) = &mut keys {
            keys.poll(now, |file| reassembler.set_keys(file.keys().clone()));
        }
        // count and hand on first, then ack: once a sender has its ack, the frame is in
        // the statistics and in every consumer (e.g. the HTTP view's /state and /snapshot)
        let mut delivered = false;
        while let Some(event) = reassembler.poll_event() {
            delivered |= event.outcome() == Outcome::Frame;
            on_event(
                event,
                &mut sources,
                &sinks,
                &mut limiter,
                (now, wall.at(now)),
            );
        }
        if delivered {
            let rebuilt = reassembler.rebuilt();
            if rebuilt != last_rebuilt {
                // for /state and /metrics while the hub runs (before the ack, as the rest)
                stats.set_rebuilt(Service::Img, rebuilt);
                last_rebuilt = rebuilt;
            }
        }
        while let Some(t) = reassembler.poll_transmit() {
            if let Err(e) = socket.send_to(&t.payload, t.to) {
                log::debug!("img: cannot ack {}: {e}", t.to);
            }
        }
        if delivered {
            // the datagram that completed a frame, to its ack (and any other reply) sent
            ack_delay.record(now.elapsed());
        }
    }
    stats.set_ack_delay(Service::Img, &ack_delay);
    stats.set_rebuilt(Service::Img, reassembler.rebuilt());
    log::debug!("img: stopped");
}

fn on_event(
    event: ImageEvent,
    sources: &mut SourceCache,
    sinks: &FrameSinks,
    limiter: &mut LogLimiter,
    (now, wall_us): (Instant, u64),
) {
    let from = event.from();
    let counter = match event.outcome() {
        Outcome::Frame => {
            let Some(Delivered {
                from,
                name,
                authenticated,
                jpeg,
                frame,
                timing,
            }) = event.into_frame(wall_us)
            else {
                return;
            };
            let shown = name.and_then(|n| sources.shown_name(from, n.as_str(), authenticated));
            let (len, seq) = (jpeg.len(), sources.record_frame(from, jpeg.len(), &timing));
            let arrival = Arrival {
                frame: frame.map_or(seq, u64::from),
                timing,
            };
            sinks.deliver(
                SourceId {
                    service: Service::Img,
                    addr: from,
                },
                shown,
                seq,
                arrival,
                jpeg,
            );
            log::debug!("img: frame {seq} of {len} bytes from {from}");
            return;
        }
        Outcome::Corrupt => &sources.get(from).corrupt,
        Outcome::Dropped => &sources.get(from).dropped,
        Outcome::Rejected => {
            if let ImageEvent::Refused { reason, .. } = &event {
                sources.count_refused(reason.as_str());
            }
            &sources.get(from).rejected
        }
    };
    counter.fetch_add(1, Relaxed);
    if event.is_noise() {
        log::debug!("img: {event}");
    } else if let Some(suppressed) = limiter.allow(now) {
        log::warn!("img: {event}{suppressed}");
    }
}
