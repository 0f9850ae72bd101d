"""ImageSender against a real hub: every protocol delivers frames byte-identical, a hub
that does not answer ends in an exception within the timeout, bad arguments are refused
with a clear error before anything is sent."""

import socket
import sys
import threading

import pytest

import udphub
from conftest import sized_jpeg

FRAMES = {
    # sizes that hit each format's edges: one chunk, an exact multiple of the chunk size
    # (chunked: the seed's trailing empty datagram), a 67 kB camera frame, several datagrams
    "framed": [5000, 1400, 2800, 66_000, 200_000],
    "chunked": [5000, 20 * 1024, 66_000, 200_000],
    "single": [5000, 30_000, 65_507],
    "tcp": [5000, 66_000, 200_000],
}


@pytest.mark.parametrize("protocol", udphub.PROTOCOLS)
def test_every_protocol_saves_the_frames_byte_identical(hub, protocol):
    frames = [sized_jpeg(n, seed=i) for i, n in enumerate(FRAMES[protocol])]
    address = hub.tcp if protocol == "tcp" else hub.img
    with udphub.ImageSender(address, protocol=protocol, name="cam-1") as sender:
        results = [sender.send_jpg(f) for f in frames]
    want = "written" if protocol == "tcp" else "delivered"
    assert [r.status for r in results] == [want] * len(frames)
    assert [r.frame for r in results] == list(range(len(frames)))
    assert [r.size for r in results] == [len(f) for f in frames]
    assert all(r.name == "cam-1" for r in results)
    assert all((r.rtt is None) == (protocol == "tcp") for r in results)
    assert hub.wait_saved(len(frames)) == sorted(frames)
    # the framed format carries the name: the hub saves the stream under it
    prefix = {"framed": "cam-1-", "tcp": "tcp-"}.get(protocol, "udp-")
    names = [p.name for p in hub.save_dir.glob("*.jpg")]
    assert all(n.startswith(prefix) for n in names), names
    summary = hub.stop()
    assert f"{len(frames)} frames" in summary, summary


def test_imagezmq_style_name_first_and_a_numpy_buffer(hub):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32] = (0, 0, 255)
    ok, jpg_buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    sender = udphub.ImageSender(hub.img)
    result = sender.send_jpg(socket.gethostname().split(".")[0], jpg_buffer)  # as imagezmq
    sender.close()
    assert result.delivered and result.name == socket.gethostname().split(".")[0]
    assert hub.wait_saved(1) == [jpg_buffer.tobytes()]


@pytest.mark.parametrize("protocol", ["framed", "chunked"])
def test_send_image_encodes_a_numpy_image(hub, protocol):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    y, x = np.mgrid[0:480, 0:640]
    image = np.dstack([x % 256, y % 256, (x + y) % 256]).astype(np.uint8)
    with udphub.ImageSender(hub.img, protocol=protocol) as sender:
        result = sender.send_image(image, quality=90)
        named = sender.send_image("cam", image[:, :, 0], quality=50)  # grayscale, name first
    assert result.delivered and named.delivered and named.name == "cam"
    saved = hub.wait_saved(2)
    decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in saved]
    colour = next(d for d in decoded if d.ndim == 3)
    assert colour.shape == image.shape
    assert np.abs(colour.astype(int) - image).mean() < 8  # the same picture, JPEG-close
    grey = next(d for d in decoded if d.ndim == 2)
    assert grey.shape == image.shape[:2]


def test_framed_reports_a_frame_the_hub_refuses(start_hub):
    hub = start_hub("--max-frame-bytes", "10000")
    with udphub.ImageSender(hub.img) as sender:
        assert sender.send_jpg(sized_jpeg(20_000)).status == "rejected"
        assert sender.send_jpg(sized_jpeg(5_000)).status == "delivered"
    assert hub.wait_saved(1) == [sized_jpeg(5_000)]


def finishes(call, within=30.0):
    """Run ``call`` on a thread; what it returned or raised, failing the test if it hangs."""
    box = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as e:  # noqa: B902 (handed back to the test)
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within)
    assert not t.is_alive(), f"still waiting after {within} s"
    return box


