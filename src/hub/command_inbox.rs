//! How commands reach the message service, and their results leave it, without the
//! receive loop ever waiting (issue 15): the HTTP and MQTT threads [`CommandInbox::submit`]
//! into a bounded channel (a full one refuses at once), the message service takes what
//! is there each time round its loop ([`CommandPort`]), and puts each result into a second
//! bounded channel that one consumer (the MQTT bridge) may take; with nobody taking them,
//! or past its capacity, results are dropped and counted.
//!
//! The id is given here, at submission, so the submitter can say it at once (HTTP's 202
//! `{"id": ..}`); the rules of what becomes of a command are in
//! [`crate::proto::commands`].

use crate::proto::commands::{CommandIds, CommandResult};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Commands submitted and not yet taken by the message service, at most.
pub const INBOX_CAPACITY: usize = 256;
/// Results not yet taken by their consumer, at most.
pub const RESULTS_CAPACITY: usize = 4096;

/// A command on its way to the message service.
#[derive(Debug)]
pub struct Submitted {
    pub id: u64,
    pub source: String,
    pub json: String,
}

/// Why a command was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "{INBOX_CAPACITY} commands are on their way to the message service already; try again"
    )]
    Full,
    #[error("the message service has stopped")]
    Stopped,
}

/// The submitting side, shared by the HTTP and MQTT threads.
#[derive(Debug)]
pub struct CommandInbox {
    ids: CommandIds,
    tx: SyncSender<Submitted>,
    results: Mutex<Option<Receiver<CommandResult>>>,
    /// The TTL commands get (for what a submitter tells its caller).
    pub ttl: std::time::Duration,
}

/// The message service's side.
#[derive(Debug)]
pub struct CommandPort {
    pub rx: Receiver<Submitted>,
    results: SyncSender<CommandResult>,
    dropped: Arc<AtomicU64>,
}

impl CommandInbox {
    /// An inbox and the port the message service reads it from.
    pub fn new(ttl: std::time::Duration) -> (Arc<CommandInbox>, CommandPort) {
        let (tx, rx) = sync_channel(INBOX_CAPACITY);
        let (results_tx, results_rx) = sync_channel(RESULTS_CAPACITY);
        let inbox = CommandInbox {
            ids: CommandIds::default(),
            tx,
            results: Mutex::new(Some(results_rx)),
            ttl,
        };
        let port = CommandPort {
            rx,
            results: results_tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (Arc::new(inbox), port)
    }

    /// Hand `json` (checked by the message service) for `source` on; its id, or why not.
    /// Never waits.
    pub fn submit(&self, source: &str, json: &str) -> Result<u64, SubmitError> {
        let id = self.ids.next();
        let command = Submitted {
            id,
            source: source.to_owned(),
            json: json.to_owned(),
        };
        match self.tx.try_send(command) {
            Ok(()) => Ok(id),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// The results, for their one consumer (`None` once taken).
    pub fn take_results(&self) -> Option<Receiver<CommandResult>> {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl CommandPort {
    /// Pass a result on, or drop it (and count it) when its consumer is behind or absent.
    pub fn result(&self, result: CommandResult) {
        if self.results.try_send(result).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::commands::CommandStatus;

    #[test]
    fn a_full_inbox_refuses_at_once_and_results_reach_their_one_consumer() {
        let (inbox, port) = CommandInbox::new(std::time::Duration::from_secs(1));
        let first = inbox.submit("pi", "1").unwrap();
        for _ in 1..INBOX_CAPACITY {
            inbox.submit("pi", "1").unwrap();
        }
        assert_eq!(inbox.submit("pi", "1"), Err(SubmitError::Full));
        let got = port.rx.try_recv().unwrap();
        assert_eq!((got.id, got.source.as_str()), (first, "pi"));
        let results = inbox.take_results().unwrap();
        assert!(inbox.take_results().is_none(), "one consumer");
        port.result(CommandResult {
            id: first,
            source: "pi".into(),
            status: CommandStatus::Delivered,
            reason: None,
        });
        assert_eq!(results.try_recv().unwrap().id, first);
        drop(port);
        assert_eq!(inbox.submit("pi", "1"), Err(SubmitError::Stopped));
    }
}
