"""The bytes on the wire, and nothing else: udphub's framed format and the seed formats,
as pure functions (no sockets, no clock) that the tests check against literal bytes.

The Rust hub is the reference: ``src/wire/framed.rs``, ``src/wire/seed_udp.rs``,
``src/wire/seed_tcp.rs`` and ``src/wire/seed_msg.rs`` describe the same formats.

Framed (all integers little-endian): every datagram starts ``magic 4s = b"UHFR", version B
= 1, kind B (0 data, 1 ack, 2 nack), flags H, stream I, frame I``. Data adds ``index H,
count H, length I, ts_us Q`` and the chunk's payload (every chunk but the last carries
``ceil(length / count)`` bytes); the hub answers the last chunk and any chunk flagged
``POLL``. An ack adds ``status B, 3 pad, ts_us Q`` (0 delivered, 1 rejected, 2 stale; the
timestamp of the datagram that drew it), a nack ``received H, n H`` then ``n`` missing
ranges ``start H, len H``. Chunk 0 flagged ``CAPTURED`` carries, after the name,
``capture_us Q, offset_us q, offset_err_us I, quality B, 3 pad`` (when the frame was
captured, wall clock µs; the sender's estimate of hub clock - its clock and its error;
the JPEG quality, 0 unknown); a datagram flagged ``CAPTURED`` or ``CLOCK`` of at least 36
bytes gets an ack flagged ``HUB_TIME``, followed by ``hub_us Q``: the hub's wall clock.

Seed UDP images: one datagram holding the whole JPEG ("single"), or a length header
``struct.pack('l', n)`` (8 bytes little-endian on 64-bit Linux; 4 bytes on Windows, also
accepted by the hub) followed by the JPEG in 1024-byte datagrams, ``range(n // 1024 + 1)``,
so the last is short and *empty* when ``n`` is a multiple of 1024 ("chunked"). The hub
answers each intact frame ``get message!!!``. Seed TCP: ``str(n).ljust(16)`` then the JPEG,
no answer. Seed messages: ``json.dumps(value).encode()`` in one datagram, answered ``get the
msg`` (or a short ``error: ...``).
"""

import struct
from collections import namedtuple

# --- framed ---------------------------------------------------------------------------
MAGIC = b"UHFR"
VERSION = 1
KIND_DATA, KIND_ACK, KIND_NACK = 0, 1, 2
#: Data flag: answer this datagram now (set on the last datagram of every batch).
POLL = 1
#: Data flag: the sender's name follows the header (``name_len B`` + the name), on chunk 0.
NAMED = 2
#: Data flag: the capture extension (``CAPTURED_EXT``) follows the name, on chunk 0.
CAPTURED = 4
#: Data flag: put the hub's clock into the ack.
CLOCK = 8
#: Ack flag: the hub's wall clock (``hub_us Q``) follows the 28 bytes.
HUB_TIME = 1
#: capture_us, offset_us, offset_err_us, quality, 3 pad: 24 bytes.
CAPTURED_EXT = struct.Struct("<QqIB3x")
#: ``offset_us`` when the sender has no estimate of the hub's clock yet.
NO_OFFSET = -(1 << 63)
#: An ack with the hub's clock: the 28 bytes and ``hub_us Q``.
TIMED_ACK_LEN = 36
DATA = struct.Struct("<4sBBHIIHHIQ")  # 32 bytes, then the payload
ACK = struct.Struct("<4sBBHIIB3xQ")  # 28 bytes
NACK = struct.Struct("<4sBBHIIHH")  # 20 bytes, then n x RANGE
RANGE = struct.Struct("<HH")
PREFIX = struct.Struct("<4sBBHII")  # the 16 bytes every kind starts with
#: Default payload per datagram: a datagram fits a 1500-byte MTU with IP and UDP headers.
FRAMED_CHUNK = 1400
#: The largest payload per framed datagram the hub accepts.
FRAMED_MAX_CHUNK = 65_000
#: A frame has at most this many chunks (``count`` is 16 bits).
FRAMED_MAX_CHUNKS = 0xFFFF
#: Ack status codes, by their names in the results.
STATUSES = ("delivered", "rejected", "stale")

