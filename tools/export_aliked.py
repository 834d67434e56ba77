#!/usr/bin/env python3
"""Export ALIKED (Zhao et al., "ALIKED: A Lighter Keypoint and Descriptor Extraction Network via
Deformable Transformation", IEEE TIM 2023) to ONNX for landmark's ``aliked`` extractor, and
check the graphs against the PyTorch network at several image sizes.

Needs PyTorch, torchvision, onnx, onnxscript and onnxruntime (none of them at landmark's run
time), and the published weights (``../shared/models/aliked/*.pth``, BSD-3-Clause)::

    python tools/export_aliked.py --weights ../shared/models/aliked --out landmark/extractors/aliked_models

Two graphs per variant, no image size frozen into either:

``<variant>.dense.onnx``
    ``image`` float32 ``[1 x 3 x H x W]``, RGB in ``[0, 1]``, any ``H, W``
    -> ``features`` float32 ``[1 x D x H x W]`` (unit length along ``D``) and ``scores`` float32
    ``[1 x 1 x H x W]`` (keypoint scores in ``(0, 1)``).
``<variant>.descriptors.onnx``
    ``features`` as above and ``keypoints`` float32 ``[N x 2]`` ``(x, y)`` pixels
    -> ``descriptors`` float32 ``[N x D]``, unit length.

Keypoints are chosen between the two by :func:`landmark.extractors.keypoints.detect` (numpy).

Two things differ from the published network's code, both exact up to float rounding:

- the deformable 3x3 convolutions (``torchvision.ops.deform_conv2d``, which has no ONNX operator
  that ONNX Runtime runs) are written as ``grid_sample`` at the nine offset taps followed by a
  matrix product with the kernel;
- every number derived from a tensor's shape (padding to a multiple of 32, the largest offset,
  the sampling grid's scale) is computed from the traced shape, so the graphs work at any size.

The check compares, on real photos at several sizes, the ONNX graphs plus the numpy detection
with the PyTorch network (torchvision's deformable convolution, eval mode) plus a PyTorch
detection: the same keypoints up to ties in score, descriptors equal to float rounding. It also
saves reference outputs for one image (``--reference``), which landmark's tests compare with.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landmark.extractors.keypoints import detect  # noqa: E402  (numpy only)

VARIANTS = {
    # name: channels of blocks 1-4, descriptor dim, offset kernel K, deformable positions M
    "aliked-t16": ((8, 16, 32, 64), 64, 3, 16),
    "aliked-n16": ((16, 32, 64, 128), 128, 3, 16),
    "aliked-n16rot": ((16, 32, 64, 128), 128, 3, 16),
}
DIVISOR = 32  # the encoder pools by 2, 4 and 4 again: 32 in all


# -- the network -------------------------------------------------------------------------------


def _grid(px: torch.Tensor, py: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel positions -> grid_sample's ``align_corners=False`` coordinates (pixel centres at
    integers); never divides by ``size - 1``, so a map one pixel wide is fine."""
    return torch.stack([(2 * px + 1) / width - 1, (2 * py + 1) / height - 1], dim=-1)


def _size(x: torch.Tensor) -> tuple[int, int, float]:
    """``(height, width, largest offset)`` of ``x [B x C x H x W]``: symbolic under ``torch.export``,
    so the graph computes them from its input instead of holding the traced numbers."""
    height, width = x.shape[2], x.shape[3]
    return height, width, torch.sym_max(height, width) / 4


