"""The UDP socket both senders talk to the hub through: sends that never wait long, receives
bounded by a deadline, and ICMP errors (which Windows reports on receive) never taken for an
answer.
"""

import socket
import time

from .errors import HubUnreachable


class DatagramLink:
    """A UDP socket for one hub address (``sockaddr``; ``hub``: its text, for messages)."""

    def __init__(self, family, sockaddr, hub):
        self.sockaddr, self.hub = sockaddr, hub
        self._sock = socket.socket(family, socket.SOCK_DGRAM)

    def send(self, datagram):
        """Send one datagram. A full buffer or an earlier ICMP error is let pass (the
        answer, or its absence, tells); a network error raises ``HubUnreachable``."""
        try:
            self._sock.sendto(datagram, self.sockaddr)
        except (socket.timeout, BlockingIOError, ConnectionRefusedError):
            pass
        except OSError as e:
            raise HubUnreachable(f"cannot send to {self.hub}: {e}") from e

    def drain(self):
        """Take every datagram already queued (late answers to earlier sends), so an answer
        that names nothing (the seed formats') is never taken for the next one's; returns
        how many there were."""
        taken = 0
        self._sock.setblocking(False)
        try:
            while True:
                try:
                    self._sock.recvfrom(65536)
                    taken += 1
                except (ConnectionRefusedError, ConnectionResetError):
                    continue
        except BlockingIOError:
            return taken
        finally:
            self._sock.setblocking(True)

    def recv(self, until):
        """The next datagram before the monotonic time ``until`` as ``(bytes, from_hub)``
        (``from_hub``: it came from the hub's address), or ``None`` at that time."""
        while True:
            wait = until - time.monotonic()
            if wait <= 0:
                return None
            self._sock.settimeout(wait)
            try:
                data, source = self._sock.recvfrom(65536)
            except socket.timeout:
                return None
            except (ConnectionRefusedError, ConnectionResetError):
                continue
            return data, source[:2] == self.sockaddr[:2]

    def close(self):
        self._sock.close()
