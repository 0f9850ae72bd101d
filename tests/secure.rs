//! Keys end to end (issue 12): a hub with `--key --authorized-keys`, cameras with
//! `img-client --key --hub-key`, keys made by `udphub-keygen`. An authorized camera's frames
//! are delivered under the name the file gives its key (whatever it claims); a sender
//! without a key, a seed message and a seed TCP stream get nothing; a key removed from the
//! file stops working without a restart; a trusted range still gets in without a key.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `img-client --jpeg FRAME --frames N --ack-timeout-ms 500` with `extra` flags; (acked,
/// the run).
fn send_frames(hub: &HubProcess, frame: &Path, n: u32, extra: &[&str]) -> (u64, Finished) {
    let mut args = vec![
        "--hub".to_string(),
        hub.img().to_string(),
        "--jpeg".into(),
        frame.to_str().unwrap().into(),
        "--frames".into(),
        n.to_string(),
        "--ack-timeout-ms".into(),
        "500".into(),
        "--status-interval-ms".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_client(env!("CARGO_BIN_EXE_img-client"), &args, b"");
    assert!(run.stdout.contains("frames:"), "{}", run.describe());
    (summary_count(&run.stdout, "frames", "acked"), run)
}

/// The body of `GET path` from the hub's web view.
fn http_get(hub: &HubProcess, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(hub.http()).unwrap();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

struct Keys {
    dir: tempfile::TempDir,
    hub_public: String,
    cam_public: String,
    door_public: String,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let hub_public = keygen(&dir.path().join("hub.key"));
        let cam_public = keygen(&dir.path().join("cam.key"));
        let door_public = keygen(&dir.path().join("door.key"));
        Keys {
            dir,
            hub_public,
            cam_public,
            door_public,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn authorize(&self, lines: &[(&str, &str)]) {
        let text: String = std::iter::once("# device keys\n".to_string())
            .chain(lines.iter().map(|(k, n)| format!("{k} {n}\n")))
            .collect();
        let tmp = self.dir.path().join("authorized.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.path().join("authorized")).unwrap();
    }

    /// The flags of a camera with key `file`.
    fn camera(&self, file: &str) -> Vec<String> {
        vec![
            "--key".into(),
            self.path(file),
            "--hub-key".into(),
            self.hub_public.clone(),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn only_authorized_cameras_get_in_under_their_file_names_and_a_removed_key_stops() {
    let keys = Keys::new();
    keys.authorize(&[(&keys.cam_public, "garden"), (&keys.door_public, "door")]);
    let save = tempfile::tempdir().unwrap();
    let frame = keys.dir.path().join("frame.jpg");
    std::fs::write(&frame, fake_jpeg(20_000, 5)).unwrap();
    let hub = HubProcess::start(&[
        "--key",
        &keys.path("hub.key"),
        "--authorized-keys",
        &keys.path("authorized"),
        "--save-dir",
        save.path().to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);

    // the garden camera claims to be "door": the file's name for its key is the one used
    // (garden uses AES-256-GCM, door below ChaCha20-Poly1305: one hub takes both)
    let mut cam = keys.camera("cam.key");
    cam.extend(["--name", "door", "--cipher", "aes-256-gcm"].map(String::from));
    let (acked, run) = send_frames(&hub, &frame, 3, &strs(&cam));
    assert_eq!(acked, 3, "{}", run.describe());

    // no key: nothing acked (silence); a seed message and a seed TCP stream: nothing
    let (acked, run) = send_frames(&hub, &frame, 2, &[]);
    assert_eq!(acked, 0, "{}", run.describe());
    let sock = udp_client();
    send(&sock, hub.msg(), b"[0, 0, 0, 1]");
    assert!(
        sock.recv(&mut [0u8; 64]).is_err(),
        "no reply to an unauthenticated message"
    );
    let mut tcp = tcp_connect(hub.tcp());
    use std::io::{Read, Write};
    let _ = tcp.write_all(&tcp_header(10));
    assert_eq!(
        tcp.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "the TCP stream is closed at once"
    );

    // remove the garden key: within a second of the change it stops working
    keys.authorize(&[(&keys.door_public, "door")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (acked, _) = send_frames(&hub, &frame, 1, &strs(&cam));
        if acked == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the removed key still works");
    }
    // (the run that broke the loop may have handshaken before the reload and been cut off
    // after it: a fresh run's handshake is certainly after it, so refused as unknown_key)
    let (acked, run) = send_frames(&hub, &frame, 1, &strs(&cam));
    assert_eq!(acked, 0, "{}", run.describe());
    // the door camera still does
    let mut door = keys.camera("door.key");
    door.extend(["--cipher", "chacha20-poly1305"].map(String::from));
    let (acked, run) = send_frames(&hub, &frame, 2, &strs(&door));
    assert_eq!(acked, 2, "{}", run.describe());

    // every refusal is counted, per service and reason, in /state and /metrics
    let refused = |state: &serde_json::Value, service: &str, reason: &str| {
        state["refused"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == service && r["reason"] == reason)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    let state: serde_json::Value = serde_json::from_str(&http_get(&hub, "/state")).unwrap();
    assert!(refused(&state, "img", "unauthenticated") > 0, "{state:#}");
    assert!(refused(&state, "img", "unknown_key") > 0, "{state:#}");
    assert_eq!(refused(&state, "msg", "unauthenticated"), 1, "{state:#}");
    assert_eq!(refused(&state, "tcp", "unauthenticated"), 1, "{state:#}");
    let metrics = http_get(&hub, "/metrics");
    assert!(
        metrics.contains("udphub_refused_total{service=\"tcp\",reason=\"unauthenticated\"} 1\n"),
        "{metrics}"
    );

    let (status, stdout, stderr) = hub.stop_with_stderr("INT");
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("garden (udp 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("door (udp 127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("refused without a reply: img ")
            && stdout.contains("tcp unauthenticated 1"),
        "{stdout}"
    );
    assert!(stderr.contains("reloaded: 1 devices"), "{stderr}");
    let saved = list_dir(save.path());
    let named = |p: &str| saved.iter().filter(|n| n.starts_with(p)).count();
    assert!(named("garden-") >= 3, "{saved:?}");
    assert_eq!(named("door-"), 2, "{saved:?}");
    assert_eq!(saved.len(), named("garden-") + named("door-"), "{saved:?}");
}

#[test]
fn a_trusted_range_still_gets_in_without_a_key() {
    let keys = Keys::new();
    keys.authorize(&[(&keys.cam_public, "garden")]);
    let frame = keys.dir.path().join("frame.jpg");
    std::fs::write(&frame, fake_jpeg(5_000, 2)).unwrap();
    let hub = HubProcess::start(&[
        "--key",
        &keys.path("hub.key"),
        "--authorized-keys",
        &keys.path("authorized"),
        "--allow-plain",
        "127.0.0.0/8",
    ]);
    let (acked, run) = send_frames(&hub, &frame, 2, &[]);
    assert_eq!(acked, 2, "{}", run.describe());
    let sock = udp_client();
    send(&sock, hub.msg(), b"[0, 0, 0, 1]");
    expect_reply(&sock, hub.msg(), b"get the msg", "seed message ack");
    let (status, _) = hub.stop("INT");
    assert!(status.success());
}

#[test]
fn a_bad_key_setup_is_refused_at_start() {
    let keys = Keys::new();
    std::fs::write(keys.dir.path().join("authorized"), "not-a-key garden\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args([
            "--img-port",
            "0",
            "--msg-port",
            "0",
            "--tcp-port",
            "0",
            "--key",
            &keys.path("hub.key"),
            "--authorized-keys",
            &keys.path("authorized"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--authorized-keys") && err.contains("line 1"),
        "{err}"
    );
    // --key alone is a usage error
    let out = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--key", &keys.path("hub.key")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // a cipher that is not one of ours is a usage error that names the choices
    let mut cam = keys.camera("cam.key");
    cam.extend(["--cipher", "aes-128-cbc", "--hub", "127.0.0.1:9"].map(String::from));
    let out = Command::new(env!("CARGO_BIN_EXE_img-client"))
        .args(&cam)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown cipher") && err.contains("aes-256-gcm"),
        "{err}"
    );
}

#[test]
fn authorized_telemetry_is_logged_once_under_the_file_name_and_a_keyless_sender_is_not() {
    let keys = Keys::new();
    keys.authorize(&[(&keys.cam_public, "rover")]);
    let log = keys.dir.path().join("messages.jsonl");
    let hub = HubProcess::start(&[
        "--key",
        &keys.path("hub.key"),
        "--authorized-keys",
        &keys.path("authorized"),
        "--msg-log",
        log.to_str().unwrap(),
    ]);
    let msg = |extra: &[String], stdin: &str| {
        let mut args: Vec<String> = [
            "--stdin",
            "--hub",
            &hub.msg().to_string(),
            "--reply-timeout-ms",
            "2000",
            "--interval-ms",
            "0",
            "--status-interval-ms",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        run_client(
            env!("CARGO_BIN_EXE_msg-client"),
            &strs(&args),
            stdin.as_bytes(),
        )
    };
    // it claims another name: the file's name is the one logged
    let mut flags = keys.camera("cam.key");
    flags.extend(["--name".into(), "door".into()]);
    let lines: String = (0..50).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    let run = msg(&flags, &lines);
    assert!(run.success(), "{}", run.describe());
    assert_eq!(summary_count(&run.stdout, "messages", "answered"), 50);
    // without a key: nothing answered, nothing logged
    let run = msg(&[], "{\"stranger\": 1}\n");
    assert_eq!(
        summary_count(&run.stdout, "messages", "answered"),
        0,
        "{}",
        run.describe()
    );
    let (status, _) = hub.stop("INT");
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let logged: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 50, "{text}");
    assert!(logged.iter().all(|l| l["name"] == "rover"), "{text}");
    let n: Vec<u64> = logged
        .iter()
        .map(|l| l["msg"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(n, (0..50).collect::<Vec<_>>());
}

#[test]
fn an_authenticated_device_gets_a_command_longer_than_its_messages() {
    let keys = Keys::new();
    keys.authorize(&[(&keys.cam_public, "rover")]);
    let hub = HubProcess::start(&[
        "--key",
        &keys.path("hub.key"),
        "--authorized-keys",
        &keys.path("authorized"),
        "--http",
        "127.0.0.1:0",
    ]);
    let mut args = keys.camera("cam.key");
    let msg = hub.msg().to_string();
    args.extend(
        [
            "--hub",
            &msg,
            "--interval-ms",
            "100",
            "--status-interval-ms",
            "0",
            "--data",
            "1",
        ]
        .map(String::from),
    );
    let client = LiveClient::start(env!("CARGO_BIN_EXE_msg-client"), &strs(&args));
    // far longer than a 1-byte message: sent anyway, the session is a validated peer
    let waypoints: Vec<[u32; 2]> = (0..40).map(|i| [i, i * 2]).collect();
    let command = serde_json::json!({ "waypoints": waypoints });
    let (status, body) = post_command(hub.http(), "rover", &command.to_string());
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let line = client
        .line_where(Duration::from_secs(10), |l| l.starts_with("{\"command\""))
        .unwrap_or_else(|| panic!("no command printed; hub:\n{}", hub.stderr()));
    let printed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed, serde_json::json!({"command": command, "id": id}));
    wait_stderr(
        &hub,
        &format!("command {id} for rover: Delivered"),
        Duration::from_secs(10),
    );
}
