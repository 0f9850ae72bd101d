"""A real ``hub`` process for the tests, on OS-chosen loopback ports, and JPEG frames.

The hub binary is ``$UDPHUB_HUB_BIN``, else the repository's ``target/debug/hub`` (``cargo
build --bin hub`` makes it); the lossy relay, ``udp-relay``, is the one beside it. Every wait is bounded: the start waits for ``hub: ready``, the
saved frames are waited for by looking at the folder (the hub renames each file into place
complete), the stop waits for the exit after SIGINT.
"""

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 20.0
WAIT_TIMEOUT = 10.0


def hub_binary(name="hub"):
    path = Path(os.environ.get("UDPHUB_HUB_BIN") or REPO / "target" / "debug" / "hub")
    path = path.with_name(name)
    if not path.is_file():
        pytest.fail(f"no {name} binary at {path}: run `cargo build --bin {name}` "
                    f"or set UDPHUB_HUB_BIN to the hub beside it")
    return path


def read_startup(proc, what, ready_line):
    """The lines ``proc`` prints up to ``ready_line`` (at most START_TIMEOUT seconds), and
    the threads that go on collecting its stdout and stderr."""
    lines, stdout, stderr = queue.Queue(), [], []

    def pump(stream, keep, forward):
        for line in stream:
            keep.append(line)
            if forward:
                lines.put(line)
        if forward:
            lines.put(None)

    pumps = [threading.Thread(target=pump, args=(proc.stdout, stdout, True), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, stderr, False), daemon=True)]
    for t in pumps:
        t.start()
    startup = []
    deadline = time.monotonic() + START_TIMEOUT
    while not startup or startup[-1].strip() != ready_line:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            pytest.fail(f"{what} not ready within {START_TIMEOUT} s: {''.join(stderr)}")
        if line is None:
            pytest.fail(f"{what} exited at start: {''.join(stderr)}")
        startup.append(line)
    return startup, stdout, stderr, pumps


class Child:
    """A process started by a test that prints ``ready_line`` once it is listening; its
    output is collected from then on."""

    def __init__(self, argv, ready_line):
        self.what = Path(argv[0]).name
        self.proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.startup, self.stdout, self.stderr, self._pumps = read_startup(
            self.proc, self.what, ready_line)

    def stop(self):
        """SIGINT, wait for the exit (it must be 0); returns the stdout (its summary)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=WAIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"{self.what} did not stop within {WAIT_TIMEOUT} s of SIGINT")
        for t in self._pumps:  # the last lines may still be in the pipes
            t.join(WAIT_TIMEOUT)
        assert self.proc.returncode == 0, "".join(self.stderr)
        return "".join(self.stdout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_TIMEOUT)


class Hub(Child):
    """``hub --img-port 0 --msg-port 0 --tcp-port 0 --save-dir DIR [extra]``."""

    def __init__(self, save_dir, extra=()):
        self.save_dir = Path(save_dir)
        super().__init__([hub_binary(), "--img-port", "0", "--msg-port", "0", "--tcp-port", "0",
                          "--save-dir", self.save_dir, *extra], "hub: ready")
        # "hub: img listening on udp 127.0.0.1:PORT"
        self.addr = {l.split()[1]: l.split()[-1] for l in self.startup if " listening on " in l}
        self.img, self.msg, self.tcp = self.addr["img"], self.addr["msg"], self.addr["tcp"]

    def saved(self):
        """The saved frames' bytes, sorted."""
        return sorted(p.read_bytes() for p in self.save_dir.glob("*.jpg"))

    def wait_saved(self, n):
        """The saved frames once there are ``n`` (fails after WAIT_TIMEOUT seconds)."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        while len(list(self.save_dir.glob("*.jpg"))) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"{n} frames not saved within {WAIT_TIMEOUT} s: "
                            f"{sorted(p.name for p in self.save_dir.iterdir())}")
            time.sleep(0.01)  # polling the condition, with a deadline
        return self.saved()


@pytest.fixture
def children():
    """Processes a test started, killed at its end whatever happened."""
    started = []
    yield started
    for child in started:
        child.kill()


@pytest.fixture
def hub(tmp_path, children):
    children.append(Hub(tmp_path / "saved"))
    return children[-1]


@pytest.fixture
def start_hub(tmp_path, children):
    """Start hubs with extra arguments: ``start_hub("--msg-log", path)``."""
    def start(*extra):
        children.append(Hub(tmp_path / f"saved{len(children)}", extra))
        return children[-1]
    return start


class Relay(Child):
    """``udp-relay --listen 127.0.0.1:0 --upstream ADDR [faults]``: a lossy link to the hub."""

    def __init__(self, upstream, *faults):
        super().__init__([hub_binary("udp-relay"), "--listen", "127.0.0.1:0", "--upstream",
                          upstream, *faults], "udp-relay: ready")
        # "udp-relay: listening on udp 127.0.0.1:PORT -> UPSTREAM"
        self.addr = next(l.split()[4] for l in self.startup if " listening on " in l)


@pytest.fixture
def relay(children):
    """Start relays: ``relay(hub.img, "--loss", "0.1")``."""
    def start(upstream, *faults):
        children.append(Relay(upstream, *faults))
        return children[-1]
    return start


def sized_jpeg(size, seed=0):
    """A real JPEG (OpenCV, noise) of exactly ``size`` bytes: a COM segment after SOI pads
    it, so the hub's check of the coded data still passes."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    base = b""
    for side in (8, 16, 32, 64, 128, 256, 512):
        img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 50])
        if len(buf) + 4 > size:
            break
        base = buf.tobytes()
    assert base, f"no JPEG small enough for {size} bytes"
    pad, segments = size - len(base), []  # pad >= 4: each COM segment is 4..65537 bytes
    while pad:
        n = min(pad, 0xFFFF + 2)
        if 0 < pad - n < 4:
            n = pad - 4
        segments.append(n)
        pad -= n
    body = b"".join(b"\xff\xfe" + (n - 2).to_bytes(2, "big") + b"p" * (n - 4) for n in segments)
    out = base[:2] + body + base[2:]
    assert len(out) == size, (len(out), size)
    return out
