"""The exceptions udphub raises, so a program can tell "the hub did not answer in time"
from "this call was wrong" from "the hub said no".

Bad arguments raise the built-in ``ValueError`` / ``TypeError`` (a subclass of them here
where the reason is worth catching on its own: ``FrameTooLarge``, ``NotAJpeg``). Everything
else derives from ``udphub.Error``. No call waits without a timeout: a hub that does not
answer ends in ``udphub.TimeoutError`` (``FrameLost`` / ``MessageLost``), which is also a
built-in ``TimeoutError``.
"""

import builtins


class Error(Exception):
    """Base class of every udphub exception."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 (udphub.TimeoutError on purpose)
    """The hub did not answer within the timeout (lost datagrams, or no hub there)."""


class FrameLost(TimeoutError):
    """A frame got no acknowledgement within the sender's timeout.

    Attributes: ``frame`` (the sender's frame number), ``size`` (bytes), ``protocol``,
    ``hub`` (``host:port``), ``resends`` (chunks sent again, framed only), ``elapsed`` (s).
    """

    def __init__(self, message, *, frame, size, protocol, hub, resends, elapsed):
        super().__init__(message)
        self.frame, self.size, self.protocol, self.hub = frame, size, protocol, hub
        self.resends, self.elapsed = resends, elapsed


class MessageLost(TimeoutError):
    """A message got no reply within the timeout (after every retry)."""


class HubUnreachable(Error, ConnectionError):
    """The hub cannot be reached at all: a TCP connection refused or broken, a network
    error from the operating system when sending."""


class HubError(Error):
    """The hub answered, but with an error: ``reply`` holds its words (``error: ...``)."""

    def __init__(self, reply):
        super().__init__(f"the hub answered: {reply}")
        self.reply = reply


class NotRecorded(HubError):
    """The hub got a valid message but could not write it to its ``--msg-log``."""


class FrameTooLarge(Error, ValueError):
    """The frame is larger than its protocol can carry (``single``: one UDP datagram)."""


class NotAJpeg(Error, ValueError):
    """The bytes are not a complete JPEG (``FF D8`` ... ``FF D9``); the hub would refuse them."""


class MissingDependency(Error, ImportError):
    """``send_image`` needs numpy and an encoder (OpenCV or simplejpeg) that are not installed."""
