#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Stand-in for the seed's chunked udp_server.py, for img-client's integration tests.

The receive loop is the seed server's, unchanged: receive the struct.calcsize('l') header
with recvfrom, then recvfrom(1024) until the announced length is reached (exactly as the
seed counts it), then reply "get message!!!". Only OpenCV is left out (no cv2 here: instead
of decoding and showing the frame it checks the JPEG start and end markers), and it adds
what a test needs:
  - it binds --port (0 by default: the OS chooses) and prints the bound port on its first
    stdout line, flushed, so the test can read it;
  - it exits 0 after --frames frames, printing "standin: received N frames";
  - a socket timeout, so it can never hang a test: it exits 2 when nothing arrives for
    --timeout seconds.
Uses only the standard library (socket, struct, argparse, sys).
"""

import argparse
import socket
import struct
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--frames", type=int, default=1, help="exit after this many frames")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="exit 2 when nothing arrives for this many seconds")
    args = p.parse_args()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args.host, args.port))
    s.settimeout(args.timeout)
    print(s.getsockname()[1], flush=True)

    frames = 0
    bad = 0
    try:
        while frames < args.frames:
            # --- the seed server's loop (udp_server.py, receive_img) ---
            fhead_size = struct.calcsize('l')
            buf, addr = s.recvfrom(fhead_size)
            if buf:
                data_size = struct.unpack('l', buf)[0]
                recvd_size = 0
                data_total = b''
                while not recvd_size == data_size:
                    if data_size - recvd_size > 1024:
                        data, addr = s.recvfrom(1024)
                        recvd_size += len(data)
                    else:
                        data, addr = s.recvfrom(1024)
                        recvd_size = data_size
                    data_total += data
                # --- instead of cv2.imdecode + imshow: check the JPEG markers ---
                frames += 1
                ok = data_total[:2] == b'\xff\xd8' and data_total[-2:] == b'\xff\xd9'
                if not ok:
                    bad += 1
                print("standin: frame %d: %d bytes announced, %d received, jpeg markers %s"
                      % (frames, data_size, len(data_total), "ok" if ok else "BAD"),
                      flush=True)
                reply = "get message!!!"
                s.sendto(reply.encode('utf-8'), addr)
    except socket.timeout:
        print("standin: nothing received for %s s after %d frames" % (args.timeout, frames),
              file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        s.close()
    print("standin: received %d frames (%d with bad JPEG markers)" % (frames, bad), flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
