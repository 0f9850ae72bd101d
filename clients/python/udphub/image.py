"""``ImageSender``: JPEG frames to a udphub hub in any of its four image formats, one call
per frame, blocking, every wait bounded by the sender's ``timeout``.

- ``framed`` (default): udphub's own format. Frames survive loss: the hub says which
  chunks it is missing and only those are sent again, and answers every frame delivered,
  rejected (not a JPEG, too large for the hub) or stale (a newer frame won).
- ``chunked``: the seed tutorial's client (length header, then 1024-byte datagrams). The
  hub answers ``get message!!!``; a lost datagram loses the frame (no resend in the format).
- ``single``: the whole JPEG in one datagram (at most 65507 bytes), same answer.
- ``tcp``: the seed TCP stream (16-byte ASCII length, then the JPEG). The format has no
  answer, so a frame is only ever "written" (handed to the kernel), never "delivered".

Stop-and-wait: ``send_jpg`` returns when the frame's fate is known. The framed rules
(what to resend, when to probe, when to give up) live in ``udphub.framed``, with no socket;
this module moves their datagrams and keeps the round-trip estimate across frames.
"""

import os
import select
import socket
import time
from dataclasses import dataclass
from typing import Optional

from . import wire
from ._common import (DEFAULT_PORTS, ClosesOnExit, check_int, check_name, check_timeout,
                      jpeg_bytes, parse_hub, resolve)
from ._link import DatagramLink
from .errors import FrameLost, FrameTooLarge, HubUnreachable
from .framed import ClockFilter, FrameTransfer, RttEstimator

PROTOCOLS = ("framed", "chunked", "single", "tcp")


@dataclass(frozen=True)
class SendResult:
    """What became of one frame.

    ``status``: ``"delivered"`` (the hub has it), ``"rejected"`` (framed: the hub refused it,
    do not resend), ``"stale"`` (framed: a newer frame of this sender was delivered first)
    or ``"written"`` (tcp: handed to the kernel; that format has no answer).
    ``rtt``: seconds from sending the datagrams that drew the answer (the frame, or framed's
    last batch of resends) to the answer (None for tcp).
    ``resends``: chunks sent again (framed; 0 otherwise). ``elapsed``: seconds in the call.
    """

    status: str
    protocol: str
    frame: int
    size: int
    rtt: Optional[float]
    resends: int
    elapsed: float
    name: Optional[str] = None

    @property
    def delivered(self):
        """True when the hub said it has the frame."""
        return self.status == "delivered"


