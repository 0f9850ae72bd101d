//! Commands down (issue 15): JSON values for a device, waiting per source name until the
//! device takes them in a reply to one of its framed messages
//! ([`crate::wire::framed_msg`]), with no socket and no clock of its own.
//!
//! The hub's HTTP and MQTT threads give each command its id ([`CommandIds`]: increasing,
//! from the hub's start time in µs, so a restarted hub's ids are still new to a device)
//! and hand it to the message service, which [`Commands::submit`]s it here. A source's
//! commands go out one at a time, oldest first: [`Commands::next_for`] is the command to
//! carry in a reply to that source, again in every reply until the device's next message
//! acks its id ([`Commands::handle_ack`]: every command up to the acked id is delivered),
//! because a reply can be lost. A command not acked within the TTL (`--command-ttl`,
//! [`DEFAULT_TTL`]) expires ([`Commands::handle_timeout`]). Every command ends in exactly
//! one [`CommandResult`] out of [`Commands::poll_event`]: delivered, expired or rejected
//! (not one JSON value, too long, or a full queue).
//!
//! Bounded: [`MAX_PER_SOURCE`] commands waiting per source, [`MAX_TOTAL`] in all (so at
//! most that many sources have a queue), each at most [`MAX_COMMAND_BYTES`]; results
//! waiting to be polled at most [`MAX_EVENTS`] (the oldest dropped).

use crate::wire::seed_msg::parse_message;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a command waits for its device by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Commands waiting for one source at most; more are rejected.
pub const MAX_PER_SOURCE: usize = 16;
/// Commands waiting for all sources together at most.
pub const MAX_TOTAL: usize = 1024;
/// The longest command (its JSON), in bytes.
pub const MAX_COMMAND_BYTES: usize = 8 * 1024;
/// Results not yet polled at most.
pub const MAX_EVENTS: usize = 4096;

/// Command ids: increasing, unique per hub run, and above the previous run's (they start
/// at the start time in µs since the Unix epoch). Shared by every thread that submits.
#[derive(Debug)]
pub struct CommandIds(AtomicU64);

impl Default for CommandIds {
    fn default() -> Self {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        CommandIds(AtomicU64::new(us.max(1)))
    }
}

impl CommandIds {
    /// Ids from `first` on (for tests).
    pub fn starting_at(first: u64) -> Self {
        CommandIds(AtomicU64::new(first.max(1)))
    }

    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// The device acked it.
    Delivered,
    /// Not acked within the TTL (no such device, or it sent nothing that could carry it).
    Expired,
    /// Never queued.
    Rejected,
}

/// The outcome of one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    pub id: u64,
    pub source: String,
    pub status: CommandStatus,
    /// Why, in words (for expired and rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    json: String,
    deadline: Instant,
    /// Carried in a reply at least once.
    sent: bool,
}

/// Counts of what became of commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommandCounts {
    pub submitted: u64,
    pub delivered: u64,
    pub expired: u64,
    pub rejected: u64,
}

/// The commands waiting, per source. See the module documentation.
#[derive(Debug)]
pub struct Commands {
    ttl: Duration,
    queues: HashMap<String, VecDeque<Pending>>,
    total: usize,
    events: VecDeque<CommandResult>,
    counts: CommandCounts,
}

impl Default for Commands {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl Commands {
    pub fn new(ttl: Duration) -> Self {
        Commands {
            ttl,
            queues: HashMap::new(),
            total: 0,
            events: VecDeque::new(),
            counts: CommandCounts::default(),
        }
    }

    /// Queue command `id` (`json`, checked here) for `source` at `now`; one that cannot be
    /// queued gets its rejected result at once.
    pub fn submit(&mut self, id: u64, source: &str, json: &str, now: Instant) {
        self.counts.submitted += 1;
        let why = if json.len() > MAX_COMMAND_BYTES {
            Some(format!("over {MAX_COMMAND_BYTES} bytes"))
        } else if let Err(e) = parse_message(json.as_bytes()) {
            Some(format!("not one JSON value: {e}"))
        } else if self.queues.get(source).map_or(0, VecDeque::len) >= MAX_PER_SOURCE {
            Some(format!(
                "{MAX_PER_SOURCE} commands wait for {source:?} already"
            ))
        } else if self.total >= MAX_TOTAL {
            Some(format!("{MAX_TOTAL} commands wait already"))
        } else {
            None
        };
        if let Some(why) = why {
            self.counts.rejected += 1;
            return self.event(id, source, CommandStatus::Rejected, Some(why));
        }
        self.queues
            .entry(source.to_owned())
            .or_default()
            .push_back(Pending {
                id,
                json: json.to_owned(),
                deadline: now + self.ttl,
                sent: false,
            });
        self.total += 1;
    }

    /// The command to carry in a reply to `source` now (the oldest waiting), if any.
    pub fn next_for(&self, source: &str) -> Option<(u64, &str)> {
        let p = self.queues.get(source)?.front()?;
        Some((p.id, p.json.as_str()))
    }

    /// The command [`Commands::next_for`] gave went out in a reply.
    pub fn mark_sent(&mut self, source: &str, id: u64) {
        if let Some(p) = self
            .queues
            .get_mut(source)
            .and_then(|q| q.front_mut())
            .filter(|p| p.id == id)
        {
            p.sent = true;
        }
    }

