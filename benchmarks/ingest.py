"""Ingest: features of 10,000 images written to PostgreSQL, batched against one row at a time.

Rows are DELF-shaped (1000 x 40, see :mod:`features`; replicas with perturbations as in
:mod:`query_scale`), written by :meth:`landmark.store.Store.upsert` into a fresh embedded
PostgreSQL: in batches (a binary COPY and one ``INSERT ... ON CONFLICT`` per batch) and, as the
reference, one upsert per image (one round trip each), timed on a sample and reported as rows/s.
Feature generation is excluded from the timings.

Run: ``.venv/bin/python benchmarks/ingest.py [--rows 10000] [--batch 256]``
Writes ``benchmarks/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from features import delf_shaped, machine, photos, rootsift_features, save
from landmark import config as cfg
from landmark.session import Session
from landmark.settings import Settings
from landmark.store import ExtractorSpec, Row
from query_scale import perturbed


def rows_for(bases: list, start: int, stop: int, rng: np.random.Generator) -> list[Row]:
    return [
        Row(f"synthetic://{i:06d}", "delf", perturbed(bases[i % len(bases)], rng), f"{i:064x}")
        for i in range(start, stop)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--single-rows", type=int, default=500, help="rows written one at a time (reference)")
    args = parser.parse_args()

    delf = delf_shaped(rootsift_features())
    bases = [delf[name] for name in photos()]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="landmark-ingest-") as home:
        with Session(cfg.resolve(Settings, {"home": home}, environ={})) as session:
            store = session.store
            store.bind(ExtractorSpec("delf", {"features": "delf-shaped: RootSIFT, whitened PCA-40"}))
            batched_seconds = 0.0
            for lo in range(0, args.rows, args.batch):
                rows = rows_for(bases, lo, min(lo + args.batch, args.rows), rng)
                clock = time.perf_counter()
                store.upsert(rows)
                batched_seconds += time.perf_counter() - clock
            single_seconds = 0.0
            start = args.rows
            for row in rows_for(bases, start, start + args.single_rows, rng):
                clock = time.perf_counter()
                store.upsert([row])
                single_seconds += time.perf_counter() - clock
            stats = store.stats()
    batched = args.rows / batched_seconds
    single = args.single_rows / single_seconds
    per_image = stats["feature_bytes"] / stats["images"]
    float32 = 1000 * (2 + 40) * 4
    result = {
        "rows": args.rows,
        "batch": args.batch,
        "batched_rows_per_s": round(batched),
        "batched_mb_per_s": round(batched * per_image / 1e6, 1),
        "one_row_per_round_trip_rows_per_s": round(single),
        "speedup": round(batched / single, 2),
        "feature_bytes_per_image": per_image,
        "float32_bytes_per_image": float32,
        "share_of_float32": round(per_image / float32, 3),
    }
    print(f"batched ({args.batch} rows): {batched:,.0f} rows/s ({result['batched_mb_per_s']} MB/s of features)")
    print(f"one row per round trip: {single:,.0f} rows/s; batched is {result['speedup']}x")
    print(f"feature bytes per image: {per_image:,.0f} ({result['share_of_float32']:.2f} of float32's {float32:,})")
    path = save("ingest", {"machine": machine(), "results": result})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
