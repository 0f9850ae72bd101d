#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Send exactly what the seed UDP clients send, for the hub's integration tests.

The seed clients (udp_client.py, udp_client_1.py, udp_client_2.py of the UDP tutorial)
are reproduced byte for byte; only OpenCV is left out (the frame is read from a file) and
a socket timeout is added so a test can never hang (the seed waits forever).

Modes:
  single   the whole frame in one datagram: s.sendto(data, addr)
  chunked  fhead = struct.pack('l', len(data)), then the range(len(data)//1024+1) loop
  msg      json.dumps(data).encode() (default data [0,0,0,1], as udp_client_2.py)

After each send it waits for the reply with s.recv(1024), prints it decoded as UTF-8 (as
the seed does) and exits 0; it exits 2 if a reply does not come within --timeout seconds.
It prints "seed_sender: local 127.0.0.1:PORT" on stderr so the test knows the source port.
"""

import argparse
import json
import socket
import struct
import sys


def send_single(s, addr, data):
    s.sendto(data, addr)


def send_chunked(s, addr, data, header_format, chunk):
    # The seed client, unchanged apart from the format and chunk being parameters.
    fhead = struct.pack(header_format, len(data))
    s.sendto(fhead, addr)
    for i in range(len(data) // chunk + 1):
        if chunk * (i + 1) > len(data):
            s.sendto(data[chunk * i:], addr)
        else:
            s.sendto(data[chunk * i:chunk * (i + 1)], addr)


def send_msg(s, addr, data):
    data_str = json.dumps(data)
    s.sendto(data_str.encode(), addr)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["single", "chunked", "msg"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--file", help="frame to send (single, chunked)")
    p.add_argument("--header-format", default="l",
                   help="struct format of the length header: 'l' (seed; 8 bytes on "
                        "64-bit Linux) or '<i' (4 bytes, as 'l' on Windows)")
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--json", default="[0,0,0,1]",
                   help="the value to send in msg mode, as JSON text")
    p.add_argument("--repeat", type=int, default=1,
                   help="send this many times, waiting for each reply (stop-and-wait)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for each reply")
    args = p.parse_args()

    addr = (args.host, args.port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(args.timeout)
    print("seed_sender: local %s:%d" % s.getsockname(), file=sys.stderr, flush=True)

    if args.mode in ("single", "chunked"):
        if not args.file:
            p.error("--file is required in %s mode" % args.mode)
        with open(args.file, "rb") as f:
            data = f.read()
    else:
        data = json.loads(args.json)

    for _ in range(args.repeat):
        if args.mode == "single":
            send_single(s, addr, data)
        elif args.mode == "chunked":
            send_chunked(s, addr, data, args.header_format, args.chunk)
        else:
            send_msg(s, addr, data)
        try:
            reply = s.recv(1024)
        except socket.timeout:
            print("seed_sender: no reply within %s s" % args.timeout,
                  file=sys.stderr, flush=True)
            s.close()
            return 2
        print(reply.decode("utf-8"), flush=True)

    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
