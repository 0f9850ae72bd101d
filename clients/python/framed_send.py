#!/usr/bin/env python3
"""Send JPEG files to a udphub hub in the framed format; Python 3 standard library only.
Usage: framed_send.py HOST:PORT FILE...   Prints one line per file; exit 1 if any was lost."""
import random, socket, struct, sys, time

DATA = struct.Struct('<4sBBHIIHHIQ')  # b'UHFR', version 1, kind 0, flags, stream, frame, index, count, length, ts_us
ACK = struct.Struct('<4sBBHIIB3xQ')   # kind 1: ..., status (0 delivered, 1 rejected, 2 stale), echoed ts_us
NACK = struct.Struct('<4sBBHIIHH')    # kind 2: ..., chunks received, n; then n x '<HH' (start, len) missing
CHUNK = 1400                          # payload per datagram: fits a 1500-byte MTU


def send_frame(sock, hub, stream, frame, data, deadline_s=1.0, probe_s=0.05):
    count = max(1, -(-len(data) // CHUNK))
    size = -(-len(data) // count)     # every chunk but the last carries ceil(length / count) bytes
    pending, deadline = range(count), time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for i in pending:
            ts = int(time.monotonic() * 1e6)
            poll = int(i == pending[-1])  # flag 1 (POLL) on the last of a batch: the hub answers it
            sock.sendto(DATA.pack(b'UHFR', 1, 0, poll, stream, frame, i, count, len(data), ts)
                        + data[i * size:(i + 1) * size], hub)
        pending = []
        sock.settimeout(probe_s)
        try:
            reply = sock.recv(2048)
        except socket.timeout:
            pending = [count - 1]     # nothing heard: resend the last chunk, the hub answers it
            continue
        magic, _, kind, _, s, f = struct.unpack_from('<4sBBHII', reply)
        if magic != b'UHFR' or (s, f) != (stream, frame):
            continue                  # a late reply to an earlier frame
        if kind == 1:
            return ['delivered', 'rejected', 'stale'][ACK.unpack_from(reply)[6]]
        n = NACK.unpack_from(reply)[7]
        ranges = struct.iter_unpack('<HH', reply[NACK.size:NACK.size + 4 * n])
        pending = [start + k for start, length in ranges for k in range(length)]
    return 'lost'


if __name__ == '__main__':
    host, port = sys.argv[1].rsplit(':', 1)
    sock, stream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), random.getrandbits(32)
    results = [send_frame(sock, (host, int(port)), stream, n, open(path, 'rb').read())
               for n, path in enumerate(sys.argv[2:])]
    for path, result in zip(sys.argv[2:], results):
        print(f'{path}: {result}')
    sys.exit(0 if all(r == 'delivered' for r in results) else 1)
