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
- answers for another stream or frame are ignored (late answers to earlier frames).
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


class FrameTransfer:
    """One frame from its first datagram to its ack (or giving up).

    Drive it: send what ``poll_transmit(now)`` returns, feed every datagram received to
    ``handle_datagram``, call ``handle_timeout(now)`` once ``now >= poll_timeout()``, until
    ``status`` is set: ``"delivered"``, ``"rejected"`` or ``"stale"`` (the hub's answer,
    with ``rtt``), or ``"lost"`` (with ``why``).
    """

    def __init__(self, stream, frame, data, chunk_size, deadline, rtt, epoch, name=None):
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
        name = self.name
        out = [header(stream, frame, i, count, length, ts, poll=(i == last),
                      name=name if i == 0 else None)
               + data[i * size:(i + 1) * size] for i in self.pending]
        self.pending = []
        self.last_activity = now
        return out

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
            self.status = reply.status
            return
        if self.rounds >= MAX_RESEND_ROUNDS:
            self.status, self.why = "lost", "no ack after the resend rounds"
            return
        self.rounds += 1
        missing = [s + k for s, n in reply.missing for k in range(n) if s + k < self.count]
        self.pending = missing or [self.count - 1]
        self.resends += len(self.pending)
