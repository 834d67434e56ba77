"""Agreement of the device path with the CPU path on real features: one case, every landmark
photo queried against all the other photos by both (``benchmarks/gpu.py`` and the ``gpu`` tests).

Tolerance as for the CPU path against the reference (``pairs.py``): inlier counts within
``max(3, 10%)``, and top-10 rankings equal up to near ties.
"""

from __future__ import annotations

import numpy as np

from landmark.contract import FeatureBatch, Features
from landmark.gpu import hold
from landmark.gpu.match import match_held, use_triton
from landmark.matching import MatchConfig, match_batch
from pairs import same_up_to_near_ties, tolerance


def agreement(photos: dict[str, Features], config: MatchConfig, *, device: object, kernels: str, held_as: str,
              queries: int | None = None) -> dict[str, object]:
    """Over the first ``queries`` landmark photos (all by default): pairs, the shares of pairs
    within the tolerance and with identical ``(inliers, putatives)``, and ``"n/m"`` queries whose
    top-10 is the CPU path's up to near ties."""
    import torch

    names = list(photos)
    asked = [n for n in names if not n.startswith("_")][:queries]
    within = same = total = near = 0
    for q in asked:
        others = [n for n in names if n != q]
        batch = FeatureBatch.of([photos[n] for n in others], photos[q].descriptor_dim)
        cpu = match_batch(photos[q], batch, config)
        ours = match_held(photos[q], hold(batch, descriptors=held_as, device=device), config, kernels=kernels)
        within += sum(abs(int(a) - int(b)) <= tolerance(b) for a, b in zip(ours[:, 0], cpu[:, 0]))
        same += int(np.all(ours == cpu, axis=1).sum())
        total += len(others)
        near += same_up_to_near_ties(others, ours, cpu, config.min_inliers)
    return {"held_as": held_as, "kernels": "triton" if use_triton(torch.device(device), kernels) else "torch",
            "pairs": total, "within_tolerance": round(within / total, 4), "identical_counts": round(same / total, 4),
            "top10_up_to_near_ties": f"{near}/{len(asked)}"}
