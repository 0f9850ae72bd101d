"""The seed-style camera of scripts/link_bench.sh: what the seed tutorials' Python senders
do (capture, encode, send, blocking, one frame after the other), with the udphub package's
seed formats, so the link benchmark can put them beside img-client on the same link.

The camera is a ready JPEG (the benchmark's noisy 640x480 q90 scene), "captured" at
``--fps``: each frame gets the wall-clock capture time in a JPEG comment right after SOI,
``udphub-capture-us=<µs since the Unix epoch>``, which the hub's ``--frame-log`` reports as
``capture_us`` (the seed formats have no header of their own to carry it). As with a real
camera read by a blocking loop, a frame is captured only when the previous send returned:
there is never a queue at the sender (a slow send means fewer, not older, frames).

Prints one JSON object on stdout at the end: frames sent, delivered (the hub answered),
written (tcp: handed to the kernel, which is not a delivery) and lost (no answer in time).
"""

import argparse
import json
import struct
import sys
import time

from udphub import FrameLost, ImageSender


def stamped(jpeg, capture_us):
    """``jpeg`` with a COM segment carrying ``capture_us`` right after its SOI marker."""
    payload = b"udphub-capture-us=%d" % capture_us
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hub", required=True, help="host:port of the hub's image (or tcp) port")
    p.add_argument("--protocol", choices=("chunked", "single", "tcp"), required=True)
    p.add_argument("--jpeg", required=True, help="the frame to send (a JPEG file)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds a frame may take")
    args = p.parse_args()
    if not (args.fps > 0 and args.seconds > 0):
        sys.exit("link_bench_sender: --fps and --seconds must be positive")
    with open(args.jpeg, "rb") as f:
        jpeg = f.read()
    if jpeg[:2] != b"\xff\xd8":
        sys.exit(f"link_bench_sender: {args.jpeg} is not a JPEG")

    counts = {"sent": 0, "delivered": 0, "written": 0, "lost": 0}
    period = 1.0 / args.fps
    end = time.monotonic() + args.seconds
    due = time.monotonic()
    with ImageSender(args.hub, protocol=args.protocol, timeout=args.timeout) as sender:
        while time.monotonic() < end:
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            # never a burst to catch up after a slow send
            due = max(due + period, time.monotonic())
            frame = stamped(jpeg, time.time_ns() // 1000)
            counts["sent"] += 1
            try:
                result = sender.send_jpg(frame)
            except FrameLost:
                counts["lost"] += 1
                continue
            if result.status == "written":
                counts["written"] += 1
            elif result.delivered:
                counts["delivered"] += 1
            else:
                counts["lost"] += 1
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