class DeformableConv(nn.Module):
    """3x3 deformable convolution (Dai et al. 2017), no modulation mask. ``sampled=True`` computes it
    with grid_sample (exportable); ``False`` with torchvision's operator (the reference)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(cin, 18, 3, padding=1, bias=True)
        self.regular_conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.sampled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width, largest = _size(x)
        offset = torch.clamp(self.offset_conv(x), -largest, largest)  # [B x 18 x H x W]: (dy, dx) per tap
        if not self.sampled:
            import torchvision

            return torchvision.ops.deform_conv2d(x, offset, self.regular_conv.weight, padding=(1, 1))
        b, c = x.shape[0], x.shape[1]
        taps = torch.arange(-1, 2, dtype=x.dtype)
        tap_y = taps.repeat_interleave(3).view(1, 9, 1, 1)
        tap_x = taps.repeat(3).view(1, 9, 1, 1)
        rows = torch.ones_like(x[:, :1]).cumsum(2) - 1  # [B x 1 x H x W]: the row index
        cols = torch.ones_like(x[:, :1]).cumsum(3) - 1
        py = rows + tap_y + offset[:, 0::2]  # [B x 9 x H x W]
        px = cols + tap_x + offset[:, 1::2]
        grid = _grid(px, py, width, height).flatten(1, 2)  # [B x 9H x W x 2]
        sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.unflatten(2, (9, -1)).flatten(1, 2)  # [B x C*9 x H x W], channel-major
        weight = self.regular_conv.weight.flatten(1)[:, :, None, None]  # [O x C*9 x 1 x 1]
        return F.conv2d(sampled, weight)


def _conv(cin: int, cout: int, deformable: bool) -> nn.Module:
    return DeformableConv(cin, cout) if deformable else nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class Block(nn.Module):
    """Two 3x3 convolutions with batch norm and SELU; a residual 1x1 projection when ``residual``."""

    def __init__(self, cin: int, cout: int, *, deformable: bool, residual: bool) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, deformable)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv(cout, cout, deformable)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Conv2d(cin, cout, 1) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.selu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is None:
            return F.selu(out)
        return F.selu(out + self.downsample(x))


def _pads(height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` replicate padding that makes both sides multiples of 32,
    split as evenly as the published implementation does."""
    pad_h, pad_w = (-height) % DIVISOR, (-width) % DIVISOR
    return pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2


