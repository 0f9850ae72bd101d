//! `hub --json-summary`: the exit summary as one JSON object on stdout (the last line, after
//! the usual listening and `hub: ready` lines), with the same counts the text summary
//! gives, read back into the library's [`HubSummary`].

mod common;

use common::*;
use udphub::hub::source::Service;
use udphub::hub::stats::HubSummary;

#[test]
fn the_exit_summary_is_one_json_object_with_every_service_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&["--json-summary", "--save-dir", dir.path().to_str().unwrap()]);
    let sock = udp_client();
    let me = sock.local_addr().unwrap();
    let frame = real_jpeg(5000, 1);
    send_chunked(&sock, hub.img(), &frame);
    expect_reply(&sock, hub.img(), IMG_ACK, "chunked frame");
    send(&sock, hub.msg(), b"[0, 0, 0, 1]");
    expect_reply(&sock, hub.msg(), MSG_ACK, "message");
    send(&sock, hub.msg(), format!("{:<64}", "{not json").as_bytes()); // padded: shorter junk gets no reply
    let _ = recv_reply(&sock, hub.msg(), "invalid message");

    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}\n{stdout}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("hub: summary")),
        "no text summary with --json-summary:\n{stdout}"
    );
    assert!(stdout.contains("hub: ready\n"), "{stdout}");
    let last = stdout.lines().last().unwrap();
    let summary: HubSummary = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not the JSON summary ({e}):\n{stdout}"));

    let names: Vec<Service> = summary.services.iter().map(|s| s.service).collect();
    assert_eq!(names, [Service::Img, Service::Msg, Service::Tcp]);
    let img = summary.service(Service::Img).unwrap();
    assert_eq!(img.total.items, 1);
    assert_eq!(img.total.bytes, frame.len() as u64);
    assert_eq!(img.sources.len(), 1);
    assert_eq!(img.sources[0].addr, Some(me));
    let msg = summary.service(Service::Msg).unwrap();
    assert_eq!((msg.total.items, msg.total.corrupt), (1, 1));
    assert_eq!(summary.service(Service::Tcp).unwrap().total.items, 0);
    let saved = summary.saved.expect("--save-dir: the saver's counts");
    assert_eq!((saved.saved, saved.skipped, saved.failed), (1, 0, 0));
    assert!(summary.uptime_s > 0.0, "{last}");
    assert!(
        summary.text().starts_with("hub: summary after "),
        "{}",
        summary.text()
    );
}
