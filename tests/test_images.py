"""Decoding: orientation, downscaling, and a clear error for each kind of bad image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes
from landmark.errors import ImageError
from landmark.images import MIN_SIDE, decode_image


def gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8)


def test_decodes_to_rgb_uint8() -> None:
    pixels = decode_image(jpeg_bytes(gradient(120, 80)), "mem://a.jpg", max_side=1024)
    assert pixels.shape == (80, 120, 3) and pixels.dtype == np.uint8


def test_grayscale_and_rgba_become_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("LA", (64, 48), (100, 200)).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), "mem://la.png", max_side=1024).shape == (48, 64, 3)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = jpeg_bytes(gradient(120, 80), exif=exif.tobytes())
    assert decode_image(data, "mem://rotated.jpg", max_side=1024).shape == (120, 80, 3)


def test_large_images_are_downscaled_to_max_side_never_upscaled() -> None:
    assert decode_image(jpeg_bytes(gradient(2000, 1000)), "mem://big.jpg", max_side=500).shape == (250, 500, 3)
    assert decode_image(jpeg_bytes(gradient(200, 100)), "mem://small.jpg", max_side=500).shape == (100, 200, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"this is not an image at all", "not an image (Pillow cannot identify the format)"),
    ],
)
def test_unusable_bytes_are_named_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as error:
        decode_image(data, "s3://bucket/bad.jpg", max_side=1024)
    assert str(error.value) == f"s3://bucket/bad.jpg: {reason}"
    assert error.value.uri == "s3://bucket/bad.jpg"


def test_truncated_image_is_reported() -> None:
    data = jpeg_bytes(gradient(400, 300))
    with pytest.raises(ImageError) as error:
        decode_image(data[: len(data) // 3], "mem://cut.jpg", max_side=1024)
    assert str(error.value).startswith("mem://cut.jpg: corrupt or truncated image (")


def test_too_small_to_describe() -> None:
    with pytest.raises(ImageError) as error:
        decode_image(jpeg_bytes(gradient(100, 20)), "mem://tiny.jpg", max_side=1024)
    assert str(error.value) == (
        f"mem://tiny.jpg: image too small to describe (100x20 px; needs at least {MIN_SIDE} px on each side)"
    )


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError) as error:
        decode_image(jpeg_bytes(gradient(400, 300)), "mem://bomb.jpg", max_side=1024, max_pixels=100_000)
    assert str(error.value) == (
        "mem://bomb.jpg: image too large (400x300 = 120000 pixels, limit 100000); "
        "refusing to decode a possible decompression bomb"
    )