class ImageSender(ClosesOnExit):
    """Send JPEG frames to a hub::

        sender = udphub.ImageSender("192.168.1.10:9999")
        result = sender.send_jpg(jpg_bytes)       # or send_jpg(name, jpg) as in imagezmq

    ``hub``: ``"HOST:PORT"``, ``"HOST"`` (the hub's default port for the protocol: 9999 for
    the UDP formats, 8002 for tcp), ``"[IPv6]:PORT"`` or a ``(host, port)`` tuple.
    ``name``: the source's name (1-64 of ``A-Za-z0-9._-``); kept in each result. The framed
    format carries it (the hub shows and saves the stream under the first name it gives);
    the seed formats carry none, so the hub shows their ``ip:port``.
    ``chunk_size``: payload bytes per datagram, framed (default 1400, at most 65000) and
    chunked (default 1024, the seed's) only. ``timeout``: seconds a frame may take, from its
    first datagram to its answer (tcp: to connect and to write it); default 1.0.

    Raises ``FrameLost`` (a ``udphub.TimeoutError``) when a frame is not answered in time,
    ``HubUnreachable`` when a TCP hub refuses or drops the connection or the network is
    down, ``NotAJpeg`` / ``FrameTooLarge`` / ``ValueError`` / ``TypeError`` for bad input.
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, hub, name=None, protocol="framed", chunk_size=None, timeout=1.0):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        self._sock, self._closed = None, False
        self.protocol = protocol
        self.name = check_name(name)
        self.timeout = check_timeout(timeout)
        host, port = parse_hub(hub, DEFAULT_PORTS["tcp" if protocol == "tcp" else "img"])
        self.hub = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        #: Frames that went out (delivered or not); the next frame's number.
        self.frames_sent = 0
        #: Answers that came after their frame's timeout or that were not for this sender.
        self.ignored_replies = 0
        if protocol in ("single", "tcp") and chunk_size is not None:
            raise ValueError(f"chunk_size does not apply to protocol {protocol!r}")
        if protocol == "framed":
            self.chunk_size = check_int(chunk_size if chunk_size is not None else wire.FRAMED_CHUNK,
                                        "chunk_size", 1, wire.FRAMED_MAX_CHUNK)
        elif protocol == "chunked":
            self.chunk_size = check_int(chunk_size if chunk_size is not None else wire.SEED_CHUNK,
                                        "chunk_size", 1, wire.MAX_UDP_PAYLOAD)
        else:
            self.chunk_size = None
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        self._family, self._addr = resolve(host, port, kind)
        # framed: a random stream id per sender (a new sender is a new stream to the hub),
        # frame ids from 0, the round-trip estimate carried across frames
        self._stream = int.from_bytes(os.urandom(4), "little")
        self._epoch = time.monotonic()
        self._wall_epoch_us = time.time_ns() // 1000
        self._rtt = RttEstimator()
        self._clock = ClockFilter()
        if protocol == "tcp":
            self._connect()
        else:
            self._sock = DatagramLink(self._family, self._addr, self.hub)

    # --- the public calls -----------------------------------------------------------------
    def send_jpg(self, name_or_jpg, jpg=None, *, captured_at=None, quality=0):
        """Send one JPEG frame: ``send_jpg(jpg)`` or imagezmq's ``send_jpg(name, jpg)``.

        ``jpg``: bytes, bytearray, memoryview or a numpy uint8 array (``cv2.imencode``'s
        buffer), a complete JPEG. Returns a ``SendResult``; raises ``FrameLost`` on timeout.

        ``captured_at``: when the frame was captured, seconds since the Unix epoch (as
        ``time.time()``; default: now); framed carries it, with this sender's estimate of the
        hub's clock, so the hub shows each frame's latency (``/state``, ``--frame-log``).
        ``quality``: the JPEG quality it was encoded at, if known (0: unknown), for the
        hub's page.
        """
        name, jpg = (self.name, name_or_jpg) if jpg is None else (check_name(name_or_jpg), jpg)
        data = jpeg_bytes(jpg)
        if self._closed:
            raise ValueError("this ImageSender is closed")
        self._check_fits(data)
        # a new number for every frame that goes out, answered or not: a framed frame id is
        # never used twice, so the hub cannot mix a lost frame's chunks into the next one
        quality = check_int(quality, "quality", 0, 100)
        if captured_at is None:
            captured_at = time.time()
        elif isinstance(captured_at, bool) or not isinstance(captured_at, (int, float)):
            raise TypeError("captured_at must be seconds since the Unix epoch (a number, as "
                            f"time.time() gives), not {type(captured_at).__name__}")
        elif not 0 <= captured_at < 2 ** 63 / 1e6:
            raise ValueError(f"captured_at must be seconds since the Unix epoch, not {captured_at}")
        captured_us = int(captured_at * 1e6)
        frame = self.frames_sent
        self.frames_sent += 1
        if self.protocol == "framed":
            return self._send_framed(data, frame, name, (captured_us, quality))
        return getattr(self, "_send_" + self.protocol)(data, frame, name)

    def send_image(self, name_or_image, image=None, *, quality=90):
        """Encode a numpy image (BGR or grayscale uint8, as OpenCV gives them) as JPEG at
        ``quality`` (1-100) and send it: ``send_image(image)`` or ``send_image(name, image)``.

        Needs numpy and OpenCV (``pip install 'udphub[image]'``) or simplejpeg; raises
        ``udphub.MissingDependency`` when neither is installed.
        """
        from ._encode import encode_jpeg

        name, image = (None, name_or_image) if image is None else (name_or_image, image)
        captured_at = time.time()
        jpg = encode_jpeg(image, quality)
        if name is None:
            return self.send_jpg(jpg, captured_at=captured_at, quality=quality)
        return self.send_jpg(name, jpg, captured_at=captured_at, quality=quality)

    def close(self):
        """Close the socket; later sends raise ``ValueError``. Closing twice is fine."""
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self):
        return f"ImageSender({self.hub!r}, protocol={self.protocol!r}, name={self.name!r})"

    # --- helpers --------------------------------------------------------------------------
    def _check_fits(self, data):
        """``FrameTooLarge`` when the protocol cannot carry ``data`` (before it is numbered)."""
        if self.protocol == "framed":
            count, _ = wire.chunk_plan(len(data), self.chunk_size)
            if count > wire.FRAMED_MAX_CHUNKS or len(data) > 0xFFFF_FFFF:
                raise FrameTooLarge(
                    f"a {len(data)}-byte frame needs {count} chunks of {self.chunk_size} bytes; "
                    f"the framed format allows {wire.FRAMED_MAX_CHUNKS}: raise chunk_size")
        elif self.protocol == "single" and len(data) > wire.MAX_UDP_PAYLOAD:
            raise FrameTooLarge(
                f"a {len(data)}-byte JPEG does not fit in one UDP datagram (at most "
                f"{wire.MAX_UDP_PAYLOAD} bytes): lower the quality or size, or use "
                f"protocol='framed' or 'chunked'")

    def _lost(self, frame, data, started, why, resends=0):
        elapsed = time.monotonic() - started
        return FrameLost(
            f"frame {frame} ({len(data)} bytes, {self.protocol}) to {self.hub}: {why} within "
            f"{self.timeout:g} s" + (f" ({resends} chunks sent again)" if resends else "")
            + ": is the hub running, and is that its image port?",
            frame=frame, size=len(data), protocol=self.protocol, hub=self.hub,
            resends=resends, elapsed=elapsed)

    # --- framed ---------------------------------------------------------------------------
    def clock_offset(self):
        """framed: ``(offset_us, err_us)``, the estimate of the hub's clock minus this
        machine's from the acks, or ``None`` before the first (or for the seed formats)."""
        return self._clock.estimate(time.monotonic())

    def _send_framed(self, data, frame, name, captured):
        started = time.monotonic()
        transfer = FrameTransfer(self._stream, frame & 0xFFFF_FFFF, data, self.chunk_size,
                                 started + self.timeout, self._rtt, self._epoch, name,
                                 captured=captured, clock=self._clock,
                                 wall_epoch_us=self._wall_epoch_us)
        self.ignored_replies += self._sock.drain()
        now = started
        while transfer.status is None:
            for datagram in transfer.poll_transmit(now):
                self._sock.send(datagram)
            got = self._sock.recv(transfer.poll_timeout())
            now = time.monotonic()
            if got is None:
                transfer.handle_timeout(now)
            else:  # framed answers name their stream and frame: taken from any address
                transfer.handle_datagram(got[0], now)
        self.ignored_replies += transfer.ignored
        if transfer.status == "lost":
            raise self._lost(frame, data, started, transfer.why, transfer.resends)
        return SendResult(transfer.status, "framed", frame, len(data), transfer.rtt,
                          transfer.resends, time.monotonic() - started, name)

    # --- seed UDP -------------------------------------------------------------------------
    def _send_chunked(self, data, frame, name):
        return self._send_seed(data, frame, name,
                               [wire.seed_length_header(len(data))]
                               + wire.seed_chunks(data, self.chunk_size))

    def _send_single(self, data, frame, name):
        return self._send_seed(data, frame, name, [data])

    def _send_seed(self, data, frame, name, datagrams):
        started = time.monotonic()
        deadline = started + self.timeout
        self.ignored_replies += self._sock.drain()
        for datagram in datagrams:
            self._sock.send(datagram)
        while True:
            got = self._sock.recv(deadline)
            if got is None:
                raise self._lost(frame, data, started, f"no {wire.IMG_ACK.decode()!r}")
            reply, from_hub = got
            if from_hub and reply == wire.IMG_ACK:
                now = time.monotonic()
                return SendResult("delivered", self.protocol, frame, len(data), now - started,
                                  0, now - started, name)
            self.ignored_replies += 1

    # --- seed TCP -------------------------------------------------------------------------
    def _connect(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            sock = socket.socket(self._family, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self._addr)
        except socket.timeout:
            sock.close()
            raise HubUnreachable(f"no TCP connection to {self.hub} within {self.timeout:g} s") from None
        except OSError as e:
            sock.close()
            raise HubUnreachable(f"cannot connect to {self.hub} (tcp): {e}") from e
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def _peer_closed(self):
        """The hub sends nothing on this stream, so anything readable means it closed it
        (e.g. its idle timeout, or a restart)."""
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            return bool(readable) and self._sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send_tcp(self, data, frame, name):
        started = time.monotonic()
        if self._sock is None or self._peer_closed():
            self._connect()
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(wire.tcp_header(len(data)) + data)
        except socket.timeout:
            self._sock.close()
            self._sock = None  # the stream is cut mid-frame: the next frame reconnects
            raise self._lost(frame, data, started, "not written") from None
        except OSError as e:
            self._sock.close()
            self._sock = None
            raise HubUnreachable(f"the TCP connection to {self.hub} broke: {e}") from e
        return SendResult("written", "tcp", frame, len(data), None, 0,
                          time.monotonic() - started, name)
