"""The wire helpers against literal bytes (the same bytes as the Rust side's tests), no hub."""

import struct

from udphub import wire


def test_data_header_bytes():
    h = wire.data_header(stream=0x01020304, frame=7, index=2, count=3, length=2801,
                         ts_us=0x1122334455667788, poll=True)
    assert h == (b"UHFR" + bytes([1, 0]) + bytes([1, 0]) + bytes([4, 3, 2, 1])
                 + bytes([7, 0, 0, 0]) + bytes([2, 0]) + bytes([3, 0])
                 + bytes([0xF1, 0x0A, 0, 0]) + bytes([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]))
    assert len(h) == 32
    assert wire.data_header(1, 2, 0, 1, 4, 0)[6:8] == b"\x00\x00"  # no POLL flag


def test_chunks_come_out_even():
    assert wire.chunk_plan(2801, 1400) == (3, 934)  # ceil(2801/3): every chunk but the last
    assert wire.chunk_plan(2800, 1400) == (2, 1400)
    assert wire.chunk_plan(1, 1400) == (1, 1)


def test_parses_ack_and_nack():
    ack = b"UHFR" + bytes([1, 1, 0, 0]) + bytes([4, 3, 2, 1]) + bytes([7, 0, 0, 0]) \
        + bytes([2, 0, 0, 0]) + (1234).to_bytes(8, "little")
    assert wire.parse_reply(ack) == wire.Ack(0x01020304, 7, "stale", 1234)
    nack = b"UHFR" + bytes([1, 2, 0, 0]) + bytes([4, 3, 2, 1]) + bytes([7, 0, 0, 0]) \
        + bytes([5, 0, 2, 0]) + bytes([1, 0, 2, 0]) + bytes([9, 0, 1, 0])
    assert wire.parse_reply(nack) == wire.Nack(0x01020304, 7, 5, [(1, 2), (9, 1)])


def test_ignores_what_is_not_an_answer():
    ack = bytearray(wire.ACK.pack(b"UHFR", 1, 1, 0, 1, 2, 0, 0))
    assert wire.parse_reply(bytes(ack)) is not None
    for bad in (b"", b"get message!!!", bytes(ack[:20]), b"UHFX" + bytes(ack[4:]),
                bytes(ack[:4]) + b"\x02" + bytes(ack[5:]),  # version 2
                bytes(ack[:16]) + b"\x03" + bytes(ack[17:]),  # unknown status
                wire.data_header(1, 2, 0, 1, 4, 0) + b"\xff\xd8\xff\xd9",
                wire.NACK.pack(b"UHFR", 1, 2, 0, 1, 2, 0, 3) + b"\x00" * 8):  # 3 ranges, 2 there
        assert wire.parse_reply(bad) is None, bad


def test_seed_formats():
    # struct.pack('l', 66000) on 64-bit Linux
    assert wire.seed_length_header(66000) == bytes([0xD0, 0x01, 0x01, 0, 0, 0, 0, 0])
    assert wire.seed_length_header(66000) == struct.pack("<l", 66000) + bytes(4)
    data = bytes(range(256)) * 10  # 2560 bytes
    assert [len(c) for c in wire.seed_chunks(data)] == [1024, 1024, 512]
    assert b"".join(wire.seed_chunks(data)) == data
    assert [len(c) for c in wire.seed_chunks(data[:2048])] == [1024, 1024, 0]  # as the seed
    assert wire.tcp_header(66000) == b"66000           "
    assert wire.IMG_ACK == b"get message!!!" and wire.MSG_ACK == b"get the msg"


def test_jpeg_check():
    assert wire.is_complete_jpeg(b"\xff\xd8\xff\xd9")
    assert not wire.is_complete_jpeg(b"\xff\xd8\x00\xff\xd9\x00")
    assert not wire.is_complete_jpeg(b"\xff\xd9")


def test_a_named_header_carries_the_name_after_the_32_bytes():
    plain = wire.data_header(1, 0, 0, 1, 3, 0)
    named = wire.data_header(1, 0, 0, 1, 3, 0, name="cam")
    assert len(plain) == 32 and named[32:] == b"\x03cam"
    assert named[6:8] == b"\x02\x00" and plain[6:8] == b"\x00\x00"  # flags: NAMED


def test_a_captured_header_carries_the_capture_extension_after_the_name():
    h = wire.data_header(1, 2, 0, 1, 4, 0, name="cam", captured=(0x0102030405060708, -5, 300, 90),
                         clock=True)
    flags = int.from_bytes(h[6:8], "little")
    assert flags == wire.NAMED | wire.CAPTURED | wire.CLOCK == 14
    assert h[32:36] == b"\x03cam"
    assert h[36:] == (bytes([8, 7, 6, 5, 4, 3, 2, 1]) + (-5).to_bytes(8, "little", signed=True)
                      + (300).to_bytes(4, "little") + bytes([90, 0, 0, 0]))
    assert len(h) == 32 + 4 + 24
    # no estimate yet: the offset is i64::MIN, as the hub reads it
    h = wire.data_header(1, 2, 0, 1, 4, 0, captured=(7, wire.NO_OFFSET, 0, 0))
    assert h[40:48] == bytes([0, 0, 0, 0, 0, 0, 0, 0x80])


def test_an_ack_with_the_hubs_clock():
    ack = b"UHFR" + bytes([1, 1, 1, 0]) + bytes([4, 3, 2, 1]) + bytes([7, 0, 0, 0]) \
        + bytes([0, 0, 0, 0]) + (1234).to_bytes(8, "little") + (99).to_bytes(8, "little")
    assert wire.parse_reply(ack) == wire.Ack(0x01020304, 7, "delivered", 1234, 99)
    # the flag without the bytes, or the bytes without the flag: no clock
    assert wire.parse_reply(ack[:28]).hub_us is None
    unflagged = ack[:6] + b"\x00\x00" + ack[8:]
    assert wire.parse_reply(unflagged).hub_us is None
