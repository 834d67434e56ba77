"""Decode image bytes into the pixels extractors take: uint8 ``[H x W x 3]`` RGB.

Pillow decodes; EXIF orientation is applied; the image is downscaled (never upscaled) so its
longer side is at most ``max_side``. Everything that makes an image unusable raises
:class:`~landmark.errors.ImageError` naming the URI.

Memory: an image claiming more than ``max_pixels`` is refused from its header, before anything
is decoded. One at least twice ``max_side`` is shrunk as early as the format allows: a JPEG is
decoded at 1/2, 1/4 or 1/8 scale by the codec itself (``draft``), others are reduced by whole
factors in their own mode before conversion to RGB (three bytes a pixel), and no step makes a
full-size copy. Smaller images take the plain path, pixel for pixel as always.

Modes: 16-bit greyscale (``I;16``, ``I;16B``; ``I``, which Pillow uses for 16-bit sources) keeps
its high byte; float greyscale (``F``, no fixed range) is stretched from its minimum to its
maximum; every other mode (palette, LA, CMYK, 16-bit RGB...) is converted by Pillow.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from .errors import ImageError

MIN_SIDE = 32
"""Images with a side shorter than this (after orientation) carry too little to describe."""

MAX_PIXELS = 100_000_000
"""Default pixel budget: images claiming more are refused before decoding (decompression bombs).
``LANDMARK_MAX_IMAGE_PIXELS`` sets another (lower, for a service)."""

EARLY_SHRINK = 2
"""Shrink while decoding only images at least this many times ``max_side``: below it the codec's
coarse steps would change pixels for little gain."""

REDUCING_GAP = 3.0
"""As in ``Image.resize``: reduce by whole factors down to about this many times the target, then
resample with Lanczos."""

SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"})
"""Modes ``Image.reduce`` takes (a palette image is converted first, at full size)."""


def decode_image(data: bytes, uri: str, max_side: int, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``data`` -> uint8 ``[H x W x 3]`` RGB with ``max(H, W) <= max_side``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError(uri, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces Pillow's warning-then-error heuristic.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    uri,
                    f"image too large ({width}x{height} = {width * height} pixels, limit {max_pixels}); "
                    "refusing to decode a possible decompression bomb",
                )
            image = _shrink_early(image, max_side)
            ImageOps.exif_transpose(image, in_place=True)
            image = _rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(uri, "not an image (Pillow cannot identify the format)") from None
    except Image.DecompressionBombError as error:
        raise ImageError(uri, f"refusing to decode a possible decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(uri, f"corrupt or truncated image ({error})") from None
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            uri, f"image too small to describe ({width}x{height} px; needs at least {MIN_SIDE} px on each side)"
        )
    scale = max_side / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    return np.asarray(image, dtype=np.uint8)


def _shrink_early(image, max_side: int):  # noqa: ANN001, ANN202 - PIL types, imported lazily
    """The loaded ``image``, shrunk by a whole factor first when it is at least
    :data:`EARLY_SHRINK` times ``max_side`` (see the module's notes on memory)."""
    width, height = image.size
    if max(width, height) < EARLY_SHRINK * max_side:
        image.load()
        return image
    scale = max_side / max(width, height)
    # A JPEG is decoded at the codec's 1/2, 1/4 or 1/8, the smallest not under the target;
    # other formats ignore the draft and are reduced once decoded.
    image.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
    image.load()
    factor = int(max(image.size) / max_side / REDUCING_GAP)
    if factor < 2 or image.mode not in REDUCIBLE:
        return image
    return image.reduce(factor)


def _rgb(image):  # noqa: ANN001, ANN202
    """``image`` in mode RGB, 16-bit and float greyscale scaled to 8 bits (not clipped to white)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT:
        pixels = np.asarray(image)
        if image.mode == "I":  # 32-bit: Pillow's 16-bit values, or anything
            pixels = np.clip(pixels, 0, 65535)
        return Image.fromarray((pixels >> 8).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float32))
        low, high = float(pixels.min()), float(pixels.max())
        span = high - low if high > low else 1.0
        return Image.fromarray(np.rint((pixels - low) * (255.0 / span)).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")
