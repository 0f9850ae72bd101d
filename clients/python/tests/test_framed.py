"""The framed sender's rules, with no socket and no clock: the test plays the hub."""

from udphub import wire
from udphub.framed import MAX_RESEND_ROUNDS, MAX_RTO, FrameTransfer, RttEstimator

STREAM, FRAME = 0xABCD, 7


def transfer(length=5000, chunk=1000, timeout=1.0, rtt=None):
    data = b"\xff\xd8" + bytes(length - 4) + b"\xff\xd9"
    return FrameTransfer(STREAM, FRAME, data, chunk, deadline=timeout, rtt=rtt or RttEstimator(),
                         epoch=0.0)


def sent(datagrams):
    """(index, poll flag) of each datagram."""
    out = []
    for datagram in datagrams:
        fields = wire.DATA.unpack_from(datagram)
        out.append((fields[6], bool(fields[3] & wire.POLL)))
        assert fields[:3] == (b"UHFR", 1, 0) and fields[4:6] == (STREAM, FRAME)
    return out


def ack(status=0, ts_us=0, stream=STREAM, frame=FRAME):
    return wire.ACK.pack(b"UHFR", 1, 1, 0, stream, frame, status, ts_us)


def nack(*ranges, frame=FRAME):
    return wire.NACK.pack(b"UHFR", 1, 2, 0, STREAM, frame, 0, len(ranges)) + b"".join(
        wire.RANGE.pack(*r) for r in ranges)


def test_sends_every_chunk_once_polling_the_last():
    t = transfer()
    first = t.poll_transmit(0.0)
    assert sent(first) == [(0, False), (1, False), (2, False), (3, False), (4, True)]
    assert b"".join(d[wire.DATA.size:] for d in first) == t.data
    assert {wire.DATA.unpack_from(d)[9] for d in first} == {t.ts_us(0.0)}  # one time per batch
    assert t.poll_transmit(0.0) == []  # nothing more until the hub answers or time passes


def test_an_ack_ends_it_with_the_rtt_from_the_echoed_timestamp():
    t = transfer()
    t.poll_transmit(0.0)
    t.handle_datagram(ack(ts_us=100_000), 0.104)
    assert t.status == "delivered" and abs(t.rtt - 0.004) < 1e-9 and t.resends == 0
    assert abs(t.rtt_estimator.srtt - 0.004) < 1e-9


def test_rejected_and_stale_are_final_answers():
    for code, status in [(1, "rejected"), (2, "stale")]:
        t = transfer()
        t.poll_transmit(0.0)
        t.handle_datagram(ack(status=code), 0.01)
        assert t.status == status
        assert t.poll_transmit(0.02) == []


def test_a_nack_resends_exactly_the_missing_chunks():
    t = transfer()
    t.poll_transmit(0.0)
    t.handle_datagram(nack((1, 2), (4, 1)), 0.01)
    assert sent(t.poll_transmit(0.01)) == [(1, False), (2, False), (4, True)]
    assert t.resends == 3 and t.rounds == 1 and t.status is None


def test_ranges_past_the_frame_are_not_sent():
    t = transfer()
    t.poll_transmit(0.0)
    t.handle_datagram(nack((4, 10)), 0.01)
    assert sent(t.poll_transmit(0.01)) == [(4, True)]


def test_answers_for_other_frames_and_garbage_are_ignored():
    t = transfer()
    t.poll_transmit(0.0)
    for other in (ack(frame=FRAME - 1), ack(stream=STREAM + 1), b"get message!!!", b""):
        t.handle_datagram(other, 0.01)
    assert t.status is None and t.ignored == 4


def test_silence_probes_the_last_chunk_with_backoff():
    t = transfer()
    t.poll_transmit(0.0)
    assert t.poll_timeout() == MAX_RTO  # no round-trip sample yet
    t.handle_timeout(0.1)  # too early: nothing
    assert t.poll_transmit(0.1) == []
    t.handle_timeout(MAX_RTO)
    assert sent(t.poll_transmit(MAX_RTO)) == [(4, True)]
    assert t.poll_timeout() == MAX_RTO + 2 * MAX_RTO  # doubled
    assert t.resends == 1 and t.silent == 1
    t.handle_datagram(nack((0, 1)), 0.3)  # heard: the backoff starts over
    assert t.silent == 0 and t.poll_timeout() == min(0.3 + MAX_RTO, 1.0)


