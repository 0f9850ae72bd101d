"""``MsgSender``: JSON values to a udphub hub's message port in the seed format (one
``json.dumps(value)`` per datagram), each answered ``get the msg``.

The seed format has no message id, so a resent message may be logged twice by the hub:
``retries`` is 0 unless asked for. Every wait is bounded by ``timeout``.
"""

import json
import socket
import time
from dataclasses import dataclass

from . import wire
from ._common import DEFAULT_PORTS, ClosesOnExit, check_int, check_timeout, parse_hub, resolve
from ._link import DatagramLink
from .errors import HubError, MessageLost, NotRecorded


@dataclass(frozen=True)
class MsgResult:
    """A message the hub answered ``get the msg``: ``rtt`` seconds from the last send to
    the answer, ``attempts`` sends it took (1 unless retried), ``size`` bytes."""

    rtt: float
    attempts: int
    size: int

    @property
    def delivered(self):
        return True


class MsgSender(ClosesOnExit):
    """Send JSON values to a hub::

        msgs = udphub.MsgSender("192.168.1.10:6666")
        msgs.send([0, 0, 0, 1])

    ``hub``: ``"HOST:PORT"`` or ``"HOST"`` (port 6666), ``"[IPv6]:PORT"`` or a tuple.
    ``timeout``: seconds to wait for each answer (default 1.0); ``retries``: sends after
    the first when no answer comes (default 0; a resent message may be logged twice).

    ``send`` returns a ``MsgResult`` or raises ``MessageLost`` (a ``udphub.TimeoutError``)
    when no answer came, ``NotRecorded`` when the hub could not write it to its log,
    ``HubError`` for any other ``error: ...`` answer, ``ValueError``/``TypeError`` for a value
    JSON cannot carry (NaN, a set) or a datagram over 65507 bytes.
    """

    def __init__(self, hub, timeout=1.0, retries=0):
        self._sock = None
        self.timeout = check_timeout(timeout)
        self.retries = check_int(retries, "retries", 0, 100)
        host, port = parse_hub(hub, DEFAULT_PORTS["msg"])
        self.hub = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        family, sockaddr = resolve(host, port, socket.SOCK_DGRAM)
        self._sock = DatagramLink(family, sockaddr, self.hub)

    def send(self, value):
        """Send ``value`` as ``json.dumps(value)`` (what the seed client sends)."""
        try:
            text = json.dumps(value, allow_nan=False)
        except ValueError as e:
            raise ValueError(f"cannot send {value!r} as JSON: {e}") from None
        except TypeError as e:
            raise TypeError(f"cannot send a {type(value).__name__} as JSON: {e}") from None
        return self._send(text.encode("utf-8"))

    def send_json(self, text):
        """Send JSON text unchanged (big numbers and key order kept), after checking it is
        one JSON value."""
        if not isinstance(text, str):
            raise TypeError(f"send_json takes JSON text (str), not {type(text).__name__}")
        try:
            json.loads(text)
        except ValueError as e:
            raise ValueError(f"not one JSON value: {e}") from None
        return self._send(text.encode("utf-8"))

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self):
        return f"MsgSender({self.hub!r})"

    def _send(self, payload):
        if self._sock is None:
            raise ValueError("this MsgSender is closed")
        if len(payload) > wire.MAX_UDP_PAYLOAD:
            raise ValueError(f"a {len(payload)}-byte message does not fit in one UDP datagram "
                             f"(at most {wire.MAX_UDP_PAYLOAD} bytes)")
        self._sock.drain()
        for attempt in range(1, self.retries + 2):
            self._sock.send(payload)
            sent = time.monotonic()
            reply = self._answer(sent + self.timeout)
            if reply is None:
                continue
            if reply == wire.MSG_ACK:
                return MsgResult(time.monotonic() - sent, attempt, len(payload))
            text = reply.decode("utf-8", "replace")
            if reply == wire.MSG_NOT_RECORDED:
                raise NotRecorded(text)
            if reply.startswith(wire.ERROR_PREFIX):
                raise HubError(text)
            raise HubError(f"unexpected answer {text!r} (is {self.hub} a udphub message port?)")
        raise MessageLost(f"no answer from {self.hub} within {self.timeout:g} s"
                          + (f" ({self.retries + 1} sends)" if self.retries else "")
                          + ": is the hub running, and is that its message port?")

    def _answer(self, until):
        """The hub's next datagram before ``until``, or None."""
        while True:
            got = self._sock.recv(until)
            if got is None or got[1]:
                return got and got[0]