class Encoder(nn.Module):
    """Image -> keypoint scores and the feature pyramid the dense descriptors are made of.

    The published network concatenates ``selu(conv1(x1))`` with the other three levels upsampled
    (bilinear, corners aligned) to full resolution, and L2-normalises that ``D``-channel map. Here
    (``forward``) the full-resolution map is never built: the score head's first 1x1 convolution
    is applied to each level before upsampling (both are linear, so they commute), and the
    descriptor graph rebuilds the normalised features only at the pixels it reads. That saves
    ~30 bytes x D per pixel of memory traffic, most of the published graph's time on a CPU.
    ``published`` is the network as published, the reference the graphs are checked against.
    """

    def __init__(self, channels: tuple[int, int, int, int], dim: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.block1 = Block(3, c1, deformable=False, residual=False)
        self.block2 = Block(c1, c2, deformable=False, residual=True)
        self.block3 = Block(c2, c3, deformable=True, residual=True)
        self.block4 = Block(c3, c4, deformable=True, residual=True)
        self.conv1 = nn.Conv2d(c1, dim // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c2, dim // 4, 1, bias=False)
        self.conv3 = nn.Conv2d(c3, dim // 4, 1, bias=False)
        self.conv4 = nn.Conv2d(dim, dim // 4, 1, bias=False)
        self.score_head = nn.Sequential(
            nn.Conv2d(dim, 8, 1, bias=False), nn.SELU(),
            nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.SELU(),
            nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.SELU(),
            nn.Conv2d(4, 1, 3, padding=1, bias=False),
        )

    def pyramid(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Block 1's output ``[1 x c1 x Hp x Wp]`` (padded) and levels 2-4 after their 1x1
        convolution and SELU, ``[1 x D/4 x Hp/s x Wp/s]`` for s = 2, 8, 32."""
        top, bottom, left, right = _pads(image.shape[2], image.shape[3])
        x1 = self.block1(F.pad(image, (left, right, top, bottom), mode="replicate"))
        x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self.block3(F.avg_pool2d(x2, 4))
        x4 = self.block4(F.avg_pool2d(x3, 4))
        return x1, [F.selu(conv(x)) for conv, x in ((self.conv2, x2), (self.conv3, x3), (self.conv4, x4))]

    def published(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [1 x D x H x W], scores [1 x 1 x H x W])`` computed as published."""
        height, width = image.shape[2], image.shape[3]
        top, _, left, _ = _pads(height, width)
        x1, levels = self.pyramid(image)
        full = x1.shape[2:]
        merged = torch.cat(
            [F.selu(self.conv1(x1))]
            + [F.interpolate(level, size=full, mode="bilinear", align_corners=True) for level in levels],
            dim=1,
        )
        scores = torch.sigmoid(self.score_head(merged))
        features = F.normalize(merged, p=2, dim=1)
        crop = (slice(None), slice(None), slice(top, top + height), slice(left, left + width))
        return features[crop], scores[crop]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``scores [1 x 1 x H x W]``, block 1's output cropped to ``[1 x c1 x H x W]``, and the
        three coarser levels (padded, as :meth:`pyramid`)."""
        height, width = image.shape[2], image.shape[3]
        top, _, left, _ = _pads(height, width)
        x1, levels = self.pyramid(image)
        first = self.score_head[0].weight  # [8 x D x 1 x 1]: one slice of D/4 input channels per level
        quarter = first.shape[1] // 4
        hidden = F.conv2d(F.selu(self.conv1(x1)), first[:, :quarter])
        for i, level in enumerate(levels, start=1):
            part = F.conv2d(level, first[:, i * quarter:(i + 1) * quarter])
            hidden = hidden + F.interpolate(part, size=x1.shape[2:], mode="bilinear", align_corners=True)
        scores = torch.sigmoid(self.score_head[1:](hidden))
        crop = (slice(None), slice(None), slice(top, top + height), slice(left, left + width))
        return (scores[crop], x1[crop], *levels)


class Descriptors(nn.Module):
    """ALIKED's sparse deformable descriptor head: at each keypoint, ``M`` sampling offsets are
    predicted from the ``K x K`` features around it; the features there are mixed into one
    descriptor per keypoint.

    ``published(features, keypoints)`` reads a full feature map; ``forward`` takes the encoder's
    pyramid instead and builds the normalised features only at the pixels it needs: the K x K
    patches and the four neighbours of each of the ``N x M`` sampling positions.
    """

    def __init__(self, dim: int, kernel: int, positions: int, conv1: nn.Conv2d) -> None:
        super().__init__()
        self.kernel, self.positions = kernel, positions
        self.offset_conv = nn.Sequential(
            nn.Conv2d(dim, 2 * positions, kernel, bias=True), nn.SELU(),
            nn.Conv2d(2 * positions, 2 * positions, 1, bias=True),
        )
        self.sf_conv = nn.Conv2d(dim, dim, 1, bias=False)
        self.agg_weights = nn.Parameter(torch.zeros(positions, dim, dim))
        self._conv1 = [conv1]  # the encoder's, applied per pixel; kept out of this module's state

    def _patch_pixels(self, keypoints: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows and columns ``[N x K x K]`` of the K x K patch whose corner is one pixel up and left
        of the keypoint's pixel, moved inside the map (the published implementation's placement)."""
        k = self.kernel
        pixel = keypoints.to(torch.int64)
        corner_x = torch.clamp(torch.clamp(pixel[:, 0:1, None] - 1, min=0), max=width - 1 - k)
        corner_y = torch.clamp(torch.clamp(pixel[:, 1:2, None] - 1, min=0), max=height - 1 - k)
        steps = torch.arange(k)
        rows = (corner_y + steps[None, :, None]).expand(-1, k, k)
        cols = (corner_x + steps[None, None, :]).expand(-1, k, k)
        return rows, cols

    def _describe(self, patches: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        """``patches [N x D x K x K]``, ``sampled [N x D x M x 1]`` -> unit descriptors ``[N x D]``."""
        mixed = F.selu(self.sf_conv(sampled))[..., 0]  # [N x D x M]
        descriptors = torch.einsum("ncp,pcd->nd", mixed, self.agg_weights)
        return F.normalize(descriptors, p=2, dim=1)

    def _offsets(self, patches: torch.Tensor, largest: float) -> torch.Tensor:
        offsets = torch.clamp(self.offset_conv(patches), -largest, largest)[:, :, 0, 0]  # [N x 2M]
        return offsets.unflatten(1, (2, self.positions)).transpose(1, 2)  # [N x M x 2] (dx, dy)

    def published(self, features: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        dim, k, m = features.shape[1], self.kernel, self.positions
        height, width, largest = _size(features)
        rows, cols = self._patch_pixels(keypoints, height, width)
        patches = features[0][:, rows, cols].transpose(0, 1)  # [N x D x K x K]
        where = keypoints[:, None, :] + self._offsets(patches, largest)
        grid = _grid(where[..., 0], where[..., 1], width, height).reshape(1, -1, 1, 2)
        sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return self._describe(patches, sampled.reshape(dim, -1, m, 1).transpose(0, 1))

    def _features_at(self, rows: torch.Tensor, cols: torch.Tensor, x1: torch.Tensor, levels) -> torch.Tensor:
        """Normalised features ``[D x P]`` at integer pixels ``rows, cols [P]`` (in range) of the
        cropped image: what :meth:`Encoder.published` holds there, rebuilt from the pyramid."""
        height, width = x1.shape[2], x1.shape[3]
        top, bottom, left, right = _pads(height, width)
        padded_h, padded_w = height + top + bottom, width + left + right
        conv1 = self._conv1[0].weight[:, :, 0, 0]  # [D/4 x c1]
        parts = [F.selu(conv1 @ x1[0][:, rows, cols])]
        for level in levels:
            level_h, level_w = level.shape[2], level.shape[3]
            # Bilinear upsampling with corners aligned maps padded pixel p to p (n - 1) / (Np - 1).
            y = (rows + top).to(torch.float32) * ((level_h - 1) / (padded_h - 1))
            x = (cols + left).to(torch.float32) * ((level_w - 1) / (padded_w - 1))
            grid = _grid(x, y, level_w, level_h).reshape(1, 1, -1, 2)
            parts.append(F.grid_sample(level, grid, mode="bilinear", align_corners=False)[0, :, 0, :])
        return F.normalize(torch.cat(parts, dim=0), p=2, dim=0)

    def forward(self, keypoints: torch.Tensor, level1: torch.Tensor, level2: torch.Tensor, level3: torch.Tensor,
                level4: torch.Tensor) -> torch.Tensor:
        x1, levels = level1, (level2, level3, level4)
        k, m = self.kernel, self.positions
        height, width, largest = _size(x1)
        rows, cols = self._patch_pixels(keypoints, height, width)
        patches = self._features_at(rows.reshape(-1), cols.reshape(-1), x1, levels)  # [D x N*K*K]
        patches = patches.unflatten(1, (-1, k, k)).transpose(0, 1)  # [N x D x K x K]
        where = (keypoints[:, None, :] + self._offsets(patches, largest)).reshape(-1, 2)  # [N*M x 2]
        # Bilinear sampling of the feature map, zero outside it (grid_sample's zeros padding).
        base = torch.floor(where)
        frac = where - base
        base = base.to(torch.int64)
        sampled = torch.zeros((), dtype=x1.dtype)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            col, row = base[:, 0] + dx, base[:, 1] + dy
            inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
            weight = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            values = self._features_at(torch.clamp(row, 0, height - 1), torch.clamp(col, 0, width - 1), x1, levels)
            sampled = sampled + values * (weight * inside.to(x1.dtype))[None, :]
        sampled = sampled.unflatten(1, (-1, m))[..., None].transpose(0, 1)  # [N x D x M x 1]
        return self._describe(patches, sampled)


def load(variant: str, weights: Path) -> tuple[Encoder, Descriptors]:
    channels, dim, kernel, positions = VARIANTS[variant]
    encoder = Encoder(channels, dim)
    head = Descriptors(dim, kernel, positions, encoder.conv1)
    state = torch.load(weights / f"{variant}.pth", map_location="cpu", weights_only=True)
    head_state = {k[len("desc_head."):]: v for k, v in state.items() if k.startswith("desc_head.")}
    encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("desc_head.")}, strict=True)
    head.load_state_dict(head_state, strict=True)
    return encoder.eval(), head.eval()


def set_sampled(encoder: Encoder, sampled: bool) -> None:
    for module in encoder.modules():
        if isinstance(module, DeformableConv):
            module.sampled = sampled


# -- the PyTorch detection the numpy one is checked against -------------------------------------


def detect_torch(scores: torch.Tensor, max_keypoints: int, radius: int = 2) -> torch.Tensor:
    """Keypoints ``[N x 2]`` ``(x, y)`` of ``scores [H x W]``: NMS as SuperPoint, top-k, soft-argmax."""
    size = 2 * radius + 1

    def pool(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t[None, None], size, stride=1, padding=radius)[0, 0]

    zeros = torch.zeros_like(scores)
    maxima = scores == pool(scores)
    for _ in range(2):
        suppressed = pool(maxima.float()) > 0
        remaining = torch.where(suppressed, zeros, scores)
        maxima = maxima | ((remaining == pool(remaining)) & ~suppressed)
    peaks = torch.where(maxima, scores, zeros)
    peaks[:radius], peaks[:, :radius], peaks[-radius:], peaks[:, -radius:] = 0, 0, 0, 0
    flat = peaks.flatten()
    count = min(max_keypoints, int((flat > 0).sum()))
    chosen = torch.topk(flat, count).indices
    width = scores.shape[1]
    windows = F.unfold(scores[None, None], size, padding=radius)[0].t()[chosen]  # [N x size^2]
    weights = torch.exp((windows - windows.max(dim=1, keepdim=True).values) / 0.1)
    offsets = torch.arange(-radius, radius + 1, dtype=scores.dtype)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    grid = torch.stack([dx.flatten(), dy.flatten()], dim=1)
    residual = weights @ grid / weights.sum(dim=1, keepdim=True)
    base = torch.stack([chosen % width, chosen // width], dim=1).to(scores.dtype)
    return base + residual


# -- export and check -----------------------------------------------------------------------------


DENSE_OUTPUTS = ["scores", "level1", "level2", "level3", "level4"]


def export(encoder: Encoder, head: Descriptors, out: Path, variant: str) -> tuple[Path, Path]:
    set_sampled(encoder, True)
    image = torch.rand(1, 3, 480, 640)
    dense_path, head_path = out / f"{variant}.dense.onnx", out / f"{variant}.descriptors.onnx"
    with torch.no_grad():
        _, *pyramid = encoder(image)
        keypoints = torch.rand(100, 2) * torch.tensor([639.0, 479.0])
        height, width = torch.export.Dim("height", min=32), torch.export.Dim("width", min=32)
        torch.onnx.export(
            encoder, (image,), dense_path, input_names=["image"], output_names=DENSE_OUTPUTS,
            dynamic_shapes={"image": {2: height, 3: width}}, dynamo=True, optimize=True, external_data=False,
        )
        count = torch.export.Dim("keypoints", min=1)
        level = {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
        torch.onnx.export(
            head, (keypoints, *pyramid), head_path, input_names=["keypoints", *DENSE_OUTPUTS[1:]],
            output_names=["descriptors"],
            dynamic_shapes={"keypoints": {0: count}, "level1": level, "level2": level, "level3": level, "level4": level},
            dynamo=True, optimize=True, external_data=False,
        )
    return dense_path, head_path


def reference(encoder: Encoder, head: Descriptors, image: np.ndarray, max_keypoints: int):
    """The network as published (torchvision's deformable convolution, the full feature map) and
    the PyTorch detection."""
    set_sampled(encoder, False)
    with torch.no_grad():
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        features, scores = encoder.published(tensor)
        keypoints = detect_torch(scores[0, 0], max_keypoints)
        descriptors = head.published(features, keypoints)
    return keypoints.numpy(), descriptors.numpy(), scores[0, 0].numpy()


def onnx_pipeline(sessions, image: np.ndarray, max_keypoints: int):
    dense, head = sessions
    tensor = (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    scores, *pyramid = dense.run(None, {"image": np.ascontiguousarray(tensor)})
    keypoints, _ = detect(scores[0, 0], max_keypoints=max_keypoints)
    (descriptors,) = head.run(None, {"keypoints": keypoints, **dict(zip(DENSE_OUTPUTS[1:], pyramid))})
    return keypoints, descriptors, scores[0, 0]


def compare(ref, got, label: str) -> dict:
    """Keypoints matched by position (ties in score may swap which of two equal maxima is kept)."""
    ref_xy, ref_desc, ref_scores = ref
    xy, desc, scores = got
    distance = np.linalg.norm(ref_xy[:, None, :] - xy[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    same = distance[np.arange(len(ref_xy)), nearest] < 1e-3
    report = {
        "label": label,
        "keypoints": (len(ref_xy), len(xy)),
        "same_keypoints": float(same.mean()) if len(ref_xy) else 1.0,
        "score_map_max_abs": float(np.abs(ref_scores - scores).max()),
        "descriptor_max_abs": float(np.abs(ref_desc[same] - desc[nearest[same]]).max()) if same.any() else 0.0,
    }
    print(f"{label:40s} keypoints {report['keypoints']}, same {report['same_keypoints']:.4f}, "
          f"scores max |d| {report['score_map_max_abs']:.1e}, descriptors max |d| {report['descriptor_max_abs']:.1e}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "models" / "aliked")
    parser.add_argument("--out", type=Path, default=ROOT / "landmark" / "extractors" / "aliked_models")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--reference", type=Path, default=ROOT / "tests" / "data" / "aliked-n16-reference.npz")
    args = parser.parse_args()

    import onnxruntime as ort
    from landmark.images import decode_image

    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    photos = [
        ("homography/hpatches_v_churchill/1.png", 1024),
        ("landmarks/sacre_coeur/lightglue_sacre_coeur1.jpg", 1024),
        ("landmarks/sacre_coeur/lightglue_sacre_coeur1.jpg", 517),
        ("homography/oxford_boat/img1.png", 333),
        ("landmarks_hard/oxford_robotcar_b/hfnet_query3.jpg", 700),
    ]
    failures = 0
    for variant in args.variants.split(","):
        encoder, head = load(variant, args.weights)
        paths = export(encoder, head, args.out, variant)
        options = ort.SessionOptions()
        sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]
        for name, side in photos:
            image = decode_image((args.data / name).read_bytes(), name, side)
            report = compare(reference(encoder, head, image, 2048), onnx_pipeline(sessions, image, 2048),
                             f"{variant} {name.split('/')[-1]} {image.shape[1]}x{image.shape[0]}")
            if report["same_keypoints"] < 0.99 or report["descriptor_max_abs"] > 1e-4:
                failures += 1
        for path in paths:
            print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        if variant == "aliked-n16":
            name, side, count = "homography/hpatches_v_churchill/1.png", 640, 256
            image = decode_image((args.data / name).read_bytes(), name, side)
            keypoints, descriptors, _ = reference(encoder, head, image, count)
            args.reference.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                args.reference, image=name, max_image_side=side, max_keypoints=count,
                keypoints=keypoints.astype(np.float32), descriptors=descriptors.astype(np.float32),
            )
            print(f"reference outputs of {name} at {side} px: {args.reference.relative_to(ROOT)}")
    if failures:
        print(f"{failures} checks failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
