"""``MsgSender``: JSON values to a udphub hub's message port, in the seed format (one
``json.dumps(value)`` per datagram, each answered ``get the msg``) or in udphub's framed
message format (``protocol="framed"``: a name, a run id and a sequence number per message,
so a resend is recorded once, and commands from the hub come back in the replies).

The seed format has no message id, so a resent message may be logged twice by the hub:
there ``retries`` is 0 unless asked for; framed messages are resent 3 times by default.
Every wait is bounded by ``timeout``.
"""

import json
import random
import socket
import time
from dataclasses import dataclass

from . import wire
from ._common import (DEFAULT_PORTS, ClosesOnExit, check_int, check_name, check_timeout,
                      parse_hub, resolve)
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

    ``protocol``: ``"seed"`` (the default, what a seed server takes) or ``"framed"``: every
    message carries ``name`` (default: this host's name, made valid), a random run id and a
    sequence number, and the hub records it exactly once however often it is resent
    (``retries`` defaults to 3 there). With ``on_command`` (framed only), the sender tells the
    hub it takes commands: each command sent to this source (``hub --mqtt``'s
    ``PREFIX/<name>/command``, or ``POST /api/sources/<name>/command``) arrives in the reply
    to a later message and ``on_command(value, command_id)`` is called once per command, in
    order, inside that ``send``.

    ``send`` returns a ``MsgResult`` or raises ``MessageLost`` (a ``udphub.TimeoutError``)
    when no answer came, ``NotRecorded`` when the hub could not write it to its log,
    ``HubError`` for any other ``error: ...`` answer (framed: a message the hub called
    invalid), ``ValueError``/``TypeError`` for a value JSON cannot carry (NaN, a set) or a
    datagram over 65507 bytes.
    """

    def __init__(self, hub, timeout=1.0, retries=None, protocol="seed", name=None,
                 on_command=None):
        self._sock = None
        self.timeout = check_timeout(timeout)
        if protocol not in ("seed", "framed"):
            raise ValueError(f"protocol {protocol!r}: use 'seed' or 'framed'")
        self.protocol = protocol
        if on_command is not None and protocol != "framed":
            raise ValueError("on_command needs protocol='framed' (the seed format has no "
                             "commands)")
        if on_command is not None and not callable(on_command):
            raise TypeError("on_command must be callable: on_command(value, command_id)")
        self.on_command = on_command
        self.name = check_name(name) if name is not None else host_name()
        if retries is None:
            retries = 3 if protocol == "framed" else 0
        self.retries = check_int(retries, "retries", 0, 100)
        self._run = random.getrandbits(32)
        self._seq = 0
        self._command_ack = 0
        self._need = 0  # a waiting command's message length (the hub said so)
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
        if self.protocol == "framed":
            return self._send_framed(payload)
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

    def _send_framed(self, json_bytes):
        self._seq += 1
        ack = self._command_ack if self.on_command is not None else None
        datagram = wire.framed_message(self._run, self._seq, self.name, json_bytes, ack,
                                       self._need if ack is not None else 0)
        if len(datagram) > wire.MAX_UDP_PAYLOAD:
            raise ValueError(f"a {len(json_bytes)}-byte message does not fit in one UDP "
                             f"datagram (at most {wire.MAX_UDP_PAYLOAD} bytes with its header)")
        for attempt in range(1, self.retries + 2):
            self._sock.send(datagram)
            sent = time.monotonic()
            until = sent + self.timeout
            while True:
                got = self._answer(until)
                if got is None:
                    break
                reply = wire.parse_message_reply(got)
                if reply is None:
                    continue  # not a framed reply: not an answer
                run, seq, status, command, need = reply
                if (run, seq) != (self._run, self._seq):
                    continue  # a late answer to an earlier message (or not the hub's)
                # a command only from the answer to this message, as the Rust sender: one
                # that names neither this run nor this message is not taken
                if command is not None:
                    self._take_command(*command)
                self._need = need  # pad the next message so the command fits its reply
                if status in ("recorded", "duplicate"):
                    return MsgResult(time.monotonic() - sent, attempt, len(json_bytes))
                if status == "not recorded":
                    raise NotRecorded("error: the hub did not record the message "
                                      "(its log failed, or this sender is over its budget)")
                raise HubError(f"error: the hub called message {seq} invalid "
                               "(not one JSON value)")
        raise MessageLost(f"no answer from {self.hub} within {self.timeout:g} s"
                          f" ({self.retries + 1} sends): is the hub running, and is that its "
                          "message port?")

    def _take_command(self, command_id, json_bytes):
        """Run ``on_command`` once per command id (the hub repeats a command until a message
        acks it: replies can be lost)."""
        if self.on_command is None or command_id <= self._command_ack:
            return
        self._command_ack = command_id
        try:
            value = json.loads(json_bytes.decode("utf-8"))
        except ValueError:
            return  # the hub sends one JSON value; anything else is not a command
        self.on_command(value, command_id)

    def _answer(self, until):
        """The hub's next datagram before ``until``, or None."""
        while True:
            got = self._sock.recv(until)
            if got is None or got[1]:
                return got and got[0]


def host_name():
    """This host's name made a valid source name (as the Rust clients' default): characters
    outside ``A-Z a-z 0-9 . _ -`` become ``-``, at most 64, ``device`` if nothing is left."""
    cleaned = "".join(c if (c.isascii() and (c.isalnum() or c in "._-")) else "-"
                      for c in socket.gethostname())[:64]
    return cleaned if cleaned not in ("", ".", "..") else "device"
