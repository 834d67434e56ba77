"""Query time and shortlist recall against collection size, index and exhaustive search.

The collection: the real features (default extractor, ALIKED) of ``../shared/data/landmarks_hard``
and the 855 photos of ``../shared/data/distractors``, then more distractors derived from the real
distractors' features up to each size: each derived image keeps a random 80% of a distractor's
keypoints, moved by a random similarity (scale 0.7-1.4, rotation +-30 degrees, a shift; what a
crop, zoom or tilt of the photo would do) with 1 px noise, and its descriptors get Gaussian noise
(sigma 0.03 per component) before re-normalisation. Derived images come from distractors only,
so the ground truth (the hard set's groups) is unchanged: every derived image is a wrong answer.

Queries: 12 photos of the hard set, each against the whole collection (its own row left out),
with :meth:`landmark.session.Session.query_features` end to end (plan, Dask fan-out over a local
cluster of 2 single-threaded workers, ranking), excluding the query's own extraction. ``index``:
the retrieval index's shortlist (default 100) verified; ``exhaustive``: every image verified (the
reference, run where it fits in this machine's memory). Cold: the first query of a client
(vectors or features read from PostgreSQL); warm: a new query once they are held.

Run: ``.venv/bin/python benchmarks/scale.py [--sizes 10000 100000] [--source-home DIR]``
(``--source-home`` names a store that already holds the real features, e.g. one kept by
``landmark eval --keep-store``; without it they are extracted first, about 3 minutes).
Writes ``benchmarks/results/scale.json`` and ``scale.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from features import PROJECT, RESULTS, machine, save
from landmark import config as cfg
from landmark.contract import Features, l2_normalise
from landmark.evaluation import average_precision, precision_at_1
from landmark.retrieval import build, table
from landmark.session import Session
from landmark.settings import Settings
from landmark.store import ExtractorSpec, Partition, Row

HARD = PROJECT.parent / "shared" / "data" / "landmarks_hard"
DISTRACTORS = PROJECT.parent / "shared" / "data" / "distractors"
BATCH = 500


def source_features(home: str) -> tuple[dict[str, Features], dict]:
    """Every stored image of the store under ``home``: ``{uri: features}``, and its extractor spec."""
    settings = cfg.resolve(Settings, {"home": home}, environ={})
    with Session(settings) as session:
        spec = session.store.extractor_spec()
        uris, features = session.store.read_partition(Partition(0, 2**62))
    return dict(zip(uris, features)), {"name": spec.name, "config": spec.config}


def derived(base: Features, rng: np.random.Generator) -> Features:
    keep = np.sort(rng.choice(base.num_features, int(0.8 * base.num_features), replace=False))
    width, height = base.image_size
    angle = np.deg2rad(rng.uniform(-30, 30))
    scale = np.exp(rng.uniform(np.log(0.7), np.log(1.4)))
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([width, height]) / 2
    moved = (base.locations[keep] - centre) @ rotation.T + centre + rng.uniform(-60, 60, 2)
    moved = np.clip(moved + rng.normal(0, 1.0, moved.shape), 0, [width - 1, height - 1])
    noise = rng.normal(0, 0.03, (len(keep), base.descriptor_dim)).astype(np.float32)
    noisy = l2_normalise(base.descriptors[keep] + noise)
    return Features(moved.astype(np.float32), noisy, base.image_size)


def write(session: Session, rows: list[Row]) -> tuple[float, float]:
    """Store ``rows`` and their vectors; seconds for each of the two."""
    clock = time.perf_counter()
    session.store.upsert(rows)
    features_s = time.perf_counter() - clock
    clock = time.perf_counter()
    build.add(session.store, {r.uri: r.features for r in rows}, {r.uri: r.content_sha256 for r in rows})
    return features_s, time.perf_counter() - clock


def score(ranked: list[str], relevant: set[str]) -> tuple[float, float]:
    return average_precision(ranked, relevant), precision_at_1(ranked, relevant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--source-home", help="a store holding the real features (default: extract them)")
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--exhaustive-up-to", type=int, default=10000,
                        help="run the exhaustive reference up to this size (it holds every feature in memory)")
    parser.add_argument("--model-only", action="store_true",
                        help="keep the saved measurements; measure the scoring cost again, refit and replot")
    args = parser.parse_args()
    if args.model_only:
        import json

        document = json.loads((RESULTS / "scale.json").read_text())
        document["model"] = fit(document["results"])
        print(f"model (index, warm): {document['model']['text']}")
        save("scale", document)
        plot(document["results"], document["model"], RESULTS / "scale.png")
        return

    with tempfile.TemporaryDirectory(prefix="landmark-scale-") as work:
        source = args.source_home
        if source is None:
            source = os.path.join(work, "source")
            subprocess.run([sys.executable, "-m", "landmark.cli", "index", str(HARD), str(DISTRACTORS),
                            "--home", source], check=True)
        real, spec = source_features(source)
        print(f"{len(real)} real images from {source}", flush=True)
        hard = sorted(u for u in real if u.startswith(HARD.as_uri()) and "/_" not in u[len(HARD.as_uri()):])
        group = {u: u[len(HARD.as_uri()):].strip("/").split("/")[0] for u in hard}
        members: dict[str, set[str]] = {}
        for u, g in group.items():
            members.setdefault(g, set()).add(u)
        rng = np.random.default_rng(0)
        queries = [u for u in rng.permutation(hard) if len(members[group[u]]) > 1][: args.queries]
        distractors = [u for u in real if u not in group]

        settings = cfg.resolve(Settings, {"home": os.path.join(work, "target"), "dask_workers": 2}, environ={})
        rows_out: list[dict] = []
        with Session(settings) as session:
            session.store.bind(ExtractorSpec(spec["name"], spec["config"]))
            encoding = "int8" if spec["name"] == "aliked" else "float16"
            real_rows = [Row(u, spec["name"], f, f"{i:064x}", encoding) for i, (u, f) in enumerate(real.items())]
            for lo in range(0, len(real_rows), BATCH):
                session.store.upsert(real_rows[lo:lo + BATCH])
            clock = time.perf_counter()
            state = build.train(session.store)
            print(f"trained on {len(real_rows)} images in {time.perf_counter() - clock:.1f} s: {state.describe()}")
            stored = len(real_rows)
            exhaustive_config = session.matching({"search": "exhaustive"})
            index_config = session.matching({"search": "index"})
            for size in sorted(args.sizes):
                add_s = features_s = 0.0
                added = 0
                rng = np.random.default_rng(size)
                while stored < size:
                    batch = []
                    for i in range(stored, min(size, stored + BATCH)):
                        base = real[distractors[rng.integers(len(distractors))]]
                        features = derived(base, rng)
                        batch.append(Row(f"derived://{i:07d}", spec["name"], features, f"{i:064x}", encoding))
                    f_s, a_s = write(session, batch)
                    features_s, add_s = features_s + f_s, add_s + a_s
                    added, stored = added + len(batch), stored + len(batch)
                print(f"{stored} stored ({added} derived added: features {features_s:.0f} s, "
                      f"index vectors {add_s:.0f} s)", flush=True)
                modes = {"index": index_config}
                if size <= args.exhaustive_up_to:
                    modes["exhaustive"] = exhaustive_config
                results: dict[str, dict] = {}
                rankings: dict[str, dict[str, list[str]]] = {}
                for mode, config in modes.items():
                    session.partition_cache.clear()
                    times, cold = [], None
                    ranked: dict[str, list[str]] = {}
                    for n, uri in enumerate(queries):
                        result = session.query_features(uri, real[uri], match_config=config, top_k=stored)
                        ranked[uri] = [m.uri for m in result.matches]
                        if n == 0:
                            cold = result.timings_s["total"]
                        else:
                            times.append(result.timings_s["total"])
                        print(f"  {mode} {uri.rsplit('/', 2)[-2]}: {result.timings_s['total']:.2f} s, "
                              f"{result.counts['compared']} verified", flush=True)
                    maps = [score(ranked[u], members[group[u]] - {u}) for u in queries]
                    results[mode] = {
                        "cold_s": round(cold or 0.0, 3), "warm_s": round(statistics.median(times), 3),
                        "mAP": round(statistics.mean(m for m, _ in maps), 4),
                        "P@1": round(statistics.mean(p for _, p in maps), 4),
                    }
                    rankings[mode] = ranked
                if "exhaustive" in rankings:
                    verified = kept = verified_same = kept_same = 0
                    for u in queries:
                        full, short = rankings["exhaustive"][u], set(rankings["index"][u])
                        same = [x for x in full if x in members[group[u]]]
                        verified, kept = verified + len(full), kept + sum(x in short for x in full)
                        verified_same, kept_same = verified_same + len(same), kept_same + sum(x in short for x in same)
                    results["index"]["recall"] = round(kept / max(1, verified), 4)
                    results["index"]["recall_same_place"] = round(kept_same / max(1, verified_same), 4)
                    results["index"]["speedup_vs_exhaustive_warm"] = round(
                        results["exhaustive"]["warm_s"] / results["index"]["warm_s"], 1)
                with table.transaction(session.store) as cur:
                    cur.execute("SELECT pg_total_relation_size('retrieval_vectors')")
                    vector_bytes = int(cur.fetchone()[0])
                row = {"stored_images": stored, **{f"{m}_{k}": v for m, r in results.items() for k, v in r.items()},
                       "index_vector_bytes_per_image": round(vector_bytes / stored),
                       "add_10k_to_index_s": round(add_s / max(1, added) * 10000, 1),
                       "features_10k_s": round(features_s / max(1, added) * 10000, 1)}
                rows_out.append(row)
                print(row, flush=True)

    model = fit(rows_out)
    print(f"\n{'images':>8} {'index warm s':>12} {'index cold s':>12} {'exh. warm s':>11} {'recall':>7} "
          f"{'same-place':>10} {'mAP idx/exh':>12} {'vector B/img':>12} {'add 10k s':>9}")
    for r in rows_out:
        print(f"{r['stored_images']:>8} {r['index_warm_s']:>12} {r['index_cold_s']:>12} "
              f"{r.get('exhaustive_warm_s', '-'):>11} {r.get('index_recall', '-'):>7} "
              f"{r.get('index_recall_same_place', '-'):>10} "
              f"{r['index_mAP']}/{r.get('exhaustive_mAP', '-'):<6} {r['index_vector_bytes_per_image']:>12} "
              f"{r['add_10k_to_index_s']:>9}")
    print(f"model (index, warm): {model['text']}")
    path = save("scale", {"machine": machine(), "workers": 2, "threads_per_worker": 1,
                          "collection": __doc__.split("\n\n")[1], "results": rows_out, "model": model})
    plot(rows_out, model, RESULTS / "scale.png")
    print(f"saved {path} and {RESULTS / 'scale.png'}")


def scoring_seconds_per_image(dim: int = 4096, images: int = 50000, repeats: int = 10) -> float:
    """What scoring one held vector costs one worker (one thread): a product and a top-100."""
    from landmark.retrieval.shortlist import HeldVectors, most_similar

    rng = np.random.default_rng(0)
    held = HeldVectors(np.arange(images), [""] * images, rng.standard_normal((images, dim), np.float32),
                       np.arange(images), np.zeros(0, np.int64))
    query = rng.standard_normal(dim).astype(np.float32)
    most_similar(held, query, None, 100)
    clock = time.perf_counter()
    for _ in range(repeats):
        most_similar(held, query, None, 100)
    return (time.perf_counter() - clock) / repeats / images


def fit(rows: list[dict], workers: int = 2) -> dict:
    """Index query time at a million images: the warm time measured at the largest size, plus
    scoring the images beyond it (the only part that grows: the shortlist verified stays 100
    images), at the cost per image measured here, spread over the workers. Assumes the vectors
    stay in the workers' memory (16 kB an image as float32) and partitions stay spread evenly."""
    largest = rows[-1]
    per_image = scoring_seconds_per_image()
    million = largest["index_warm_s"] + (1_000_000 - largest["stored_images"]) * per_image / workers
    return {"scoring_us_per_image_per_worker": round(per_image * 1e6, 3), "one_million_s": round(million, 2),
            "text": f"{largest['index_warm_s']} s at {largest['stored_images']:,} images + "
                    f"{per_image * 1e6:.2f} us per further image per worker ({workers} workers): "
                    f"{million:.2f} s at 1,000,000 images (vectors held: 16 GB as float32 across the workers)"}


def plot(rows: list[dict], model: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["stored_images"] for r in rows]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.loglog(sizes, [r["index_warm_s"] for r in rows], "o-", label="index: shortlist verified (warm)")
    axes.loglog(sizes, [r["index_cold_s"] for r in rows], "o:", label="index, cold (vectors read)")
    exhaustive = [(r["stored_images"], r["exhaustive_warm_s"]) for r in rows if "exhaustive_warm_s" in r]
    if exhaustive:
        axes.loglog(*zip(*exhaustive), "s--", label="exhaustive (warm)")
    if "one_million_s" in model:
        axes.loglog([sizes[-1], 1e6], [rows[-1]["index_warm_s"], model["one_million_s"]], "x:", color="grey",
                    label="index, fitted to 1M")
    axes.axhline(1, color="grey", lw=0.8, ls=":")
    axes.set_xlabel("stored images (ALIKED, 1024 features each)")
    axes.set_ylabel("query time, s (2 cores)")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
