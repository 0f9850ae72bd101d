//! MJPEG from a pipe: split a concatenated stream of JPEGs (what `rpicam-vid --codec mjpeg
//! -o -`, `ffmpeg -f mjpeg -` and most USB webcams through ustreamer produce) into frames,
//! so they can be sent as they are, with no decode and no re-encode (and no OpenCV).
//!
//! [`MjpegSplitter`] is socket-free and clock-free: push bytes as they are read, take
//! frames. It walks the marker segments (so a JPEG inside an APP1/EXIF thumbnail, which has
//! its own SOI and EOI, is skipped by its length rather than taken for a frame end) and the
//! entropy-coded data (where `FF` is always followed by `00`, a restart marker or a real
//! marker). What is not part of a frame is skipped and counted: bytes before an SOI
//! (garbage between frames), a frame cut short by a new SOI or by bytes that cannot be a
//! marker, a frame over the size limit, and a truncated last frame at the end of the
//! stream. Memory is bounded: the buffer never holds more than the size limit plus one read.
//!
//! [`MjpegReader`] reads a stream (stdin, a file, a FIFO) through a splitter.

use std::io::{self, Read};

/// Largest frame kept by default (a 4K JPEG at high quality is 2-4 MB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 << 10;

/// What the splitter skipped, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitCounts {
    /// Whole frames handed out.
    pub frames: u64,
    /// Bytes outside any frame (before an SOI), dropped.
    pub garbage_bytes: u64,
    /// Frames started but dropped: cut short, malformed, over the size limit, or truncated
    /// at the end of the stream.
    pub dropped_frames: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for `FF D8 FF` (SOI followed by a marker) at `pos`.
    Seeking,
    /// Inside a frame's headers: a marker segment starts at `pos`.
    Segments,
    /// Inside entropy-coded data at `pos`.
    Entropy,
}

/// Splits a concatenated MJPEG stream into JPEG frames. See the [module docs](self).
#[derive(Debug)]
pub struct MjpegSplitter {
    /// In a frame, the frame starts at 0; seeking, nothing before `pos` is kept.
    buf: Vec<u8>,
    pos: usize,
    state: State,
    max_frame_bytes: usize,
    counts: SplitCounts,
}

impl MjpegSplitter {
    /// A splitter that drops frames over `max_frame_bytes` (at least 4 bytes).
    pub fn new(max_frame_bytes: usize) -> Self {
        MjpegSplitter {
            buf: Vec::new(),
            pos: 0,
            state: State::Seeking,
            max_frame_bytes: max_frame_bytes.max(4),
            counts: SplitCounts::default(),
        }
    }

    /// What was handed out and skipped so far.
    pub fn counts(&self) -> SplitCounts {
        self.counts
    }

    /// Add bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The end of the stream: a frame still incomplete is dropped (and counted).
    pub fn finish(&mut self) {
        if self.state != State::Seeking {
            self.counts.dropped_frames += 1;
        } else {
            self.counts.garbage_bytes += self.buf.len() as u64;
        }
        self.buf.clear();
        self.pos = 0;
        self.state = State::Seeking;
    }