Ack = namedtuple("Ack", "stream frame status ts_us hub_us", defaults=(None,))
Nack = namedtuple("Nack", "stream frame received missing")  # missing: [(start, length)]

# --- seed -----------------------------------------------------------------------------
#: The seed image server's reply to every intact frame.
IMG_ACK = b"get message!!!"
#: The seed message server's reply to every valid message.
MSG_ACK = b"get the msg"
#: The hub's reply to a valid message it could not write to its ``--msg-log``.
MSG_NOT_RECORDED = b"error: the hub could not record the message"
#: Every error reply of the hub starts with this.
ERROR_PREFIX = b"error: "
#: The seed chunked client's datagram size.
SEED_CHUNK = 1024
#: The largest UDP payload over IPv4: the largest "single" frame and message.
MAX_UDP_PAYLOAD = 65_507
#: Width of the seed TCP length header.
TCP_HEADER_LEN = 16


def chunk_plan(length, chunk_size):
    """``(count, size)`` for a frame of ``length`` bytes: ``count`` chunks, each but the last
    of ``size = ceil(length / count)`` bytes (so chunks come out even, as the hub expects)."""
    count = max(1, -(-length // chunk_size))
    return count, -(-length // count)


def data_header(stream, frame, index, count, length, ts_us, poll=False, name=None,
                captured=None, clock=False):
    """The 32-byte header of data chunk ``index`` of ``count``; with ``name`` (a checked
    source name), flagged ``NAMED`` and followed by ``name_len B`` and the name; with
    ``captured`` (``(capture_us, offset_us, offset_err_us, quality)``; ``offset_us`` may be
    ``NO_OFFSET``), flagged ``CAPTURED`` and followed by ``CAPTURED_EXT`` after the name;
    with ``clock``, flagged ``CLOCK`` (the hub puts its clock into the ack)."""
    flags = (POLL if poll else 0) | (NAMED if name else 0) | (CAPTURED if captured else 0) \
        | (CLOCK if clock else 0)
    header = DATA.pack(MAGIC, VERSION, KIND_DATA, flags, stream, frame,
                       index, count, length, ts_us & 0xFFFF_FFFF_FFFF_FFFF)
    if name:
        raw = name.encode("ascii")
        header += bytes([len(raw)]) + raw
    if captured:
        capture_us, offset_us, err_us, quality = captured
        header += CAPTURED_EXT.pack(capture_us, offset_us, min(err_us, 0xFFFF_FFFF), quality)
    return header


def parse_reply(datagram):
    """An ``Ack`` or ``Nack`` from the hub, or ``None`` for anything else (another format,
    a data datagram, a truncated or unknown reply: a sender ignores those)."""
    if len(datagram) < PREFIX.size:
        return None
    magic, version, kind, flags, stream, frame = PREFIX.unpack_from(datagram)
    if magic != MAGIC or version != VERSION:
        return None
    if kind == KIND_ACK and len(datagram) >= ACK.size:
        status, ts_us = ACK.unpack_from(datagram)[6:8]
        hub_us = None
        if flags & HUB_TIME and len(datagram) >= TIMED_ACK_LEN:
            (hub_us,) = struct.unpack_from("<Q", datagram, ACK.size)
        if status < len(STATUSES):
            return Ack(stream, frame, STATUSES[status], ts_us, hub_us)
    elif kind == KIND_NACK and len(datagram) >= NACK.size:
        received, n = NACK.unpack_from(datagram)[6:8]
        end = NACK.size + RANGE.size * n
        if len(datagram) >= end:
            missing = list(RANGE.iter_unpack(datagram[NACK.size:end]))
            return Nack(stream, frame, received, missing)
    return None


# Framed messages (udphub's own message format, beside the seed one): name, run id and
# sequence number in every message, so a resend is recorded once; see the README.
MSG_MAGIC = b"UHFM"
MSG_HEADER = struct.Struct("<4sBBHIQB")  # 21 bytes, then the name, [ack Q], the JSON
MSG_REPLY = struct.Struct("<4sBBBBIQ")  # 20 bytes (the pad byte is the reply's flags)
MSG_COMMAND = struct.Struct("<Q")  # after a reply flagged REPLY_COMMAND: the id, then JSON
MSG_PAD = struct.Struct("<H")  # after the ack of a message flagged MSG_PADDED, then the pad
#: Message flag: the sender takes commands; an ``ack Q`` (newest command id taken) follows
#: the name.
MSG_COMMANDS = 1
#: Message flag (with MSG_COMMANDS): ``pad H`` and that many ignored bytes follow the ack.
MSG_PADDED = 2
#: Reply flag: a command follows (``id Q`` and its JSON).
REPLY_COMMAND = 1
#: Reply flag: a command waits for a message of at least ``need I`` bytes (the hub never
#: answers an unauthenticated sender with more bytes than it sent).
REPLY_WAITING = 2
MSG_NEED = struct.Struct("<I")
#: A framed reply's statuses, by number.
MSG_STATUSES = ("recorded", "duplicate", "invalid", "not recorded")


def framed_message(run, seq, name, json_bytes, ack=None, length=0):
    """A framed message; with ``ack`` (the newest command id received, 0 for none) flagged
    ``MSG_COMMANDS``: the sender takes commands, and ``length`` pads the message to at least
    that many bytes (a waiting command's ``need``)."""
    raw = name.encode("ascii")
    base = MSG_HEADER.size + len(raw) + len(json_bytes)
    if ack is None:
        return MSG_HEADER.pack(MSG_MAGIC, VERSION, 0, 0, run, seq, len(raw)) + raw + json_bytes
    base += MSG_COMMAND.size
    pad = None
    if length > base:
        pad = min(max(0, length - base - MSG_PAD.size), 0xFFFF)
    flags = MSG_COMMANDS | (MSG_PADDED if pad is not None else 0)
    out = MSG_HEADER.pack(MSG_MAGIC, VERSION, 0, flags, run, seq, len(raw)) + raw
    out += MSG_COMMAND.pack(ack)
    if pad is not None:
        out += MSG_PAD.pack(pad) + b" " * pad
    return out + json_bytes


def parse_message_reply(datagram):
    """``(run, seq, status, command, need)`` of a framed message reply (``command``: ``None``
    or ``(id, json_bytes)``; ``need``: the length a message must have to get a waiting
    command, else 0), or ``None`` for anything else."""
    if len(datagram) < MSG_REPLY.size:
        return None
    magic, version, kind, status, flags, run, seq = MSG_REPLY.unpack_from(datagram)
    if magic != MSG_MAGIC or version != VERSION or kind != 1 or status >= len(MSG_STATUSES):
        return None
    command, need = None, 0
    if flags == REPLY_COMMAND:
        if len(datagram) < MSG_REPLY.size + MSG_COMMAND.size:
            return None
        (cid,) = MSG_COMMAND.unpack_from(datagram, MSG_REPLY.size)
        command = (cid, datagram[MSG_REPLY.size + MSG_COMMAND.size:])
    elif flags == REPLY_WAITING:
        if len(datagram) != MSG_REPLY.size + MSG_NEED.size:
            return None
        (need,) = MSG_NEED.unpack_from(datagram, MSG_REPLY.size)
    elif flags != 0 or len(datagram) != MSG_REPLY.size:
        return None
    return run, seq, MSG_STATUSES[status], command, need


def seed_length_header(length):
    """``struct.pack('l', length)`` as on 64-bit Linux: 8 bytes, little-endian."""
    return struct.pack("<q", length)


def seed_chunks(data, chunk=SEED_CHUNK):
    """The data datagrams exactly as the seed client slices them (``range(n // chunk + 1)``:
    the last is empty when ``len(data)`` is a multiple of ``chunk``)."""
    view = memoryview(data)
    return [view[chunk * i:chunk * (i + 1)] for i in range(len(data) // chunk + 1)]


def tcp_header(length):
    """``str(length).ljust(16).encode()``: the seed TCP stream's length header."""
    header = str(length).ljust(TCP_HEADER_LEN).encode("ascii")
    if len(header) != TCP_HEADER_LEN:
        raise ValueError(f"a length of {length} does not fit the 16-byte header")
    return header


def is_complete_jpeg(data):
    """Starts with SOI (``FF D8``) and ends with EOI (``FF D9``): what the hub checks first."""
    return len(data) >= 4 and data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
