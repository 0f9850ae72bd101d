//! `img-client --mjpeg` end to end on loopback: an MJPEG stream (real JPEGs back to back,
//! with bytes between frames and a last frame cut short, as a camera pipe that is killed
//! mid-frame leaves it) read from stdin or from a file and sent over the framed protocol to
//! a hub that saves what it receives. From a file every whole frame arrives, byte for byte
//! and in order; from a pipe (a live source) the sender takes the newest frame when it is
//! ready, so a frame may be skipped (counted), but what arrives is whole, in order, and the
//! newest frame is never lost. The skipped bytes and the dropped frame are counted in the
//! client's summary.
//!
//! `UDPHUB_IMG_CLIENT_BIN` names another `img-client` to run (scripts/test.sh runs these
//! tests a second time with the one built without OpenCV).

mod common;

use common::*;

/// The `img-client` under test: `UDPHUB_IMG_CLIENT_BIN`, or the one cargo built.
fn img_client() -> String {
    std::env::var("UDPHUB_IMG_CLIENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_img-client").to_string())
}

/// Bytes between frames that a splitter must skip (no `FF` in them).
const BETWEEN: &[&[u8]] = &[b"hello\n", b"\x00\x00junk", b""];

/// The frames (distinct real JPEGs of different sizes) and the stream made of them: each
/// frame preceded by a `BETWEEN` filler, then the first half of one more frame.
fn stream() -> (Vec<Vec<u8>>, Vec<u8>, usize) {
    let frames: Vec<Vec<u8>> = [3000, 70_000, 12_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| real_jpeg(len, i as u64 + 1))
        .collect();
    let mut bytes = Vec::new();
    for (frame, filler) in frames.iter().zip(BETWEEN) {
        bytes.extend_from_slice(filler);
        bytes.extend_from_slice(frame);
    }
    let cut = real_jpeg(5000, 99);
    bytes.extend_from_slice(&cut[..cut.len() / 2]);
    let garbage = BETWEEN.iter().map(|b| b.len()).sum();
    (frames, bytes, garbage)
}

/// The saved frames in the order the hub saved them (file names carry the sequence).
fn saved_in_order(dir: &std::path::Path) -> Vec<Vec<u8>> {
    list_dir(dir)
        .iter()
        .map(|name| std::fs::read(dir.join(name)).unwrap())
        .collect()
}

/// Run `img-client --mjpeg <source> --protocol framed` against a saving hub and check what
/// arrived and what the summary says. `live`: the source is a pipe, where the client may
/// skip a frame for a newer one.
fn send_stream(source: &str, stdin: &[u8], frames: &[Vec<u8>], garbage: usize, live: bool) {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&["--save-dir", dir.path().to_str().unwrap()]);
    let run = run_client(
        &img_client(),
        &[
            "--mjpeg",
            source,
            "--protocol",
            "framed",
            "--hub",
            &hub.img().to_string(),
            "--status-interval-ms",
            "0",
        ],
        stdin,
    );
    assert!(run.success(), "img-client failed: {}", run.describe());
    let (status, hub_out) = hub.stop("INT");
    assert!(status.success(), "hub exit {status:?}\n{hub_out}");
    let sent = summary_count(&run.stdout, "frames", "sent");
    let skipped = summary_count(&run.stdout, "frames", "skipped");
    assert_eq!(sent + skipped, 3, "{}", run.stdout);
    if !live {
        assert_eq!(skipped, 0, "a file's frames are all sent:\n{}", run.stdout);
    }
    let acked = summary_count(&run.stdout, "frames", "acked");
    assert_eq!(acked, sent, "{}", run.stdout);
    let mjpeg_line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("mjpeg input:"))
        .unwrap_or_else(|| panic!("no `mjpeg input:` line:\n{}", run.stdout));
    assert_eq!(
        mjpeg_line,
        format!(
            "mjpeg input: 3 frames read, {garbage} bytes between frames skipped, \
             1 cut-short or oversized frames dropped"
        )
    );
    let saved = saved_in_order(dir.path());
    let names = list_dir(dir.path());
    assert_eq!(saved.len() as u64, sent, "saved files: {names:?}");
    // each saved file is one of the frames, byte for byte, later than the one before
    let mut next = 0;
    for (i, got) in saved.iter().enumerate() {
        let at = frames[next..].iter().position(|f| f == got);
        let at = at.unwrap_or_else(|| panic!("saved file {i} is not a later frame: {names:?}"));
        next += at + 1;
    }
    assert!(
        saved.last() == frames.last(),
        "the newest frame was not delivered"
    );
}

#[test]
fn an_mjpeg_stream_on_stdin_arrives_frame_for_frame() {
    let (frames, bytes, garbage) = stream();
    send_stream("-", &bytes, &frames, garbage, true);
}

#[test]
fn an_mjpeg_file_arrives_frame_for_frame() {
    let (frames, bytes, garbage) = stream();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    send_stream(file.path().to_str().unwrap(), b"", &frames, garbage, false);
}

#[test]
fn mjpeg_with_show_is_refused_before_anything_is_sent() {
    let run = run_client(
        &img_client(),
        &["--mjpeg", "-", "--show", "--hub", "127.0.0.1:9"],
        b"",
    );
    assert!(!run.success());
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}
