"""Query time against collection size: 1k, 10k, 50k stored images, cold and warm.

The collection: DELF-shaped features (1000 x 40, see :mod:`features`) of the 46 real photos,
replicated with perturbations: each copy's keypoints go through a random similarity (scale
0.8-1.25, rotation +-15 degrees, shift) plus 0.5 px noise, and its descriptors get Gaussian noise
(sigma 0.05 per component) before re-normalisation. Each replica is written through the store's
batched upsert into a fresh embedded PostgreSQL, so the ingest rate is measured on the way.

A query is :meth:`landmark.session.Session.query_features` end to end (plan, Dask fan-out over
a local cluster of 2 single-threaded workers, ranking) with the ``delf`` preset, excluding the
query's own extraction. Cold: the first query of a client (partitions read from PostgreSQL);
warm: the same query repeated (nothing re-read, nothing recomputed: the workers hold both the
partitions and that query's results); held: a new query on partitions the workers hold (read
nothing, match everything).

The reference (k-d tree + scikit-image RANSAC, one pair at a time) is timed on a sample of
pairs from the same collection in the same run and extrapolated to the whole collection on
the same 2 cores.

Run: ``.venv/bin/python benchmarks/query_scale.py [--sizes 1000 10000 50000]``
Writes ``benchmarks/results/query_scale.json`` and ``query_scale.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np

from features import RESULTS, delf_shaped, group, machine, photos, rootsift_features, save
from landmark import config as cfg
from landmark.contract import Features, l2_normalise
from landmark.matching import PRESETS
from landmark.reference import reference_inliers
from landmark.session import Session
from landmark.settings import Settings
from landmark.store import ExtractorSpec, Row

BATCH = 256


def perturbed(base: Features, rng: np.random.Generator) -> Features:
    width, height = base.image_size
    angle = np.deg2rad(rng.uniform(-15, 15))
    scale = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([width, height]) / 2
    moved = (base.locations - centre) @ rotation.T + centre + rng.uniform(-40, 40, 2)
    moved += rng.normal(0, 0.5, moved.shape)
    moved = np.clip(moved, 0, [width - 1, height - 1])
    noisy = l2_normalise(base.descriptors + rng.normal(0, 0.05, base.descriptors.shape).astype(np.float32))
    return Features(moved.astype(np.float32), noisy, base.image_size)


def grow(session: Session, bases: list[tuple[str, Features]], start: int, stop: int, seed: int) -> float:
    """Add replicas ``start..stop-1``; returns rows per second."""
    rng = np.random.default_rng(seed)
    written = 0
    clock = time.perf_counter()
    for lo in range(start, stop, BATCH):
        rows = []
        for i in range(lo, min(lo + BATCH, stop)):
            name, base = bases[i % len(bases)]
            rows.append(Row(f"synthetic://{i:06d}/{name}", "delf", perturbed(base, rng), f"{i:064x}"))
        written += session.store.upsert(rows)
    return written / (time.perf_counter() - clock)


def reference_seconds_per_pair(session_features: list[Features], query: Features, samples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(session_features), size=min(samples, len(session_features)), replace=False)
    clock = time.perf_counter()
    for i in picks:
        reference_inliers(query, session_features[i], PRESETS["delf"], rng=0)
    return (time.perf_counter() - clock) / len(picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--warm-repeats", type=int, default=3)
    parser.add_argument("--reference-pairs", type=int, default=40)
    parser.add_argument("--precision", default="float32", help="float32 or bfloat16 (needs landmark[mkl])")
    args = parser.parse_args()

    config = dataclasses.replace(PRESETS["delf"], precision=args.precision)
    delf = delf_shaped(rootsift_features())
    names = list(photos())
    queries = [n for n in names if not group(n).startswith("_")][:2]
    bases = [(n, delf[n]) for n in names]
    rows = []
    with tempfile.TemporaryDirectory(prefix="landmark-bench-") as home:
        settings = cfg.resolve(Settings, {"home": home, "dask_workers": 2}, environ={})
        with Session(settings) as session:
            session.store.bind(ExtractorSpec("delf", {"features": "delf-shaped: RootSIFT, whitened PCA-40"}))
            stored = 0
            rng = np.random.default_rng(1)
            for size in sorted(args.sizes):
                ingest_rate = grow(session, bases, stored, size, seed=size)
                stored = size
                cold, warm, held, compared = [], [], [], 0
                for name, other in zip(queries, queries[1:] + queries[:1]):
                    uri = f"bench://query/{name}"
                    first = session.query_features(uri, delf[name], match_config=config, top_k=20)
                    cold.append(first.timings_s["total"])
                    compared = first.counts["compared"]
                    assert first.counts["partitions_read"] == first.counts["partitions"]
                    for _ in range(args.warm_repeats):
                        again = session.query_features(uri, delf[name], match_config=config, top_k=20)
                        assert again.counts["partitions_read"] == 0
                        assert [m.inliers for m in again.matches] == [m.inliers for m in first.matches]
                        warm.append(again.timings_s["total"])
                    fresh = session.query_features(
                        f"bench://query/{other}", delf[other], match_config=config, top_k=20
                    )
                    assert fresh.counts["partitions_read"] == 0
                    held.append(fresh.timings_s["total"])
                    session.partition_cache.clear()  # the next query starts cold, as a new client would
                sample = [perturbed(delf[bases[i % len(bases)][0]], rng) for i in range(args.reference_pairs)]
                ref_pair = reference_seconds_per_pair(sample, delf[queries[0]], args.reference_pairs, seed=size)
                reference_total = ref_pair * size / 2  # the same 2 cores, perfectly parallel
                row = {
                    "stored_images": size,
                    "compared": compared,
                    "ingest_rows_per_s": round(ingest_rate),
                    "cold_s": round(statistics.median(cold), 2),
                    "warm_s": round(statistics.median(warm), 2),
                    "warm_speedup": round(statistics.median(cold) / statistics.median(warm), 2),
                    "held_s": round(statistics.median(held), 2),
                    "held_speedup": round(statistics.median(cold) / statistics.median(held), 2),
                    "reference_ms_per_pair": round(ref_pair * 1e3, 1),
                    "reference_estimate_s": round(reference_total, 1),
                    "ratio_vs_reference_held": round(reference_total / statistics.median(held), 1),
                    "ratio_vs_reference_cold": round(reference_total / statistics.median(cold), 1),
                }
                rows.append(row)
                print(row, flush=True)
            stats = session.info()

    print(f"\n{'images':>7} {'cold s':>7} {'held s':>7} {'warm s':>7} {'warm x':>7} {'ref est s':>10} "
          f"{'held x ref':>10} {'ingest rows/s':>14}")
    for r in rows:
        print(f"{r['stored_images']:>7} {r['cold_s']:>7} {r['held_s']:>7} {r['warm_s']:>7} {r['warm_speedup']:>7} "
              f"{r['reference_estimate_s']:>10} {r['ratio_vs_reference_held']:>10} {r['ingest_rows_per_s']:>14}")
    bytes_per_image = stats["feature_bytes"] / stats["images"]
    float32_bytes = 1000 * (2 + 40) * 4
    print(f"stored feature bytes per image: {bytes_per_image:.0f} ({bytes_per_image / float32_bytes:.2f} of float32)")
    name = "query_scale" if args.precision == "float32" else f"query_scale-{args.precision}"
    path = save(name, {"precision": args.precision,
        "machine": machine(), "workers": 2, "threads_per_worker": 1, "collection": __doc__.split("\n\n")[1],
        "results": rows, "feature_bytes_per_image": bytes_per_image, "float32_bytes_per_image": float32_bytes,
    })
    plot(rows, RESULTS / f"{name}.png")
    print(f"saved {path} and {RESULTS / f'{name}.png'}")


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["stored_images"] for r in rows]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.loglog(sizes, [r["cold_s"] for r in rows], "o-", label="landmark, cold (partitions read)")
    axes.loglog(sizes, [r["held_s"] for r in rows], "o-", label="landmark, new query (partitions held)")
    axes.loglog(sizes, [r["warm_s"] for r in rows], "o-", label="landmark, repeated query")
    axes.loglog(sizes, [r["reference_estimate_s"] for r in rows], "s--", label="reference (k-d tree + skimage), est.")
    axes.axhline(10, color="grey", lw=0.8, ls=":", label="10 s")
    axes.set_xlabel("stored images (1000 DELF-shaped features each)")
    axes.set_ylabel("query time, s (2 cores)")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
