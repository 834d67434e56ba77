"""Quality: extractor x matching x verification, scored by ``landmark eval`` on three collections.

- ``easy``: ``../shared/data/landmarks`` (46 photos; checks that things work);
- ``hard``: ``../shared/data/landmarks_hard`` (119 photos: night, season, drone, street-view, scale);
- ``hard+855``: the same, with the 855 photos of ``../shared/data/distractors`` added as
  distractors (``--distractors``), so chance matches have many more chances.

Each row is one ``landmark eval`` command per collection (printed as it runs, so any row can be
rerun by hand). The photos are indexed once per extractor and collection into a kept store, which
the other rows of that extractor reuse (unchanged images are not extracted again). Per row:
mAP, P@1, extraction seconds per image (the extractor's largest indexing run: wall time over
its images, on all of this machine's cores), matching milliseconds per stored image (the mean
time of a query's matching stage, which fans out over the Dask workers on all cores, over the
stored images, in the last collection), and stored bytes per image.

Run: ``.venv/bin/python benchmarks/quality.py [--rows NAME,...] [--collections easy,hard,hard+855]``
(about 45 minutes on 2 cores). Writes ``benchmarks/results/quality.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from features import PROJECT, machine, save

DATA = PROJECT.parent / "shared" / "data"
COLLECTIONS = {
    "easy": [str(DATA / "landmarks")],
    "hard": [str(DATA / "landmarks_hard")],
    "hard+855": [str(DATA / "landmarks_hard"), "--distractors", str(DATA / "distractors")],
}

# name: (extractor and its options, matching options, what the row shows)
ROWS: dict[str, tuple[list[str], list[str], str]] = {
    "rootsift-ratio-affine20": (
        ["--extractor", "rootsift"], ["--rule", "ratio", "--ratio", "0.8", "--ransac-threshold", "20"],
        "reference: RootSIFT as before (Lowe's ratio 0.8, affine 20 px)",
    ),
    "rootsift-mutual-affine20": (
        ["--extractor", "rootsift"], ["--ransac-threshold", "20"], "RootSIFT, mutual + ratio 0.9, affine 20 px",
    ),
    "rootsift": (["--extractor", "rootsift"], [], "RootSIFT preset: mutual + ratio 0.9, affine 12 px"),
    "rootsift-homography": (
        ["--extractor", "rootsift"], ["--verification", "homography", "--ransac-threshold", "6",
                                      "--ransac-trials", "2000"],
        "RootSIFT, mutual + ratio 0.9, homography (MAGSAC++) 6 px",
    ),
    "aliked-ratio-affine20": (
        ["--extractor", "aliked"], ["--rule", "ratio", "--ratio", "0.8", "--ransac-threshold", "20"],
        "ALIKED with the old path (Lowe's ratio 0.8, affine 20 px)",
    ),
    "aliked-mnn": (["--extractor", "aliked"], ["--ratio", "1"], "ALIKED, mutual nearest neighbours alone, affine 12 px"),
    "aliked": (["--extractor", "aliked"], [], "ALIKED preset (the default): mutual + ratio 0.9, affine 12 px"),
    "aliked-homography": (
        ["--extractor", "aliked"], ["--verification", "homography", "--ransac-threshold", "6",
                                    "--ransac-trials", "2000"],
        "ALIKED, mutual + ratio 0.9, homography (MAGSAC++) 6 px",
    ),
    "aliked-2048": (
        ["--extractor", "aliked", "-E", "max_keypoints=2048"], [], "ALIKED preset with 2048 keypoints",
    ),
}


def run_eval(collection: str, extractor: list[str], matching: list[str], home: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "landmark.cli", "eval", *COLLECTIONS[collection], *extractor, *matching,
               "--home", str(home), "--out", str(out)]
    shown = " ".join(["landmark", *command[3:]]).replace(str(PROJECT.parent) + "/", "../")
    print(f"$ {shown}", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"eval failed ({done.returncode}):\n{done.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    summary["command"] = shown
    return summary


def store_bytes(home: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "landmark.cli", "info", "--json", "--home", str(home)],
                          cwd=PROJECT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    parser.add_argument("--collections", default=",".join(COLLECTIONS))
    args = parser.parse_args()
    rows = args.rows.split(",")
    collections = args.collections.split(",")
    results: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="landmark-quality-"))
    homes: dict[tuple[str, str], Path] = {}
    extraction: dict[str, dict] = {}  # per extractor: measured when its first store is built
    try:
        for name in rows:
            extractor, matching, label = ROWS[name]
            results[name] = {"label": label, "collections": {}}
            for collection in collections:
                key = (" ".join(extractor), collection)
                fresh = key not in homes
                home = homes.setdefault(key, work / f"store-{len(homes)}")
                summary = run_eval(collection, extractor, matching, home, work / f"{name}-{collection}")
                stored = max(1, summary["counts"]["indexed"] - 1)  # a query is left out of its own ranking
                # The matching stage of each query (the query's own extraction and Dask's start left out).
                match_seconds = [json.loads(Path(q["file"]).read_text())["timings_s"]["match"] for q in summary["queries"]]
                entry = {
                    "command": summary["command"],
                    "map": round(summary["mean_average_precision"], 3),
                    "p_at_1": round(summary["precision_at_1"], 3),
                    "query_s_mean": summary["query_seconds"]["mean"],
                    "match_s_per_stored_image": round(sum(match_seconds) / len(match_seconds) / stored, 6),
                    "per_group_map": summary["per_group_map"],
                }
                indexed = summary["counts"]["indexed"]
                if fresh and indexed > extraction.get(key[0], {}).get("images", 0):
                    info = store_bytes(home)
                    extraction[key[0]] = {
                        "collection": collection,
                        "images": indexed,
                        "extract_s_per_image": round(summary["index_seconds"] / indexed, 3),
                        "stored_bytes_per_image": round(info["feature_bytes"] / info["images"]),
                    }
                results[name]["collections"][collection] = entry
                print(f"  {collection}: mAP {entry['map']:.3f}, P@1 {entry['p_at_1']:.3f}, "
                      f"matching {entry['match_s_per_stored_image'] * 1000:.2f} ms per stored image", flush=True)
            results[name]["extraction"] = extraction[" ".join(extractor)]
    finally:
        subprocess.run([sys.executable, "-c", "from landmark.embedded import stop; import sys; "
                        "[stop(__import__('pathlib').Path(p)) for p in sys.argv[1:]]", *map(str, homes.values())],
                       cwd=PROJECT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    print()
    header = "| row | " + " | ".join(f"{c} mAP | {c} P@1" for c in collections)
    print(header + " | extract s/image | matching ms/stored image | stored kB/image |")
    print("|" + " --- |" * (1 + 2 * len(collections) + 3))
    for name in rows:
        entry = results[name]["collections"]
        cells = " | ".join(f"{entry[c]['map']:.3f} | {entry[c]['p_at_1']:.3f}" for c in collections)
        measured = results[name]["extraction"]
        print(f"| {results[name]['label']} | {cells} | {measured['extract_s_per_image']:.3f} | "
              f"{entry[collections[-1]]['match_s_per_stored_image'] * 1000:.2f} | "
              f"{measured['stored_bytes_per_image'] / 1000:.0f} |")
    path = save("quality", {"machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M"), "rows": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
