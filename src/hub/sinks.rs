//! Where an intact frame goes after a receiver has it: the saver, the display, the HTTP
//! view and the frame log, each fed without blocking (a bounded queue that skips when
//! full, or "latest frame wins").

use super::display::DisplayQueue;
use super::frame_log::{FrameLog, FrameRecord};
use super::http::frames::LatestFrames;
use super::saver::Saver;
use super::source::SourceId;
use crate::proto::framed_receiver::FrameTiming;
use std::sync::Arc;

/// How a frame arrived, for the frame log.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// The framed frame id, or the per-source count of a seed frame.
    pub frame: u64,
    pub timing: FrameTiming,
}

/// The consumers of frames, cloned into each receiving thread.
#[derive(Clone, Default)]
pub struct FrameSinks {
    pub saver: Option<Saver>,
    pub display: Option<Arc<DisplayQueue>>,
    /// The newest frame per source for `hub --http` (streams and snapshots).
    pub frames: Option<Arc<LatestFrames>>,
    /// The newest frame per source for a program that embeds the hub ([`crate::api::Hub`]).
    pub tap: Option<Arc<super::FrameTap>>,
    /// `--frame-log`: one line per frame.
    pub frame_log: Option<FrameLog>,
}

impl FrameSinks {
    /// Hand frame `seq` (1-based, per source) of `source`, shown as `name` if it gave one,
    /// to every consumer. Never blocks.
    pub fn deliver(
        &self,
        source: SourceId,
        name: Option<Arc<str>>,
        seq: u64,
        arrival: Arrival,
        jpeg: Vec<u8>,
    ) {
        if let Some(log) = &self.frame_log {
            log.offer(FrameRecord {
                source: source.addr,
                name: name.clone(),
                frame: arrival.frame,
                bytes: jpeg.len(),
                timing: arrival.timing,
            });
        }
        if self.saver.is_none()
            && self.display.is_none()
            && self.frames.is_none()
            && self.tap.is_none()
        {
            return;
        }
        let jpeg = Arc::new(jpeg);
        if let Some(saver) = &self.saver {
            saver.offer(source, name.as_ref(), seq, &jpeg);
        }
        if let Some(tap) = &self.tap {
            let received = std::time::SystemTime::now();
            let (jpeg, seq) = (jpeg.clone(), seq);
            tap.put(
                source,
                super::TappedFrame {
                    seq,
                    name: name.clone(),
                    jpeg,
                    received,
                },
            );
        }
        if let Some(frames) = &self.frames {
            frames.put(source, jpeg.clone());
        }
        if let Some(display) = &self.display {
            display.put(source, jpeg);
        }
    }
}
