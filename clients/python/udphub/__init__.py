"""udphub: send camera frames and JSON telemetry to a udphub hub, in two lines::

    import udphub
    sender = udphub.ImageSender("192.168.1.10:9999")
    sender.send_jpg(jpg_bytes)                      # or sender.send_image(bgr_array)

    udphub.MsgSender("192.168.1.10:6666").send({"temp": 21.5})

Standard library only for JPEG bytes and messages; ``send_image`` needs the ``image``
extra (numpy + OpenCV) or simplejpeg. Errors are exceptions (see ``udphub.errors``); no
call waits without a timeout. ``python -m udphub --help`` is a small command line.
"""

from .errors import (Error, FrameLost, FrameTooLarge, HubError, HubUnreachable, MessageLost,
                     MissingDependency, NotAJpeg, NotRecorded, TimeoutError)
from .image import PROTOCOLS, ImageSender, SendResult
from .msg import MsgResult, MsgSender

__version__ = "0.1.0"

__all__ = [
    "ImageSender", "SendResult", "MsgSender", "MsgResult", "PROTOCOLS",
    "Error", "TimeoutError", "FrameLost", "MessageLost", "HubUnreachable", "HubError",
    "NotRecorded", "FrameTooLarge", "NotAJpeg", "MissingDependency",
]