    /// `source` acked command `ack` (the newest it received): it and every older one of
    /// that source are delivered.
    pub fn handle_ack(&mut self, source: &str, ack: u64) {
        let Some(q) = self.queues.get_mut(source) else {
            return;
        };
        let mut done = Vec::new();
        while q.front().is_some_and(|p| p.id <= ack) {
            done.extend(q.pop_front().map(|p| p.id));
        }
        if q.is_empty() {
            self.queues.remove(source);
        }
        for id in done {
            self.total -= 1;
            self.counts.delivered += 1;
            self.event(id, source, CommandStatus::Delivered, None);
        }
    }

    /// Expire what is past its TTL at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        self.queues.retain(|source, q| {
            q.retain(|p| {
                let keep = p.deadline > now;
                if !keep {
                    expired.push((source.clone(), p.id, p.sent));
                }
                keep
            });
            !q.is_empty()
        });
        for (source, id, sent) in expired {
            self.total -= 1;
            self.counts.expired += 1;
            let why = if sent {
                "sent, but the device did not ack it in time"
            } else {
                "the device sent no message that could carry it in time"
            };
            self.event(id, &source, CommandStatus::Expired, Some(why.into()));
        }
    }

    /// When [`Commands::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.iter().map(|p| p.deadline).min())
            .min()
    }

    /// The next result, oldest first.
    pub fn poll_event(&mut self) -> Option<CommandResult> {
        self.events.pop_front()
    }

    /// Commands waiting now.
    pub fn waiting(&self) -> usize {
        self.total
    }

    pub fn counts(&self) -> CommandCounts {
        self.counts
    }

    fn event(&mut self, id: u64, source: &str, status: CommandStatus, reason: Option<String>) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(CommandResult {
            id,
            source: source.to_owned(),
            status,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(c: &mut Commands) -> Vec<(u64, CommandStatus)> {
        std::iter::from_fn(|| c.poll_event())
            .map(|e| (e.id, e.status))
            .collect()
    }

    #[test]
    fn commands_go_one_at_a_time_until_acked() {
        let t0 = Instant::now();
        let mut c = Commands::new(Duration::from_secs(10));
        c.submit(5, "pi", r#"{"led":"on"}"#, t0);
        c.submit(6, "pi", "[2]", t0);
        assert_eq!(c.next_for("pi"), Some((5, r#"{"led":"on"}"#)));
        assert_eq!(c.next_for("cam"), None);
        c.handle_ack("pi", 0);
        c.handle_ack("cam", 5);
        assert_eq!(
            c.next_for("pi").map(|(id, _)| id),
            Some(5),
            "repeated until acked"
        );
        assert!(events(&mut c).is_empty());
        c.handle_ack("pi", 5);
        assert_eq!(c.next_for("pi"), Some((6, "[2]")));
        c.handle_ack("pi", 6);
        assert_eq!(c.next_for("pi"), None);
        assert_eq!(
            events(&mut c),
            [(5, CommandStatus::Delivered), (6, CommandStatus::Delivered)]
        );
        assert_eq!(c.waiting(), 0);
        assert_eq!(c.poll_timeout(), None);
        c.handle_ack("pi", 6);
        assert!(
            events(&mut c).is_empty(),
            "a repeated ack delivers nothing twice"
        );
    }

    #[test]
    fn unacked_commands_expire_at_the_ttl() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(1);
        let mut c = Commands::new(ttl);
        c.submit(1, "ghost", "1", t0);
        c.submit(2, "pi", "2", t0 + Duration::from_millis(500));
        c.mark_sent("pi", 2);
        assert_eq!(c.poll_timeout(), Some(t0 + ttl));
        c.handle_timeout(t0 + ttl - Duration::from_millis(1));
        assert!(events(&mut c).is_empty());
        c.handle_timeout(t0 + ttl);
        let e = c.poll_event().unwrap();
        assert_eq!((e.id, e.source.as_str()), (1, "ghost"));
        assert_eq!(e.status, CommandStatus::Expired);
        assert!(e.reason.unwrap().contains("no message"));
        c.handle_timeout(t0 + Duration::from_millis(1500));
        let e = c.poll_event().unwrap();
        assert_eq!((e.id, e.status), (2, CommandStatus::Expired));
        assert!(e.reason.unwrap().contains("did not ack"));
        assert_eq!(
            c.counts(),
            CommandCounts {
                submitted: 2,
                delivered: 0,
                expired: 2,
                rejected: 0
            }
        );
    }

    #[test]
    fn bad_long_and_surplus_commands_are_rejected() {
        let t0 = Instant::now();
        let mut c = Commands::default();
        c.submit(1, "pi", "{nope", t0);
        c.submit(
            2,
            "pi",
            &format!("\"{}\"", "x".repeat(MAX_COMMAND_BYTES)),
            t0,
        );
        for id in 10..10 + MAX_PER_SOURCE as u64 + 1 {
            c.submit(id, "pi", "1", t0);
        }
        let got = events(&mut c);
        assert_eq!(
            got,
            [
                (1, CommandStatus::Rejected),
                (2, CommandStatus::Rejected),
                (10 + MAX_PER_SOURCE as u64, CommandStatus::Rejected)
            ]
        );
        assert_eq!(c.waiting(), MAX_PER_SOURCE);
        // the total bound, over many sources
        for i in 0..MAX_TOTAL {
            c.submit(1000 + i as u64, &format!("s{i}"), "1", t0);
        }
        assert_eq!(c.waiting(), MAX_TOTAL);
        assert_eq!(events(&mut c).len(), MAX_PER_SOURCE, "the surplus rejected");
        let ids = CommandIds::starting_at(7);
        assert_eq!((ids.next(), ids.next()), (7, 8));
        assert!(
            CommandIds::default().next() > 1_700_000_000_000_000,
            "µs since 1970"
        );
    }
}
