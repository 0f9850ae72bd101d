//! The clients' errors: why a run could not start, or what ended it early.
//!
//! One [`ClientError`] for both clients, so a caller (the binaries, the benchmark, a test)
//! can tell a bad flag from a socket that failed from a source that cannot be opened, and
//! still gets the underlying error ([`std::error::Error::source`]) instead of only its
//! text. The `Display` of every variant is the one line the binaries print after
//! `img-client: ` / `msg-client: `, so it names the flag or the thing that failed.
//! Errors of the layers below keep their own types ([`SendError`], `MediaError`,
//! [`MessageError`]) and are wrapped, not turned into strings.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::img_sender::SendError;
use super::msg_sender::MessageError;
#[cfg(feature = "opencv")]
use crate::media::MediaError;

/// Why a client run could not start, or what ended it early.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--hub` is not `HOST:PORT`, or the name does not resolve.
    #[error("cannot resolve --hub {hub:?} (expected HOST:PORT): {source}")]
    Resolve { hub: String, source: io::Error },
    /// `--hub` resolved, but to no address at all.
    #[error("--hub {hub:?} resolves to no address")]
    NoAddress { hub: String },
    /// The camera client's settings do not fit together.
    #[error(transparent)]
    Config(#[from] ImgConfigError),
    /// A `--jpeg` file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadJpeg { path: PathBuf, source: io::Error },
    /// A `--jpeg` file is not a complete JPEG (the hub would refuse every frame).
    #[error(
        "{} is not a JPEG file (it must start with FF D8 and end with FF D9)",
        path.display()
    )]
    NotJpeg { path: PathBuf },
    /// A `--mjpeg` stream cannot be opened or read.
    #[error("cannot read the MJPEG stream {}: {source}", path.display())]
    ReadMjpeg { path: PathBuf, source: io::Error },
    /// The source needs OpenCV (capture, decode or encode) and this build has none.
    #[error(
        "this img-client was built without OpenCV (cargo feature `opencv`): {what} needs it; \
         send JPEG bytes as they are with --mjpeg - (a camera's MJPEG on stdin) or --jpeg FILE"
    )]
    NeedsOpenCv { what: &'static str },
    /// The frame source (camera, video, images) failed to open, read or encode.
    #[cfg(feature = "opencv")]
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The socket to the hub cannot be opened.
    /// Keys with a seed format.
    #[error("--key works with --protocol framed only (the seed formats have no keys)")]
    KeysNeedFramed,
    /// `--key` cannot be read or is not a private key.
    #[error("--key: {0}")]
    Key(#[from] crate::secure::keys::KeyError),
    #[error("cannot open a socket for {hub}: {source}")]
    OpenSocket { hub: SocketAddr, source: io::Error },
    /// A thread of the run cannot be started (`what`: "capture thread", "stdin reader"...).
    #[error("cannot start the {what}: {source}")]
    Spawn {
        what: &'static str,
        source: io::Error,
    },
    /// A thread of the run panicked.
    #[error("the {what} panicked")]
    Panicked { what: &'static str },
    /// The image sender failed in a way retrying cannot help.
    #[error(transparent)]
    Send(#[from] SendError),
    /// `--data` is not one message the hub would accept.
    #[error("--data {text:?}: {source}")]
    Data { text: String, source: MessageError },
    /// The telemetry client's socket failed.
    #[error("socket error: {0}")]
    Socket(#[source] io::Error),
    /// Reading `--stdin` failed.
    #[error("reading stdin: {0}")]
    Stdin(#[source] io::Error),
}

/// A camera client setting that is out of range, or two that do not go together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImgConfigError {
    #[error("--width and --height must be positive, got {width}x{height}")]
    Size { width: i32, height: i32 },
    #[error("--quality must be within 0..=100, got {0}")]
    Quality(i32),
    #[error("--fps must be a positive number, got {0}")]
    Fps(f64),
    #[error("--ack-timeout-ms must be positive")]
    AckTimeout,
    #[error("--max-latency-ms must be positive")]
    MaxLatency,
    #[error("--show cannot preview a --jpeg file (it is never decoded)")]
    ShowJpeg,
    #[error("--show cannot preview an --mjpeg stream (its frames are never decoded)")]
    ShowMjpeg,
    #[error(
        "--fps does not apply to --mjpeg: the camera sets the rate, and frames the link \
         cannot take are replaced by newer ones"
    )]
    FpsMjpeg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::img::read_jpeg;
    use std::error::Error as _;

    #[test]
    fn a_jpeg_file_that_cannot_be_used_says_why_and_keeps_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.jpg");
        let err = read_jpeg(&missing).unwrap_err();
        let ClientError::ReadJpeg { path, source } = &err else {
            panic!("not a read error: {err:?}");
        };
        assert_eq!(path, &missing);
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        assert!(err.source().is_some());
        assert!(err.to_string().starts_with("cannot read "), "{err}");

        let not_jpeg = dir.path().join("not.jpg");
        std::fs::write(&not_jpeg, b"hello, world").unwrap();
        let err = read_jpeg(&not_jpeg).unwrap_err();
        assert!(
            matches!(&err, ClientError::NotJpeg { path } if path == &not_jpeg),
            "{err:?}"
        );
        assert!(err.to_string().contains("is not a JPEG file"), "{err}");
    }

    #[test]
    fn a_send_error_keeps_its_socket_error_as_the_source() {
        let err = ClientError::from(SendError::Io(io::Error::other("boom")));
        assert_eq!(err.to_string(), "socket error: boom");
        // `transparent`: the wrapper adds no line of its own, so its source is SendError's.
        assert!(
            matches!(err, ClientError::Send(SendError::Io(_))),
            "{err:?}"
        );
        assert_eq!(err.source().expect("the io::Error").to_string(), "boom");
    }
}
