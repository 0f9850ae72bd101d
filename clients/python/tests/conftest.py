"""A real ``hub`` process for the tests, on OS-chosen loopback ports, and JPEG frames.

The hub binary is ``$UDPHUB_HUB_BIN``, else the repository's ``target/debug/hub`` (``cargo
build --bin hub`` makes it). Every wait is bounded: the start waits for ``hub: ready``, the
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


def hub_binary():
    path = Path(os.environ.get("UDPHUB_HUB_BIN") or REPO / "target" / "debug" / "hub")
    if not path.is_file():
        pytest.fail(f"no hub binary at {path}: run `cargo build --bin hub` or set UDPHUB_HUB_BIN")
    return path


class Hub:
    """``hub --img-port 0 --msg-port 0 --tcp-port 0 --save-dir DIR [extra]``."""

    def __init__(self, save_dir, extra=()):
        self.save_dir = Path(save_dir)
        self.proc = subprocess.Popen(
            [str(hub_binary()), "--img-port", "0", "--msg-port", "0", "--tcp-port", "0",
             "--save-dir", str(self.save_dir), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = queue.Queue()
        self.stdout = []
        self.stderr = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, lines, self.stdout),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, None, self.stderr),
                             daemon=True),
        ]
        for t in self._pumps:
            t.start()
        self.addr = {}
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"hub not ready within {START_TIMEOUT} s: {''.join(self.stderr)}")
            if line is None:
                pytest.fail(f"hub exited at start: {''.join(self.stderr)}")
            if " listening on " in line:  # "hub: img listening on udp 127.0.0.1:PORT"
                words = line.split()
                self.addr[words[1]] = words[-1]
            if line.strip() == "hub: ready":
                break
        self.img, self.msg, self.tcp = self.addr["img"], self.addr["msg"], self.addr["tcp"]

    @staticmethod
    def _pump(stream, lines, keep):
        for line in stream:
            keep.append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)

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

    def stop(self):
        """SIGINT, wait for the exit; returns the stdout (its summary)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=WAIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail("hub did not stop within 10 s of SIGINT")
        for t in self._pumps:  # the last lines may still be in the pipes
            t.join(WAIT_TIMEOUT)
        assert self.proc.returncode == 0, "".join(self.stderr)
        return "".join(self.stdout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_TIMEOUT)


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path / "saved")
    yield h
    h.kill()


@pytest.fixture
def start_hub(tmp_path):
    """Start hubs with extra arguments: ``start_hub("--msg-log", path)``."""
    started = []

    def start(*extra):
        h = Hub(tmp_path / f"saved{len(started)}", extra)
        started.append(h)
        return h

    yield start
    for h in started:
        h.kill()


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
