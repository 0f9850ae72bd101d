//! Sending from a program: one call per JPEG, one result per call (acked or lost, with the
//! round trip and resends). Needs no OpenCV: the bytes are sent as they are.
//!
//! ```sh
//! cargo run --example send_jpeg -- 127.0.0.1:9999 frame.jpg 10   # hub, file, times
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let hub = args.next().unwrap_or_else(|| "127.0.0.1:9999".into());
    let path = args.next().ok_or("usage: send_jpeg HUB FILE [TIMES]")?;
    let times: u32 = args.next().map_or(Ok(1), |s| s.parse())?;

    let jpeg = std::fs::read(&path)?;
    let mut sender = udphub::ImageSender::connect(&hub)?;
    for i in 1..=times {
        let delivery = sender.send_jpeg(&jpeg)?;
        println!("frame {i}: {delivery:?}");
    }
    Ok(())
}
