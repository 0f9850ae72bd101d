#!/usr/bin/env python3
"""Python senders' throughput on loopback, in one run against one hub: the udphub package
(framed and chunked), the 47-line stdlib framed sender (framed_send.py) and the seed
tutorial's chunked client (tests/python/seed_sender.py, run as the seed runs it: one
process, stop-and-wait on every frame's ``get message!!!``).

    python bench.py [--frames 2000] [--rounds 3] [--jpeg FILE] [--hub-bin target/debug/hub]

Every sender sends the same ~67 kB JPEG (640x480 q90 with sensor-like noise, made with
OpenCV unless --jpeg is given) ``--frames`` times, one frame at a time; the rounds
alternate between the senders so a busy machine slows them alike. Prints frames/s and MB/s
per sender (the median round) and the hub's summary. A speed figure, not a test.
"""

import argparse
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import udphub  # noqa: E402 (the package beside this file when not installed)


def camera_like_jpeg(target=67_000, width=640, height=480, quality=90):
    """A 640x480 gradient with uniform noise, the amplitude bisected until the JPEG is
    within 3% of ``target`` bytes (as src/media/testjpeg.rs's noisy_pattern_jpeg)."""
    import cv2
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    base = np.dstack([x * 255 // width, y * 255 // height, (x + y) % 256]).astype(np.int16)
    rng = np.random.default_rng(7)
    unit = rng.random((height, width, 3))
    lo, hi, amplitude = 0.0, 255.0, 32.0
    for _ in range(14):
        img = np.clip(base + unit * amplitude, 0, 255).astype(np.uint8)
        jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        off = len(jpg) / target
        if abs(off - 1) <= 0.03:
            break
        lo, hi = (lo, amplitude) if off > 1 else (amplitude, hi)
        amplitude = (lo + hi) / 2
    return jpg


def start_hub(binary):
    proc = subprocess.Popen([binary, "--img-port", "0", "--msg-port", "0", "--no-tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    img = None
    for line in proc.stdout:  # the hub prints its ports, then "hub: ready", at once
        if line.startswith("hub: img listening on udp "):
            img = line.split()[-1]
        if line.strip() == "hub: ready":
            return proc, img
    sys.exit(f"bench: the hub exited at start (exit {proc.wait()})")


def package_sender(protocol):
    def run(hub, jpg, frames):
        with udphub.ImageSender(hub, protocol=protocol, timeout=2.0) as sender:
            start = time.perf_counter()
            for _ in range(frames):
                if not sender.send_jpg(jpg).delivered:
                    sys.exit("bench: a frame was not delivered")
            return time.perf_counter() - start
    return run


def framed_send_py(hub, jpg, frames):
    spec = importlib.util.spec_from_file_location("framed_send", HERE / "framed_send.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    host, port = hub.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stream = int.from_bytes(os.urandom(4), "little")
    start = time.perf_counter()
    for n in range(frames):
        if module.send_frame(sock, (host, int(port)), stream, n, jpg) != "delivered":
            sys.exit("bench: framed_send.py lost a frame")
    elapsed = time.perf_counter() - start
    sock.close()
    return elapsed


def seed_chunked(hub, jpg, frames, path):
    host, port = hub.rsplit(":", 1)
    start = time.perf_counter()  # includes starting the interpreter (~20 ms of the total)
    run = subprocess.run([sys.executable, str(REPO / "tests/python/seed_sender.py"), "chunked",
                          "--host", host, "--port", port, "--file", str(path),
                          "--repeat", str(frames), "--timeout", "2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"bench: the seed client exited {run.returncode} (a lost reply)")
    return elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jpeg", help="the frame to send (default: a ~67 kB one made with OpenCV)")
    p.add_argument("--hub-bin", default=os.environ.get("UDPHUB_HUB_BIN")
                   or str(REPO / "target/debug/hub"))
    args = p.parse_args()
    jpg = Path(args.jpeg).read_bytes() if args.jpeg else camera_like_jpeg()
    path = Path(args.jpeg) if args.jpeg else REPO / "target" / "bench-67k.jpg"
    if not args.jpeg:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(jpg)
    senders = {
        "udphub framed (package)": package_sender("framed"),
        "udphub chunked (package)": package_sender("chunked"),
        "framed_send.py (47-line stdlib)": framed_send_py,
        "seed chunked client": lambda hub, jpg, n: seed_chunked(hub, jpg, n, path),
    }
    hub, img = start_hub(args.hub_bin)
    times = {name: [] for name in senders}
    try:
        for _ in range(args.rounds):
            for name, run in senders.items():
                times[name].append(run(img, jpg, args.frames))
    finally:
        hub.send_signal(signal.SIGINT)
        summary = hub.communicate(timeout=10)[0]
    print(f"{args.frames} frames of {len(jpg)} bytes per round, {args.rounds} rounds, "
          f"stop-and-wait, loopback, Python {sys.version.split()[0]}")
    for name, t in times.items():
        fps = args.frames / statistics.median(t)
        spread = ", ".join(f"{args.frames / x:.0f}" for x in t)
        print(f"  {name:32} {fps:7.0f} frames/s  {fps * len(jpg) / 1e6:6.1f} MB/s  (rounds: {spread})")
    print(summary.strip())


if __name__ == "__main__":
    main()
