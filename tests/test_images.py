"""Decoding: orientation, downscaling, and a clear error for each kind of bad image."""

from __future__ import annotations

import io
from pathlib import Path

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


# -- modes -------------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


RAMP16 = (np.arange(96 * 64, dtype=np.uint32).reshape(64, 96) * 10).astype(np.uint16)
"""A 16-bit ramp over 0..61430: clipped to 8 bits it would be white from the 26th pixel on."""


@pytest.mark.parametrize(("mode", "pixels", "fmt"), [
    ("I;16", RAMP16, "PNG"),
    ("I;16B", RAMP16.astype(">u2"), "TIFF"),
    ("I", RAMP16.astype(np.int32), "TIFF"),
])
def test_sixteen_bit_greyscale_keeps_its_high_byte(mode: str, pixels: np.ndarray, fmt: str) -> None:
    image = Image.fromarray(pixels)
    data = encoded(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    decoded = decode_image(data, f"mem://{mode}.{fmt.lower()}", max_side=1024)
    expected = (RAMP16 >> 8).astype(np.uint8)
    assert decoded.shape == (64, 96, 3)
    assert all(np.array_equal(decoded[..., c], expected) for c in range(3))


def test_sixteen_bit_pgm_decodes() -> None:
    data = b"P5 96 64 65535\n" + RAMP16.astype(">u2").tobytes()
    decoded = decode_image(data, "mem://ramp.pgm", max_side=1024)
    assert np.array_equal(decoded[..., 0], (RAMP16 >> 8).astype(np.uint8))


def test_float_greyscale_is_stretched_over_its_own_range() -> None:
    pixels = np.linspace(-1.0, 1.0, 96 * 64, dtype=np.float32).reshape(64, 96)
    decoded = decode_image(encoded(Image.fromarray(pixels), "TIFF"), "mem://f.tif", max_side=1024)
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255
    assert np.array_equal(decoded[..., 0], np.rint((pixels + 1.0) * 127.5).astype(np.uint8))


def test_sixteen_bit_rgb_png_keeps_its_high_bytes() -> None:
    import cv2

    rgb = np.stack([RAMP16, RAMP16[::-1], 65535 - RAMP16], axis=-1)
    ok, data = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV writes BGR
    assert ok
    decoded = decode_image(data.tobytes(), "mem://rgb16.png", max_side=1024)
    assert np.array_equal(decoded, (rgb >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK", "L", "RGBA"])
def test_other_modes_are_converted_by_pillow(mode: str) -> None:
    image = Image.fromarray(gradient(96, 64)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = encoded(image, fmt)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode_image(data, f"mem://x.{fmt.lower()}", max_side=1024), expected)


# -- large images, memory-light ----------------------------------------------------------------


def plain_decode(data: bytes, max_side: int) -> np.ndarray:
    """What decoding did before images were shrunk while decoding: full size, then resize."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image)


def test_ordinary_photos_decode_pixel_for_pixel_as_before() -> None:
    from conftest import LANDMARKS

    for path in sorted(LANDMARKS.glob("*/*.jpg"))[:6]:
        data = path.read_bytes()
        for max_side in (1024, 600):  # under twice the photo's side: no early shrinking
            assert np.array_equal(decode_image(data, path.name, max_side), plain_decode(data, max_side)), path


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_are_shrunk_while_decoding_to_nearly_the_same_pixels(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    image = Image.fromarray(gradient(3000, 2000))
    data = encoded(image, fmt) if fmt == "PNG" else jpeg_bytes(gradient(3000, 2000), exif=exif.tobytes())
    decoded = decode_image(data, f"mem://big.{fmt.lower()}", max_side=500)
    plain = plain_decode(data, 500)
    assert decoded.shape == plain.shape == ((500, 333, 3) if fmt == "JPEG" else (333, 500, 3))
    assert np.abs(decoded.astype(int) - plain.astype(int)).mean() < 1.0


def test_decoding_a_huge_jpeg_takes_a_fraction_of_its_size_in_memory(tmp_path: Path) -> None:
    """A 10000 x 10000 px greyscale JPEG: decoded in full, then made RGB, it took ~360 MB; at 1/8, under 100."""
    import subprocess
    import sys

    path = tmp_path / "huge.jpg"
    Image.linear_gradient("L").resize((10000, 10000)).save(path, quality=80)  # greyscale: 100 MB to make
    probe = (
        "import resource, sys; from landmark.images import decode_image; data = open(sys.argv[1], 'rb').read(); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "pixels = decode_image(data, 'huge.jpg', 1024); "
        "print(pixels.shape, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True)
    shape, grown_kb = done.stdout.rsplit(" ", 1)
    assert shape == "(1024, 1024, 3)"
    assert int(grown_kb) < 100_000, done.stdout


def test_the_pixel_budget_is_a_setting() -> None:
    from landmark import config as cfg
    from landmark.settings import Settings

    assert cfg.resolve(Settings, environ={}).max_image_pixels == 100_000_000
    assert cfg.resolve(Settings, environ={"LANDMARK_MAX_IMAGE_PIXELS": "2000000"}).max_image_pixels == 2_000_000