@pytest.fixture
def silent_port():
    """A UDP port where nothing answers (bound by the test, never read)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.mark.parametrize("protocol", ["framed", "chunked", "single"])
def test_a_hub_that_does_not_answer_raises_frame_lost(silent_port, protocol):
    sender = udphub.ImageSender(silent_port, protocol=protocol, timeout=0.3)
    box = finishes(lambda: sender.send_jpg(sized_jpeg(5000)))
    err = box.get("error")
    assert isinstance(err, udphub.FrameLost), box
    assert isinstance(err, udphub.TimeoutError) and isinstance(err, TimeoutError)
    assert err.protocol == protocol and err.frame == 0 and err.size == 5000
    assert err.elapsed >= 0.3  # it waited out its timeout, and no longer than the thread did
    assert silent_port in str(err) and "is the hub running" in str(err)
    if protocol == "framed":
        assert err.resends > 0  # it probed before giving up
    # the sender is still usable, and the next frame has a number of its own
    again = finishes(lambda: sender.send_jpg(sized_jpeg(5000))).get("error")
    assert isinstance(again, udphub.FrameLost) and again.frame == 1
    sender.close()


def test_tcp_without_a_hub_is_unreachable():
    s = socket.socket()  # bound, not listening: a connection is refused
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    box = finishes(lambda: udphub.ImageSender(f"127.0.0.1:{port}", protocol="tcp", timeout=1))
    s.close()
    assert isinstance(box.get("error"), udphub.HubUnreachable), box
    assert isinstance(box["error"], ConnectionError)


def test_tcp_reports_a_hub_that_went_away(hub):
    sender = udphub.ImageSender(hub.tcp, protocol="tcp")
    assert sender.send_jpg(sized_jpeg(5000)).status == "written"
    hub.wait_saved(1)
    hub.stop()
    box = finishes(lambda: sender.send_jpg(sized_jpeg(5000)))
    assert isinstance(box.get("error"), udphub.HubUnreachable), box
    sender.close()


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(hub="127.0.0.1:9999", protocol="udp"), ValueError, "expected one of framed"),
    (dict(hub="127.0.0.1:"), ValueError, "is not a number"),
    (dict(hub="127.0.0.1:70000"), ValueError, "1..65535"),
    (dict(hub="::1:9999"), ValueError, "[ADDR]:PORT"),
    (dict(hub=""), ValueError, "HOST:PORT"),
    (dict(hub=9999), TypeError, "HOST:PORT"),
    (dict(hub="no-such-host.invalid:9999"), ValueError, "cannot resolve"),
    (dict(hub="127.0.0.1:9999", timeout=0), ValueError, "above 0"),
    (dict(hub="127.0.0.1:9999", timeout=float("inf")), ValueError, "at most"),
    (dict(hub="127.0.0.1:9999", timeout=float("nan")), ValueError, "above 0"),
    (dict(hub="127.0.0.1:9999", timeout=None), TypeError, "number of seconds"),
    (dict(hub="127.0.0.1:9999", chunk_size=0), ValueError, "chunk_size must be in 1..65000"),
    (dict(hub="127.0.0.1:9999", chunk_size=65_001), ValueError, "1..65000"),
    (dict(hub="127.0.0.1:9999", protocol="single", chunk_size=1024), ValueError, "does not apply"),
    (dict(hub="127.0.0.1:9999", name="my camera"), ValueError, "1 to 64 characters"),
    (dict(hub="127.0.0.1:9999", name="x" * 65), ValueError, "1 to 64 characters"),
])
def test_bad_arguments_are_refused_clearly(kwargs, error, words):
    with pytest.raises(error) as info:
        udphub.ImageSender(**kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("protocol, jpg, error, words", [
    ("framed", "a string", TypeError, "bytes-like"),
    ("framed", [255, 216], TypeError, "bytes-like"),
    ("framed", b"", udphub.NotAJpeg, "empty"),
    ("framed", b"hello, world", udphub.NotAJpeg, "FF D8"),
    ("single", sized_jpeg(65_508), udphub.FrameTooLarge, "protocol='framed' or 'chunked'"),
])
def test_bad_frames_are_refused_before_sending(silent_port, protocol, jpg, error, words):
    with udphub.ImageSender(silent_port, protocol=protocol) as sender:
        with pytest.raises(error) as info:
            sender.send_jpg(jpg)
        assert words in str(info.value)
        assert sender.frames_sent == 0
    assert issubclass(udphub.NotAJpeg, ValueError) and issubclass(udphub.FrameTooLarge, ValueError)


def test_framed_frame_over_65535_chunks(silent_port):
    with udphub.ImageSender(silent_port, chunk_size=1) as sender:
        with pytest.raises(udphub.FrameTooLarge, match="raise chunk_size"):
            sender.send_jpg(sized_jpeg(70_000))


def test_closed_sender_refuses(silent_port):
    sender = udphub.ImageSender(silent_port)
    sender.close()
    sender.close()
    with pytest.raises(ValueError, match="closed"):
        sender.send_jpg(sized_jpeg(1000))


def test_send_image_checks_its_input(silent_port):
    np = pytest.importorskip("numpy")
    pytest.importorskip("cv2")
    with udphub.ImageSender(silent_port) as sender:
        with pytest.raises(ValueError, match="quality must be in 1..100"):
            sender.send_image(np.zeros((8, 8, 3), np.uint8), quality=0)
        with pytest.raises(TypeError, match="uint8"):
            sender.send_image(np.zeros((8, 8, 3), np.float32))
        with pytest.raises(ValueError, match="HxWx3"):
            sender.send_image(np.zeros((8, 8, 4), np.uint8))
        with pytest.raises(TypeError, match="numpy array"):
            sender.send_image(b"\xff\xd8\xff\xd9")


def test_send_image_without_an_encoder_says_what_to_install(silent_port, monkeypatch):
    np = pytest.importorskip("numpy")
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now fails
    monkeypatch.setitem(sys.modules, "simplejpeg", None)
    with udphub.ImageSender(silent_port) as sender:
        with pytest.raises(udphub.MissingDependency, match=r"udphub\[image\]") as info:
            sender.send_image(np.zeros((8, 8, 3), np.uint8))
    assert isinstance(info.value, ImportError)


def test_framed_recovers_through_a_lossy_link(hub, relay):
    """10% loss both ways, duplicates and reordering: every frame delivered, byte-identical,
    by resending what the hub says is missing."""
    link = relay(hub.img, "--loss", "0.1", "--duplicate", "0.05", "--reorder", "0.05",
                 "--seed", "3")
    frames = [sized_jpeg(n, seed=i) for i, n in enumerate([20_000, 66_000, 5_000] * 8)]
    with udphub.ImageSender(link.addr, timeout=10) as sender:
        results = [sender.send_jpg(f) for f in frames]
    assert [r.status for r in results] == ["delivered"] * len(frames)
    assert sum(r.resends for r in results) > 0  # the loss was real, and repaired
    assert hub.wait_saved(len(frames)) == sorted(frames)
    toward_hub = next(l for l in link.stop().splitlines() if "to upstream:" in l)
    assert "dropped 0," not in toward_hub, toward_hub


def test_framed_frames_carry_their_capture_time_and_the_hub_measures_latency(start_hub, tmp_path):
    import json
    import time
    log = tmp_path / "frames.jsonl"
    hub = start_hub("--frame-log", str(log))
    captured = [time.time() - 0.5 + i * 0.01 for i in range(8)]
    with udphub.ImageSender(hub.img, name="cam-t") as sender:
        for i, at in enumerate(captured):
            assert sender.send_jpg(sized_jpeg(3000 + i, seed=i), captured_at=at, quality=75).delivered
        offset = sender.clock_offset()
    # one machine: the estimate of the hub's clock is 0 within its error
    assert offset is not None and abs(offset[0]) <= offset[1] + 1000, offset
    hub.stop()  # the frame log is written out before the hub exits
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert [l["capture_us"] for l in lines] == [int(at * 1e6) for at in captured]
    assert {l["name"] for l in lines} == {"cam-t"} and {l["quality"] for l in lines} == {75}
    # the first frame goes out before any estimate; every later one is synced, and its
    # latency is the half second it was captured before it was sent, plus the path
    assert lines[0]["clock"] == "unsynced" and lines[0]["latency_ms"] is None
    for l in lines[1:]:
        assert l["clock"] == "synced", l
        assert 400 <= l["latency_ms"] <= 10_000, l


def test_captured_at_and_quality_are_checked(silent_port):
    with udphub.ImageSender(silent_port, timeout=0.05) as sender:
        with pytest.raises(TypeError, match="captured_at"):
            sender.send_jpg(sized_jpeg(3000), captured_at="now")
        with pytest.raises(ValueError, match="captured_at"):
            sender.send_jpg(sized_jpeg(3000), captured_at=-1.0)
        with pytest.raises(ValueError, match="quality"):
            sender.send_jpg(sized_jpeg(3000), quality=101)
        assert sender.frames_sent == 0
