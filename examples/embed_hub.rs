//! The hub inside a program: receive frames and messages in a loop, with no files and no
//! HTTP in between. Run it, then point any sender at it:
//!
//! ```sh
//! cargo run --example embed_hub -- 127.0.0.1 20     # bind address, seconds to run
//! img-client --pattern --hub 127.0.0.1:9999          # in another terminal
//! ```
//!
//! Frames come newest per source (a slow loop skips frames, it never stalls reception), each
//! with its source, sequence number and the JPEG's bytes as sent.

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1".into()).parse()?;
    let seconds: u64 = args.next().map_or(Ok(20), |s| s.parse())?;

    let hub = udphub::Hub::builder().bind(bind).start()?;
    let addr = hub.img_addr().ok_or("the image service is off")?;
    println!("receiving frames on {addr} for {seconds} s");

    let mut frames = hub.frames();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        if let Some(frame) = frames.recv_timeout(Duration::from_millis(500)) {
            println!(
                "{} #{}: {} bytes",
                frame.source,
                frame.seq,
                frame.jpeg.len()
            );
        }
    }
    let report = hub.shutdown();
    print!("{}", report.summary.text());
    Ok(())
}
