"""The sender's side of the framed protocol for one frame at a time, as a state machine
with no socket and no clock (the caller passes ``now``, a ``time.monotonic()`` reading), so
every rule is reached by a unit test: ``ImageSender`` only moves its datagrams.

The rules are the Rust sender's (``src/proto/framed_sender.rs``) with a window of one:
- every chunk goes out once, the last of the batch flagged ``POLL`` (the hub answers the
  last chunk anyway);
- a nack's missing chunks are sent again at once, the last flagged ``POLL``, so a recovery
  round costs one round trip;
- when nothing comes for one retransmission timeout (RTO: 2 x srtt + 4 x rttvar of the
  acks' echoed timestamps, 10..250 ms; 250 ms before the first sample), the last chunk is
  sent again as a probe: the hub answers it with a nack or the ack that was lost. The wait
  doubles per silent probe (up to 16x, at most 1 s) and starts over when the hub is heard;
- the frame is given up at its deadline or after 16 resend rounds (nacks plus probes);
- answers for another stream or frame are ignored (late answers to earlier frames);
- chunk 0 carries the capture time and the sender's estimate of the hub's clock
  (``CAPTURED``), so the hub can tell each frame's latency; the hub answers it with its own
  clock (``HUB_TIME``), and ``ClockFilter`` turns those exchanges into the estimate as NTP
  does (and as ``FramedSender``'s filter in Rust).
"""

from . import wire

MAX_RESEND_ROUNDS = 16
MIN_RTO, MAX_RTO = 0.010, 0.250


class RttEstimator:
    """Smoothed round-trip time (RFC 6298's weights) and the retransmission timeout."""

    def __init__(self):
        self.srtt = self.rttvar = None

    def sample(self, rtt):
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (3 * self.rttvar + abs(self.srtt - rtt)) / 4
            self.srtt = (7 * self.srtt + rtt) / 8

    def rto(self):
        if self.srtt is None:
            return MAX_RTO
        return min(max(2 * self.srtt + 4 * self.rttvar, MIN_RTO), MAX_RTO)


