"""Per-pair verification throughput and agreement: landmark's matching against the reference.

The reference is DELF's own pipeline (:mod:`landmark.reference`: a k-d tree, then
scikit-image's ``ransac`` with an affine model), one pair at a time. landmark's path is
:func:`landmark.matching.match_partition`, one query against all other images at once.
Both run in this process on one core (BLAS pinned to one thread), on the same real features
(see :mod:`features`): DELF-shaped with DELF's preset, RootSIFT with the old path (Lowe's
ratio 0.8, affine 20 px) and with its preset (mutual + ratio 0.9, affine 12 px), ALIKED with
its preset, and ALIKED with a homography (MAGSAC++, which the reference does not do: timed only).

Printed and saved to ``benchmarks/results/pairs.json``:
- ms per pair and the throughput ratio (reference time / landmark time);
- agreement of inlier counts: share of pairs with ``|ours - ref| <= max(3, 10% of ref)``;
- identical top-10 rankings per query (ranked by inliers, then putatives, then name, at the
  default ``min_inliers``), ours against the reference, and "up to near ties": differing only
  between images whose reference counts lie within the agreement tolerance (RANSAC's own
  noise; the tail of a top-10 is often street scenes with 5-7 chance inliers);
- the same rankings from stored (float16 / quarter-pixel) features against float32 ones.

Run: ``.venv/bin/python benchmarks/pairs.py [--reference-queries N]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from features import delf_shaped, group, machine, rootsift_features, save  # noqa: E402
from landmark.contract import Features, decode_descriptors, decode_locations, encode_descriptors, encode_locations  # noqa: E402
from landmark.matching import PRESETS, MatchConfig, match_partition  # noqa: E402
from landmark.reference import reference_inliers  # noqa: E402

TOP = 10


def top_ranking(names: list[str], counts: np.ndarray, min_inliers: int) -> list[str]:
    order = sorted(
        (i for i in range(len(names)) if counts[i, 0] >= max(1, min_inliers)),
        key=lambda i: (-counts[i, 0], -counts[i, 1], names[i]),
    )
    return [names[i] for i in order[:TOP]]


def tolerance(count: float) -> float:
    return max(3.0, 0.1 * count)


def same_up_to_near_ties(names: list[str], ours: np.ndarray, theirs: np.ndarray, min_inliers: int) -> bool:
    """Whether two top-10 rankings differ only where ``theirs`` cannot tell the images apart:
    every pair that the two order differently, and every image in one top-10 but not the
    other (against the other's 10th), has counts within the agreement tolerance in ``theirs``."""
    index = {n: i for i, n in enumerate(names)}
    a, b = top_ranking(names, ours, min_inliers), top_ranking(names, theirs, min_inliers)
    count = {n: float(theirs[index[n], 0]) for n in names}
    for i, first in enumerate(a):
        for second in a[i + 1:]:
            if count[second] - count[first] > tolerance(count[first]):
                return False
    for missing in set(a) ^ set(b):
        shortlist = b if missing in a else a
        boundary = count[shortlist[-1]] if len(shortlist) == TOP else float(max(1, min_inliers))
        if abs(count[missing] - boundary) > tolerance(boundary):
            return False
    return True


def stored_copy(f: Features, encoding: str) -> Features:
    """The features as the store gives them back (``encoding`` descriptors, quarter-pixel locations)."""
    return Features(
        decode_locations(encode_locations(f.locations)),
        decode_descriptors(encode_descriptors(f.descriptors, encoding), f.descriptor_dim, encoding),
        f.image_size,
    )


def run(kind: str, features: dict[str, Features], config: MatchConfig, reference_queries: int,
        encoding: str = "float16") -> dict:
    names = list(features)
    queries = [n for n in names if not group(n).startswith("_")]
    ours: dict[str, np.ndarray] = {}
    ours_stored: dict[str, np.ndarray] = {}
    stored = {n: stored_copy(f, encoding) for n, f in features.items()}
    match_partition(features[queries[0]], [features[n] for n in names[:2]], config)  # warm-up
    pairs = 0
    start = time.perf_counter()
    for q in queries:
        others = [n for n in names if n != q]
        ours[q] = match_partition(features[q], [features[n] for n in others], config)
        pairs += len(others)
    ours_seconds = time.perf_counter() - start
    for q in queries:
        others = [n for n in names if n != q]
        ours_stored[q] = match_partition(stored[q], [stored[n] for n in others], config)

    reference: dict[str, np.ndarray] = {}
    ref_pairs = 0
    start = time.perf_counter()
    for q in queries[:reference_queries]:
        others = [n for n in names if n != q]
        reference[q] = np.array([reference_inliers(features[q], features[n], config, rng=0) for n in others])
        ref_pairs += len(others)
    ref_seconds = time.perf_counter() - start

    within = total = 0
    deviations = []
    same_top = near_top = 0
    for q, ref in reference.items():
        mine = ours[q]
        # The reference verifies every pair with >= 3 putatives; ours skips those that cannot
        # reach min_inliers, so agreement is judged where both verified.
        verified = mine[:, 1] >= max(3, config.min_inliers)
        dev = np.abs(mine[verified, 0] - ref[verified, 0])
        tol = np.maximum(3, 0.1 * ref[verified, 0])
        within += int(np.sum(dev <= tol))
        total += int(verified.sum())
        deviations += dev.tolist()
        others = [n for n in names if n != q]
        same_top += top_ranking(others, mine, config.min_inliers) == top_ranking(others, ref, config.min_inliers)
        near_top += same_up_to_near_ties(others, mine, ref, config.min_inliers)
    stored_same = stored_near = 0
    for q in queries:
        others = [n for n in names if n != q]
        stored_same += top_ranking(others, ours[q], config.min_inliers) == top_ranking(
            others, ours_stored[q], config.min_inliers
        )
        stored_near += same_up_to_near_ties(others, ours_stored[q], ours[q], config.min_inliers)
    ours_ms = 1e3 * ours_seconds / pairs
    ref_ms = 1e3 * ref_seconds / ref_pairs if ref_pairs else None
    return {
        "features": kind,
        "descriptor_dim": next(iter(features.values())).descriptor_dim,
        "rule": config.rule,
        "ratio": config.ratio if config.rule != "distance" else None,
        "verification": f"{config.verification} {config.ransac_threshold:g} px",
        "stored_as": encoding,
        "pairs": pairs,
        "reference_pairs": ref_pairs,
        "ours_ms_per_pair": round(ours_ms, 3),
        "reference_ms_per_pair": round(ref_ms, 1) if ref_ms else None,
        "speedup": round(ref_ms / ours_ms, 1) if ref_ms else None,
        "agreement_tolerance": "|ours - ref| <= max(3, 10% of ref)",
        "agreement_share": round(within / total, 4) if total else None,
        "agreement_pairs": total,
        "max_deviation": int(max(deviations, default=0)),
        "identical_top10_vs_reference": f"{same_top}/{len(reference)}",
        "top10_vs_reference_up_to_near_ties": f"{near_top}/{len(reference)}",
        "identical_top10_stored_vs_float32": f"{stored_same}/{len(queries)}",
        "top10_stored_vs_float32_up_to_near_ties": f"{stored_near}/{len(queries)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"],
                        help="descriptor product precisions to measure (bfloat16 needs landmark[mkl])")
    parser.add_argument("--reference-queries", type=int, default=4,
                        help="queries verified by the (slow) reference; each is 45 pairs (default 4)")
    args = parser.parse_args()
    sift = rootsift_features()
    delf = delf_shaped(sift)
    aliked = rootsift_features("aliked")
    homography = dataclasses.replace(PRESETS["aliked"], verification="homography", ransac_threshold=6.0,
                                     ransac_trials=2000)
    cases = (
        ("delf-shaped (RootSIFT, whitened PCA-40)", delf, PRESETS["delf"], "float16", args.reference_queries),
        ("rootsift", sift, MatchConfig(rule="ratio", ratio=0.8), "float16", args.reference_queries),
        ("rootsift", sift, PRESETS["rootsift"], "float16", args.reference_queries),
        ("aliked", aliked, PRESETS["aliked"], "int8", args.reference_queries),
        ("aliked", aliked, homography, "int8", 0),
    )
    rows = []
    for precision in args.precision:
        for kind, features, preset, encoding, reference_queries in cases:
            config = dataclasses.replace(preset, precision=precision)
            rows.append({**run(kind, features, config, reference_queries, encoding), "precision": precision})
    print(f"{'features':40} {'rule':8} {'verification':16} {'precision':9} {'ours ms':>8} {'ref ms':>8} {'speedup':>8} "
          f"{'agree':>7} {'top10=ref':>9} {'~ref':>5} {'stored=f32':>10} {'~f32':>5}")
    for r in rows:
        print(f"{r['features']:40} {r['rule']:8} {r['verification']:16} {r['precision']:9} {r['ours_ms_per_pair']:>8} "
              f"{r['reference_ms_per_pair'] or '-':>8} {r['speedup'] or '-':>8} "
              f"{format(r['agreement_share'], '.1%') if r['agreement_share'] is not None else '-':>7} "
              f"{r['identical_top10_vs_reference']:>9} "
              f"{r['top10_vs_reference_up_to_near_ties']:>5} {r['identical_top10_stored_vs_float32']:>10} "
              f"{r['top10_stored_vs_float32_up_to_near_ties']:>5}")
    path = save("pairs", {"machine": machine(), "threads": 1, "results": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