    /// The next whole frame in what was pushed, if there is one.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            let progressed = match self.state {
                State::Seeking => self.seek(),
                State::Segments => self.segment(),
                State::Entropy => self.entropy(),
            };
            match progressed {
                Step::Frame(end) => {
                    let rest = self.buf.split_off(end);
                    let frame = std::mem::replace(&mut self.buf, rest);
                    self.pos = 0;
                    self.state = State::Seeking;
                    self.counts.frames += 1;
                    return Some(frame);
                }
                Step::More => {}
                Step::NeedBytes => {
                    if self.state != State::Seeking && self.buf.len() > self.max_frame_bytes {
                        self.drop_frame(self.buf.len());
                        continue;
                    }
                    return None;
                }
            }
        }
    }

    /// Drop the frame at the start of the buffer, going on looking at `resume`.
    fn drop_frame(&mut self, resume: usize) {
        self.counts.dropped_frames += 1;
        self.buf.drain(..resume.min(self.buf.len()));
        self.pos = 0;
        self.state = State::Seeking;
    }

    /// Start a new frame at `at` (an SOI) after dropping the one before it, if any.
    fn restart_at(&mut self, at: usize) -> Step {
        self.drop_frame(at);
        Step::More
    }

    fn seek(&mut self) -> Step {
        let found = self.buf[self.pos..]
            .windows(3)
            .position(|w| w == [0xFF, 0xD8, 0xFF]);
        match found {
            Some(i) => {
                let start = self.pos + i;
                self.counts.garbage_bytes += start as u64;
                self.buf.drain(..start);
                self.pos = 2;
                self.state = State::Segments;
                Step::More
            }
            None => {
                // keep the last two bytes: an SOI may be split across reads
                let keep = self.buf.len().min(2);
                let drop = self.buf.len() - keep;
                self.counts.garbage_bytes += drop as u64;
                self.buf.drain(..drop);
                self.pos = 0;
                Step::NeedBytes
            }
        }
    }

    fn segment(&mut self) -> Step {
        let b = &self.buf;
        let mut p = self.pos;
        if p >= b.len() {
            return Step::NeedBytes;
        }
        if b[p] != 0xFF {
            // not a marker where one must be: not a JPEG after all
            return self.restart_at(p);
        }
        // fill bytes: any number of FF before the marker code
        while p < b.len() && b[p] == 0xFF {
            p += 1;
        }
        if p >= b.len() {
            return Step::NeedBytes;
        }
        let marker = b[p];
        let after = p + 1;
        match marker {
            0xD9 => Step::Frame(after),
            0xD8 => self.restart_at(p - 1),
            0x01 | 0xD0..=0xD7 => {
                self.pos = after;
                Step::More
            }
            0x00 => self.restart_at(p),
            _ => {
                if after + 2 > b.len() {
                    return Step::NeedBytes;
                }
                let len = usize::from(u16::from_be_bytes([b[after], b[after + 1]]));
                if len < 2 {
                    return self.restart_at(after);
                }
                let end = after + len;
                if end > b.len() {
                    return if end > self.max_frame_bytes {
                        self.restart_at(after)
                    } else {
                        Step::NeedBytes
                    };
                }
                self.pos = end;
                if marker == 0xDA {
                    self.state = State::Entropy;
                }
                Step::More
            }
        }
    }

    fn entropy(&mut self) -> Step {
        let b = &self.buf;
        let mut p = self.pos;
        loop {
            match b[p..].iter().position(|&x| x == 0xFF) {
                None => {
                    self.pos = b.len();
                    return Step::NeedBytes;
                }
                Some(i) => p += i,
            }
            if p + 1 >= b.len() {
                self.pos = p;
                return Step::NeedBytes;
            }
            match b[p + 1] {
                0x00 | 0xD0..=0xD7 => p += 2,
                0xFF => p += 1,
                0xD9 => return Step::Frame(p + 2),
                0xD8 => return self.restart_at(p),
                _ => {
                    // a marker between scans (progressive JPEG: DHT, SOS, ...)
                    self.pos = p;
                    self.state = State::Segments;
                    return Step::More;
                }
            }
        }
    }
}

enum Step {
    /// A whole frame is `buf[..end]`.
    Frame(usize),
    /// The state moved on; look again.
    More,
    /// Nothing more in what was pushed.
    NeedBytes,
}

/// Frames from a readable stream (stdin, a file, a FIFO), through an [`MjpegSplitter`].
pub struct MjpegReader<R> {
    input: R,
    splitter: MjpegSplitter,
    buf: Vec<u8>,
    ended: bool,
}

impl<R: Read> MjpegReader<R> {
    /// A reader of `input` that drops frames over `max_frame_bytes`.
    pub fn new(input: R, max_frame_bytes: usize) -> Self {
        MjpegReader {
            input,
            splitter: MjpegSplitter::new(max_frame_bytes),
            buf: vec![0; READ_CHUNK],
            ended: false,
        }
    }

