"""JPEG encoding for ``ImageSender.send_image``, imported only when it is used, so the
plain formats need nothing beyond the standard library.

OpenCV (``opencv-python-headless``, the ``image`` extra) is used when present, else
``simplejpeg``; both take the BGR (or grayscale) uint8 arrays OpenCV and picamera2 give.
"""

from ._common import check_int
from .errors import MissingDependency

INSTALL_HINT = "pip install 'udphub[image]' (numpy and opencv-python-headless), or simplejpeg"


def encode_jpeg(image, quality=90):
    """``image`` (a HxW or HxWx3 uint8 numpy array, BGR) as JPEG bytes at ``quality``."""
    quality = check_int(quality, "quality", 1, 100)
    try:
        import numpy as np
    except ImportError:
        raise MissingDependency(f"send_image needs numpy: {INSTALL_HINT}") from None
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, not {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be a uint8 array, not {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)) \
            or 0 in image.shape:
        raise ValueError(f"image must be HxW (grayscale) or HxWx3 (BGR), not shape {image.shape}")
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"OpenCV could not encode an image of shape {image.shape}")
        return buf.tobytes()
    try:
        import simplejpeg
    except ImportError:
        raise MissingDependency(f"send_image needs a JPEG encoder: {INSTALL_HINT}") from None
    if image.ndim == 2:
        image = image[:, :, None]
    colorspace = "GRAY" if image.shape[2] == 1 else "BGR"
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality,
                                  colorspace=colorspace)
