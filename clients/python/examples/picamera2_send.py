#!/usr/bin/env python3
"""Send a Raspberry Pi camera to a udphub hub with picamera2 (not run in the tests: it
needs a camera).

    python3 picamera2_send.py --hub PC_IP:9999                 # the Pi's hardware MJPEG encoder
    python3 picamera2_send.py --hub PC_IP:9999 --encoder opencv --quality 80

``--encoder mjpeg`` (default) lets the Pi's hardware encoder make the JPEGs
(``MJPEGEncoder``) and sends each one unchanged: no OpenCV, no numpy, little CPU.
Frames come from the encoder's thread; the sender thread always takes the newest one, so a
slow link drops frames on the Pi instead of falling behind. ``--encoder opencv`` takes
arrays (``capture_array``) and encodes them with ``send_image`` (needs
``pip install 'udphub[image]'``), for programs that look at or draw on the frame first.

picamera2 comes with Raspberry Pi OS (``sudo apt install python3-picamera2``); make the
virtual environment with ``--system-site-packages`` to see it.
"""

import argparse
import io
import socket
import threading

import udphub
from picamera2 import Picamera2


class LatestFrame(io.BufferedIOBase):
    """What picamera2's FileOutput writes each JPEG to: keeps only the newest."""

    def __init__(self):
        self.frame = None
        self.changed = threading.Condition()

    def write(self, buf):
        with self.changed:
            self.frame = bytes(buf)
            self.changed.notify()
        return len(buf)

    def take(self, timeout=2.0):
        with self.changed:
            self.changed.wait_for(lambda: self.frame is not None, timeout)
            frame, self.frame = self.frame, None
            return frame


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hub", required=True, help="the hub's HOST:PORT (image port, 9999)")
    p.add_argument("--name", default=socket.gethostname().split(".")[0])
    p.add_argument("--encoder", choices=["mjpeg", "opencv"], default="mjpeg")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--quality", type=int, default=80, help="JPEG quality with --encoder opencv")
    args = p.parse_args()

    picam2 = Picamera2()
    size = (args.width, args.height)
    sender = udphub.ImageSender(args.hub, name=args.name)  # framed: survives a lossy Wi-Fi
    sent = lost = 0
    try:
        if args.encoder == "mjpeg":
            from picamera2.encoders import MJPEGEncoder
            from picamera2.outputs import FileOutput

            picam2.configure(picam2.create_video_configuration(main={"size": size}))
            latest = LatestFrame()
            picam2.start_recording(MJPEGEncoder(), FileOutput(latest))
            next_frame = latest.take
        else:
            # "RGB888" is B, G, R in memory: the order OpenCV (and send_image) expects
            picam2.configure(picam2.create_video_configuration(
                main={"size": size, "format": "RGB888"}))
            picam2.start()
            next_frame = picam2.capture_array
        while True:
            frame = next_frame()
            if frame is None:
                continue  # no frame from the encoder within 2 s: ask again
            try:
                if args.encoder == "mjpeg":
                    delivered = sender.send_jpg(frame).delivered
                else:
                    delivered = sender.send_image(frame, quality=args.quality).delivered
            except udphub.FrameLost:
                delivered = False  # the hub did not answer within a second: go on
            sent, lost = sent + delivered, lost + (not delivered)
            if (sent + lost) % 100 == 0:
                print(f"{sent} frames delivered, {lost} lost", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if args.encoder == "mjpeg":
            picam2.stop_recording()
        else:
            picam2.stop()
        sender.close()
    print(f"{sent} frames delivered, {lost} lost")


if __name__ == "__main__":
    main()