def test_the_deadline_loses_the_frame():
    t = transfer(timeout=0.6)
    t.poll_transmit(0.0)
    now = 0.0
    while t.status is None:
        now = t.poll_timeout()
        t.handle_timeout(now)
        t.poll_transmit(now)
    assert t.status == "lost" and t.why == "no ack" and now == 0.6
    assert t.resends == 1  # one probe at 0.25; the next would be at 0.75, past the deadline
    t.handle_datagram(ack(), 0.7)  # too late: not taken
    assert t.status == "lost"


def test_resend_rounds_are_bounded():
    t = transfer(timeout=100.0)
    t.poll_transmit(0.0)
    for k in range(MAX_RESEND_ROUNDS):
        t.handle_datagram(nack((0, 1)), 0.01 * (k + 1))
        assert t.status is None
        t.poll_transmit(0.01 * (k + 1))
    t.handle_datagram(nack((0, 1)), 1.0)
    assert t.status == "lost" and "resend rounds" in t.why


def test_rto_follows_the_measured_rtt_within_bounds():
    r = RttEstimator()
    assert r.rto() == MAX_RTO
    r.sample(0.001)
    assert r.rto() == 0.010  # 2 x 1 ms + 4 x 0.5 ms = 4 ms, raised to the 10 ms floor
    for _ in range(50):
        r.sample(0.2)
    assert r.rto() == MAX_RTO


def test_the_clock_filter_keeps_the_exchange_with_the_smallest_round_trip():
    from udphub.framed import ClockFilter
    c = ClockFilter()
    assert c.estimate(0.0) is None
    # hub clock = ours + 1000 µs; a symmetric 200 µs round trip, then a slow asymmetric one
    c.add(10_000, 11_100, 10_200, now=0.0)
    c.add(20_000, 21_900, 20_800, now=1.0)
    # the first, grown by its age (50 ppm: 50 µs a second)
    assert c.estimate(1.0) == (1000, 150)
    # an answer from before the question is impossible: ignored
    c.add(30_000, 0, 29_000, now=1.5)
    assert c.estimate(1.5) == (1000, 175)
    assert c.estimate(11.0) == (1000, 100 + 550)
    # a minute after its bucket began it is forgotten
    assert c.estimate(61.0) is None


def test_chunk_0_carries_the_capture_time_and_the_estimate_every_datagram_asks_for_the_clock():
    from udphub.framed import ClockFilter
    clock = ClockFilter()
    data = b"\xff\xd8" + bytes(2996) + b"\xff\xd9"

    def frame(n, now):
        return FrameTransfer(STREAM, n, data, 1000, deadline=now + 1.0, rtt=RttEstimator(),
                             epoch=0.0, captured=(5_000_000 + n, 70), clock=clock,
                             wall_epoch_us=1_000_000)

    t = frame(FRAME, 0.0)
    first = t.poll_transmit(0.0)
    assert len(first) == 3
    assert all(wire.DATA.unpack_from(d)[3] & wire.CLOCK for d in first)
    assert [bool(wire.DATA.unpack_from(d)[3] & wire.CAPTURED) for d in first] == [True, False, False]
    ext = wire.CAPTURED_EXT.unpack_from(first[0], wire.DATA.size)
    assert ext == (5_000_000 + FRAME, wire.NO_OFFSET, 0, 70)
    assert len(first[0]) == wire.DATA.size + wire.CAPTURED_EXT.size + 1000
    # the ack at 0.0002 s with the hub's clock 1 ms ahead: sent at wall 1_000_000 µs,
    # answered at 1_000_200, hub clock 1_001_100 -> offset 1000 within 100
    t.handle_datagram(wire.ACK.pack(b"UHFR", 1, 1, wire.HUB_TIME, STREAM, FRAME, 0, 0)
                      + (1_001_100).to_bytes(8, "little"), 0.0002)
    assert t.status == "delivered"
    second = frame(FRAME + 1, 0.001).poll_transmit(0.001)
    offset, err = wire.CAPTURED_EXT.unpack_from(second[0], wire.DATA.size)[1:3]
    assert (offset, err) == (1000, 100)
