"""Argument checks shared by the senders: hub addresses, timeouts, names, JPEG bytes.

Every check raises ``ValueError``/``TypeError`` with a sentence saying what was wrong and
what is expected, before any byte is sent.
"""

import math
import re
import socket

from .errors import NotAJpeg
from .wire import is_complete_jpeg

#: The hub's default ports, per service (``hub --img-port/--msg-port/--tcp-port``).
DEFAULT_PORTS = {"img": 9999, "msg": 6666, "tcp": 8002}
#: A source name: 1 to 64 of ``A-Z a-z 0-9 . _ -`` (the hub's rule for named sources).
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
#: The longest timeout accepted, in seconds: long enough for any link, never infinite.
MAX_TIMEOUT = 3600.0


class ClosesOnExit:
    """``with sender:`` closes the sender on the way out."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_hub(hub, default_port):
    """``(host, port)`` from ``"host:port"``, ``"[v6addr]:port"``, ``"host"`` (the service's
    default port) or a ``(host, port)`` tuple."""
    if isinstance(hub, tuple) and len(hub) == 2:
        host, port = hub
    elif isinstance(hub, str):
        text = hub.strip()
        if not text:
            raise ValueError("hub is empty: expected 'HOST:PORT', e.g. '192.168.1.10:9999'")
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"hub {hub!r}: expected '[IPv6]:PORT'")
            port = rest[1:] if rest else default_port
        elif text.count(":") == 1:
            host, port = text.split(":")
        elif ":" in text:
            raise ValueError(f"hub {hub!r}: write an IPv6 address as '[ADDR]:PORT'")
        else:
            host, port = text, default_port
    else:
        raise TypeError(f"hub must be 'HOST:PORT' or a (host, port) tuple, not {type(hub).__name__}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"hub {hub!r}: port {port!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"hub {hub!r}: port {port} is not in 1..65535")
    if not host:
        raise ValueError(f"hub {hub!r}: no host name")
    return str(host), port


def resolve(host, port, kind):
    """The first address of ``host`` for a ``kind`` (SOCK_DGRAM/SOCK_STREAM) socket, IPv4
    first (the hub binds 127.0.0.1 or 0.0.0.0 by default): ``(family, sockaddr)``."""
    try:
        infos = socket.getaddrinfo(host, port, 0, kind)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve hub host {host!r}: {e}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def check_timeout(timeout, what="timeout"):
    """A finite, positive number of seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(timeout).__name__}")
    if not (0 < timeout <= MAX_TIMEOUT) or math.isnan(timeout):
        raise ValueError(f"{what} must be above 0 and at most {MAX_TIMEOUT:g} s, not {timeout!r}")
    return float(timeout)


def check_int(value, what, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in {low}..{high}, not {value}")
    return value


def check_name(name):
    """``None`` or a valid source name."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if not NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"name {name!r}: use 1 to 64 characters of A-Z a-z 0-9 . _ - "
                         "(not . or ..)")
    return name


def jpeg_bytes(jpg):
    """``jpg`` (bytes, bytearray, memoryview, a numpy uint8 array from ``cv2.imencode``) as
    ``bytes``, checked to be a complete JPEG."""
    if isinstance(jpg, str):
        raise TypeError("jpg must be bytes-like (bytes, bytearray, a numpy uint8 array), not str")
    if isinstance(jpg, bytes):
        data = jpg
    else:
        try:
            view = memoryview(jpg)
        except TypeError:
            raise TypeError(f"jpg must be bytes-like (bytes, bytearray, a numpy uint8 array), "
                            f"not {type(jpg).__name__}") from None
        if view.itemsize != 1:
            raise TypeError(f"jpg must hold bytes (uint8), not items of {view.itemsize} bytes")
        data = view.tobytes()
    if not data:
        raise NotAJpeg("jpg is empty")
    if not is_complete_jpeg(data):
        raise NotAJpeg(f"jpg ({len(data)} bytes, starting {data[:4].hex(' ')}) is not a complete "
                       f"JPEG: it must start with FF D8 and end with FF D9")
    return data