class ClockFilter:
    """The estimate of ``hub clock - this clock`` in µs from the acks' ``HUB_TIME``, as NTP
    filters it: each exchange gives ``t2 - (t1 + t4) / 2`` within half its round trip; the
    best (smallest round trip) of every ``BUCKET_S`` is kept for ``BUCKETS`` buckets, its
    error grown by ``DRIFT_PPM`` for its age, and the estimate is the one with the smallest
    error. Times passed in: ``now`` a ``time.monotonic()`` reading, the rest wall-clock µs."""

    BUCKET_S, BUCKETS, DRIFT_PPM = 4.0, 15, 50

    def __init__(self):
        self.buckets = []  # [bucket start, offset_us, err_us, taken at], oldest first

    def add(self, t1, t2, t4, now):
        """One exchange: sent at wall ``t1``, the hub's clock ``t2``, answered at ``t4``."""
        if t4 < t1:
            return
        rtt = t4 - t1
        offset, err = t2 - (t1 + rtt // 2), -(-rtt // 2)
        horizon = self.BUCKET_S * self.BUCKETS
        self.buckets = [b for b in self.buckets if now - b[0] < horizon]
        if self.buckets and now - self.buckets[-1][0] < self.BUCKET_S:
            if err <= self.buckets[-1][2]:
                self.buckets[-1][1:] = [offset, err, now]
        else:
            self.buckets.append([now, offset, err, now])

    def estimate(self, now):
        """``(offset_us, err_us)``, or ``None`` before the first exchange (or a minute after
        the last)."""
        horizon = self.BUCKET_S * self.BUCKETS
        best = None
        for start, offset, err, at in self.buckets:
            if now - start >= horizon:
                continue
            grown = err + int(max(0.0, now - at) * self.DRIFT_PPM)
            if best is None or grown < best[1]:
                best = (offset, grown)
        return best


class FrameTransfer:
    """One frame from its first datagram to its ack (or giving up).

    Drive it: send what ``poll_transmit(now)`` returns, feed every datagram received to
    ``handle_datagram``, call ``handle_timeout(now)`` once ``now >= poll_timeout()``, until
    ``status`` is set: ``"delivered"``, ``"rejected"`` or ``"stale"`` (the hub's answer,
    with ``rtt``), or ``"lost"`` (with ``why``).
    """

    def __init__(self, stream, frame, data, chunk_size, deadline, rtt, epoch, name=None,
                 captured=None, clock=None, wall_epoch_us=None):
        """``captured``: ``(capture_us, quality)`` for chunk 0's capture extension (with the
        estimate ``clock``, a ``ClockFilter``, has then); ``wall_epoch_us``: the wall clock at
        ``epoch`` (µs), so the echoed timestamps can be put on the wall clock for ``clock``."""
        # bytes, not a memoryview: slicing and joining 1.4 kB to its header is faster
        self.stream, self.frame, self.data = stream, frame, bytes(data)
        self.count, self.size = wire.chunk_plan(len(data), chunk_size)
        if self.count > wire.FRAMED_MAX_CHUNKS:
            raise ValueError(f"{self.count} chunks is over {wire.FRAMED_MAX_CHUNKS}")
        self.deadline, self.rtt_estimator, self.epoch = deadline, rtt, epoch
        # the hub learns the stream's name from chunk 0, which every frame needs
        self.name = name
        self.pending = list(range(self.count))
        self.resends = self.rounds = self.silent = self.ignored = 0
        self.last_activity = None
        self.status = self.rtt = self.why = None
        self.captured, self.clock, self.wall_epoch_us = captured, clock, wall_epoch_us

    def ts_us(self, now):
        """The timestamp put in data datagrams: µs since ``epoch``."""
        return int((now - self.epoch) * 1e6)

    def poll_transmit(self, now):
        """The datagrams to send now (header and payload joined). All of a batch carry the
        timestamp ``now``, so the round trip the hub's answer echoes is counted from the
        batch's start."""
        if not self.pending or self.status is not None:
            return []
        header, data, size, ts = wire.data_header, self.data, self.size, self.ts_us(now)
        stream, frame, count, length = self.stream, self.frame, self.count, len(self.data)
        last = self.pending[-1]
        name, ext, clock = self.name, self._captured_ext(now), self.clock is not None
        out = [header(stream, frame, i, count, length, ts, poll=(i == last),
                      name=name if i == 0 else None, captured=ext if i == 0 else None,
                      clock=clock)
               + data[i * size:(i + 1) * size] for i in self.pending]
        self.pending = []
        self.last_activity = now
        return out

    def _captured_ext(self, now):
        """Chunk 0's capture extension, with the clock estimate as of ``now``."""
        if self.captured is None:
            return None
        capture_us, quality = self.captured
        estimate = self.clock.estimate(now) if self.clock is not None else None
        offset, err = estimate if estimate is not None else (wire.NO_OFFSET, 0)
        return (capture_us, offset, err, quality)

    def poll_timeout(self):
        """When ``handle_timeout`` is due: the next probe, or the deadline if sooner."""
        backoff = min(self.rtt_estimator.rto() * (1 << min(self.silent, 4)), 4 * MAX_RTO)
        start = self.last_activity if self.last_activity is not None else self.deadline
        return min(start + backoff, self.deadline)

    def handle_timeout(self, now):
        if self.status is not None or now < self.poll_timeout():
            return
        if now >= self.deadline or self.rounds >= MAX_RESEND_ROUNDS:
            self.status, self.why = "lost", "no ack"
            return
        self.silent, self.rounds, self.resends = self.silent + 1, self.rounds + 1, self.resends + 1
        self.pending = [self.count - 1]  # the probe: the hub answers the last chunk

    def handle_datagram(self, datagram, now):
        """Take an answer; anything not for this frame is counted in ``ignored``."""
        reply = wire.parse_reply(datagram)
        if self.status is not None or reply is None or reply.stream != self.stream \
                or reply.frame != self.frame:
            self.ignored += 1
            return
        self.silent = 0
        self.last_activity = now
        if isinstance(reply, wire.Ack):
            self.rtt = max(0, self.ts_us(now) - reply.ts_us) / 1e6
            self.rtt_estimator.sample(self.rtt)
            if reply.hub_us is not None and self.clock is not None \
                    and self.wall_epoch_us is not None:
                base = self.wall_epoch_us
                self.clock.add(base + reply.ts_us, reply.hub_us, base + self.ts_us(now), now)
            self.status = reply.status
            return
        if self.rounds >= MAX_RESEND_ROUNDS:
            self.status, self.why = "lost", "no ack after the resend rounds"
            return
        self.rounds += 1
        missing = [s + k for s, n in reply.missing for k in range(n) if s + k < self.count]
        self.pending = missing or [self.count - 1]
        self.resends += len(self.pending)
