"""Real features for the benchmarks, from the photos in ``../shared/data/landmarks``.

- ``rootsift``: what the ``rootsift`` extractor stores (1000 x 128 per image).
- ``aliked``: what the ``aliked`` extractor stores (1024 x 128 per image).
- ``delf``: DELF-shaped (1000 x 40): the same RootSIFT descriptors projected on the top 40
  principal components of all of them, whitened (each component divided by its standard
  deviation, which spreads them as evenly as DELF's learnt descriptors) and L2-normalised.
  At DELF's 0.8 distance threshold this keeps a median of ~220 putative matches for
  same-landmark pairs and ~80 for others; without whitening 0.8 keeps most features of any pair.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from landmark.contract import Features, l2_normalise

ROOT = Path(__file__).resolve().parent
PROJECT = ROOT.parent
LANDMARKS = PROJECT.parent / "shared" / "data" / "landmarks"
RESULTS = ROOT / "results"


def photos() -> dict[str, Path]:
    """``{"group/name": path}`` of every photo, in a stable order."""
    groups = json.loads((LANDMARKS / "groups.json").read_text())
    return {f"{g}/{n}": LANDMARKS / g / n for g in sorted(groups) for n in groups[g]}


def rootsift_features(name: str = "rootsift") -> dict[str, Features]:
    """Features of every photo by the extractor ``name`` with its defaults."""
    from landmark.extractors import create
    from landmark.images import decode_image

    extractor = create(name)
    return {
        name: extractor.extract(decode_image(path.read_bytes(), name, extractor.config.max_image_side))
        for name, path in photos().items()
    }


def delf_shaped(features: dict[str, Features], dim: int = 40) -> dict[str, Features]:
    stacked = np.concatenate([f.descriptors for f in features.values()]).astype(np.float64)
    mean = stacked.mean(axis=0)
    _, singular, components = np.linalg.svd(stacked - mean, full_matrices=False)
    scale = singular[:dim] / np.sqrt(len(stacked))
    projection = (components[:dim].T / scale).astype(np.float32)
    return {
        name: Features(f.locations, l2_normalise((f.descriptors - mean.astype(np.float32)) @ projection), f.image_size)
        for name, f in features.items()
    }


def group(name: str) -> str:
    return name.split("/", 1)[0]


def machine() -> dict[str, object]:
    import os

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "python": platform.python_version(),
            "numpy": np.__version__, "date": time.strftime("%Y-%m-%d")}


def save(name: str, document: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