    /// The next whole frame; `Ok(None)` at the end of the stream (a truncated last frame is
    /// dropped). Blocks in the read until the stream gives bytes.
    pub fn next_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(frame) = self.splitter.next_frame() {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            let n = match self.input.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.ended = true;
                self.splitter.finish();
            } else {
                self.splitter.push(&self.buf[..n]);
            }
        }
    }

    /// What the splitter handed out and skipped so far.
    pub fn counts(&self) -> SplitCounts {
        self.splitter.counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small JPEG-shaped frame: SOI, an APP0 segment, a DQT-like segment holding `FF D9`
    /// (skipped by its length), SOS, entropy data with a stuffed `FF 00` and a restart
    /// marker, EOI.
    fn frame(tag: u8) -> Vec<u8> {
        let mut f = vec![0xFF, 0xD8];
        f.extend([0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', tag]);
        f.extend([0xFF, 0xDB, 0x00, 0x05, 0xFF, 0xD9, 0x00]);
        f.extend([0xFF, 0xDA, 0x00, 0x03, 0x01]);
        f.extend([tag, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, tag]);
        f.extend([0xFF, 0xD9]);
        f
    }

    fn split_all(splitter: &mut MjpegSplitter) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| splitter.next_frame()).collect()
    }

    #[test]
    fn concatenated_frames_come_out_unchanged() {
        let stream = [frame(1), frame(2), frame(3)].concat();
        let mut s = MjpegSplitter::new(1000);
        s.push(&stream);
        assert_eq!(split_all(&mut s), vec![frame(1), frame(2), frame(3)]);
        assert_eq!(
            s.counts(),
            SplitCounts {
                frames: 3,
                ..SplitCounts::default()
            }
        );
    }

    #[test]
    fn garbage_between_frames_is_skipped_and_counted() {
        let garbage = [0x00, 0xFF, 0xD8, 0x00, 0xFF, 0xFF, 0x42, 0xD9];
        let stream = [&garbage[..], &frame(1), &garbage, &frame(2), &[9, 9]].concat();
        let mut s = MjpegSplitter::new(1000);
        s.push(&stream);
        assert_eq!(split_all(&mut s), vec![frame(1), frame(2)]);
        s.finish();
        assert_eq!(s.counts().garbage_bytes, 2 * garbage.len() as u64 + 2);
        assert_eq!(s.counts().dropped_frames, 0);
    }

    #[test]
    fn a_frame_split_across_reads_at_every_byte_comes_out_whole() {
        let stream = [frame(1), vec![0xAA, 0xFF], frame(2)].concat();
        for cut in 0..=stream.len() {
            let mut s = MjpegSplitter::new(1000);
            s.push(&stream[..cut]);
            let mut got = split_all(&mut s);
            s.push(&stream[cut..]);
            got.extend(split_all(&mut s));
            assert_eq!(got, vec![frame(1), frame(2)], "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_frames() {
        let stream = [frame(5), frame(6)].concat();
        let mut s = MjpegSplitter::new(1000);
        let mut got = Vec::new();
        for b in &stream {
            s.push(&[*b]);
            got.extend(split_all(&mut s));
        }
        assert_eq!(got, vec![frame(5), frame(6)]);
    }

    #[test]
    fn a_truncated_last_frame_is_dropped_at_the_end() {
        let f = frame(2);
        let stream = [&frame(1)[..], &f[..f.len() - 3]].concat();
        let mut reader = MjpegReader::new(&stream[..], 1000);
        assert_eq!(reader.next_frame().unwrap(), Some(frame(1)));
        assert_eq!(reader.next_frame().unwrap(), None);
        assert_eq!(reader.counts().dropped_frames, 1);
        assert_eq!(reader.counts().frames, 1);
    }

    #[test]
    fn a_frame_cut_short_by_a_new_soi_is_dropped_and_the_next_kept() {
        let f = frame(1);
        let stream = [&f[..f.len() - 4], &frame(2)[..]].concat();
        let mut s = MjpegSplitter::new(1000);
        s.push(&stream);
        assert_eq!(split_all(&mut s), vec![frame(2)]);
        assert_eq!(s.counts().dropped_frames, 1);
    }

    #[test]
    fn a_frame_over_the_limit_is_dropped_and_memory_stays_bounded() {
        let mut big = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        big.extend(std::iter::repeat_n(0x11, 5000));
        big.extend([0xFF, 0xD9]);
        let mut s = MjpegSplitter::new(1000);
        for piece in big.chunks(100) {
            s.push(piece);
            assert!(split_all(&mut s).is_empty());
            assert!(s.buf.len() <= 1000 + 100, "buffer bounded");
        }
        s.push(&frame(3));
        assert_eq!(split_all(&mut s), vec![frame(3)]);
        assert!(s.counts().dropped_frames >= 1);
    }

    #[test]
    fn a_thumbnail_inside_app1_does_not_end_the_frame() {
        let thumb = frame(9);
        let mut f = vec![0xFF, 0xD8, 0xFF, 0xE1];
        f.extend(u16::try_from(thumb.len() + 2).unwrap().to_be_bytes());
        f.extend(&thumb);
        f.extend(&frame(1)[2..]);
        let mut s = MjpegSplitter::new(1000);
        s.push(&f);
        assert_eq!(split_all(&mut s), vec![f.clone()]);
    }
}
