"""Decode image bytes into the pixels extractors take: uint8 ``[H x W x 3]`` RGB.

Pillow decodes; EXIF orientation is applied; the image is downscaled (never upscaled) so its
longer side is at most ``max_side``. Everything that makes an image unusable raises
:class:`~landmark.errors.ImageError` naming the URI.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from .errors import ImageError

MIN_SIDE = 32
"""Images with a side shorter than this (after orientation) carry too little to describe."""

MAX_PIXELS = 100_000_000
"""Images claiming more pixels than this are refused before decoding (decompression bombs)."""


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
            image = ImageOps.exif_transpose(image)
            image = image.convert("RGB")
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
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)
