"""Real features of ``../shared/data/landmarks`` in one small file, for the GPU benchmark and the
``gpu`` tests, which run where the extractors (and the photos) may not be.

``benchmarks/data/gpu_features.npz`` holds, for each kind, what the store would hold (and give
back) for the 17 photos of landmarks and the first :data:`DISTRACTORS` of the 29 distractors
(all 46 would make 8 MB):

- ``delf``: DELF-shaped, 1000 x 40 (:func:`features.delf_shaped` of RootSIFT), float16;
- ``aliked``: ALIKED-n16, 1024 x 128, int8 (the ``aliked`` extractor's own encoding);

each as ``{kind}_offsets`` int64 ``[B + 1]``, ``{kind}_locations`` uint16 quarter pixels
``[M x 2]``, ``{kind}_descriptors`` ``[M x D]`` and ``{kind}_sizes`` ``[B x 2]``; ``names`` are
``group/photo``. Made here by ``.venv/bin/python benchmarks/gpu_features.py`` (about a minute);
read anywhere by :func:`load`, which needs numpy and :mod:`landmark.contract` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landmark.contract import Features, decode_descriptors, decode_locations, encode_descriptors, encode_locations

PATH = Path(__file__).resolve().parent / "data" / "gpu_features.npz"
DISTRACTORS = 12
KINDS = {"delf": "float16", "aliked": "int8"}
"""Kind -> how the store encodes its descriptors."""


def load(path: Path = PATH) -> dict[str, dict[str, Features]]:
    """``{kind: {"group/photo": Features}}``, the features as the store gives them back."""
    data = np.load(path)
    names = [str(n) for n in data["names"]]
    out: dict[str, dict[str, Features]] = {}
    for kind, encoding in KINDS.items():
        offsets, locations, descriptors = (data[f"{kind}_{part}"] for part in ("offsets", "locations", "descriptors"))
        dim = descriptors.shape[1]
        out[kind] = {
            name: Features(
                decode_locations(locations[lo:hi].tobytes()),
                decode_descriptors(descriptors[lo:hi].tobytes(), dim, encoding),
                tuple(int(v) for v in data[f"{kind}_sizes"][b]),
            )
            for b, (name, lo, hi) in enumerate(zip(names, offsets[:-1], offsets[1:]))
        }
    return out


def main() -> None:
    from features import delf_shaped, group, rootsift_features

    extracted = {"delf": delf_shaped(rootsift_features()), "aliked": rootsift_features("aliked")}
    distractors = [n for n in extracted["delf"] if group(n).startswith("_")][:DISTRACTORS]
    names = [n for n in extracted["delf"] if not group(n).startswith("_") or n in distractors]
    arrays: dict[str, np.ndarray] = {"names": np.array(names)}
    for kind, encoding in KINDS.items():
        features = [extracted[kind][name] for name in names]
        dim = features[0].descriptor_dim
        dtype = np.float16 if encoding == "float16" else np.int8
        arrays[f"{kind}_offsets"] = np.concatenate([[0], np.cumsum([f.num_features for f in features])]).astype(np.int64)
        arrays[f"{kind}_locations"] = np.concatenate(
            [np.frombuffer(encode_locations(f.locations), "<u2").reshape(-1, 2) for f in features])
        arrays[f"{kind}_descriptors"] = np.concatenate(
            [np.frombuffer(encode_descriptors(f.descriptors, encoding), dtype).reshape(-1, dim) for f in features])
        arrays[f"{kind}_sizes"] = np.array([f.image_size for f in features], np.int32)
    PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(PATH, **arrays)
    print(f"saved {PATH} ({PATH.stat().st_size / 1e6:.1f} MB): {len(names)} photos, " + ", ".join(
        f"{kind} {arrays[f'{kind}_descriptors'].shape[1]}-D" for kind in KINDS))


if __name__ == "__main__":
    main()
