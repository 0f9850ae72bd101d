"""python -m udphub: send JPEG files or one JSON message to a hub from a shell.

    python -m udphub send --jpeg FILE [FILE ...] --hub HOST:PORT [--protocol framed] [--count N]
    python -m udphub msg --hub HOST:PORT JSON

Prints one line per frame ("FILE: delivered in 1.2 ms") and a summary. Exit codes: 0 when
every frame was delivered (tcp: written) or the message answered, 1 when any frame was
lost, rejected or stale or the message got no answer or an error, 2 for bad arguments.
"""

import argparse
import json
import sys

from . import PROTOCOLS, Error, ImageSender, MsgSender, TimeoutError


def _send(args, parser):
    frames = []
    for path in args.jpeg:
        try:
            with open(path, "rb") as f:
                frames.append((path, f.read()))
        except OSError as e:
            parser.error(f"cannot read {path}: {e.strerror}")
    try:
        sender = ImageSender(args.hub, name=args.name, protocol=args.protocol,
                             chunk_size=args.chunk_size, timeout=args.timeout)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    except Error as e:  # a TCP hub that refuses the connection
        print(f"udphub: {e}", file=sys.stderr)
        return 1
    ok = failed = 0
    with sender:
        for n in range(args.count * len(frames)):
            path, data = frames[n % len(frames)]
            try:
                r = sender.send_jpg(data)
            except (ValueError, TypeError) as e:  # not a JPEG, too large for the protocol
                parser.error(f"{path}: {e}")
            except Error as e:
                failed += 1
                print(f"{path}: lost ({e})", flush=True)
                continue
            good = r.status in ("delivered", "written")
            ok, failed = ok + good, failed + (not good)
            resent = f", {r.resends} chunks sent again" if r.resends else ""
            print(f"{path}: {r.status} in {r.elapsed * 1e3:.1f} ms{resent}", flush=True)
    word = "written" if args.protocol == "tcp" else "delivered"
    print(f"udphub: {ok} of {ok + failed} frames {word} to {sender.hub} ({args.protocol})")
    return 0 if failed == 0 else 1


def _msg(args, parser):
    try:
        json.loads(args.json)
    except ValueError as e:
        parser.error(f"not one JSON value: {e}")
    try:
        sender = MsgSender(args.hub, timeout=args.timeout, retries=args.retries)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    with sender:
        try:
            r = sender.send_json(args.json)
        except ValueError as e:
            parser.error(str(e))
        except (TimeoutError, Error) as e:
            print(f"udphub: {e}", file=sys.stderr)
            return 1
    print(f"get the msg (in {r.rtt * 1e3:.1f} ms)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m udphub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send", help="send JPEG files as frames")
    send.add_argument("--jpeg", nargs="+", required=True, metavar="FILE", help="JPEG files")
    send.add_argument("--hub", required=True, help="HOST:PORT (port 9999, tcp 8002, if left out)")
    send.add_argument("--protocol", choices=PROTOCOLS, default="framed",
                      help="framed (default: survives loss), chunked, single (the seed's UDP "
                           "formats), tcp (the seed's TCP stream)")
    send.add_argument("--count", type=int, default=1, help="send the files this many times")
    send.add_argument("--name", help="source name (1-64 of A-Za-z0-9._-)")
    send.add_argument("--chunk-size", type=int, help="payload bytes per datagram (framed, chunked)")
    send.add_argument("--timeout", type=float, default=1.0, help="seconds per frame (default 1)")
    msg = sub.add_parser("msg", help="send one JSON message")
    msg.add_argument("--hub", required=True, help="HOST:PORT (port 6666 if left out)")
    msg.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for the answer")
    msg.add_argument("--retries", type=int, default=0, help="sends after the first (default 0)")
    msg.add_argument("json", help="the message, as JSON text (e.g. '[0, 0, 0, 1]')")
    args = parser.parse_args(argv)
    if args.command == "send":
        if args.count < 1:
            parser.error(f"--count must be at least 1, not {args.count}")
        return _send(args, send)
    return _msg(args, msg)


if __name__ == "__main__":
    sys.exit(main())
