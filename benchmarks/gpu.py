"""The device path (``LANDMARK_DEVICE=cuda``, :mod:`landmark.gpu`) on one GPU: agreement with the
CPU path on real features, throughput with partitions held in GPU memory, and the floor.

Run from the project root on a machine with a CUDA GPU, PyTorch (with Triton) and numpy; the
CPU path's RANSAC also needs numba (pip-installed here if it is missing and a registry answers):

    python benchmarks/gpu.py              # ~3 min on an H100
    python benchmarks/gpu.py --device cpu --sizes 2000 --kernels torch   # a dry run, anywhere

1. Ceilings, measured here: device-to-device copy bandwidth (bytes read + written) and a
   float16 matrix product's rate (float32 accumulation, as the fused kernel uses).
2. Agreement on the real features of ``benchmarks/data/gpu_features.npz`` (made by
   ``gpu_features.py``): every landmark photo queried against the other 28 photos by the CPU path
   (:func:`landmark.matching.match_batch`) and by the device path; share of pairs whose inlier
   counts are within ``max(3, 10%)`` of the CPU path's, share identical, and top-10 rankings equal
   up to near ties (as ``pairs.py`` defines them).
3. Throughput: DELF-shaped (1000 x 40) stored images, replicas of the real ones (descriptors
   perturbed and re-normalised, locations jittered by up to 1 px), held in GPU memory as one
   partition; one query against all of them, timed from the call to the counts on the host
   (median of several queries, the real landmark photos in turn, after a warm-up). DELF's
   preset (distance 0.8, affine 20 px, 1000 trials) at 100k (float16 and int8) and 1M (int8:
   float16 would take 80 GB) images; ALIKED's preset (mutual + ratio 0.9, affine 12 px) for
   1024 x 128 at 100k; and the 100k DELF-shaped images cut into partitions of fewer images (one
   call each: what ``LANDMARK_PARTITION_SIZE`` chooses).
4. The floor per configuration: descriptor bytes read once at the measured bandwidth, and the
   products' multiply-adds (``rows x Nq x D``) at the measured rate; the larger is the floor.

Prints a table and writes JSON to ``$OUT/gpu.json`` if ``OUT`` is set, else
``benchmarks/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def ensure(module: str, package: str) -> None:
    """Import ``module``, pip-installing ``package`` first if it is missing (and a registry answers)."""
    try:
        importlib.import_module(module)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=False)
        importlib.invalidate_caches()
        importlib.import_module(module)


ensure("numpy", "numpy")
ensure("numba", "numba")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gpu_agreement import agreement  # noqa: E402
from gpu_features import load  # noqa: E402
from landmark.contract import Features  # noqa: E402
from landmark.gpu.held import HeldBatch, quantise_int8  # noqa: E402
from landmark.gpu.match import match_held, use_triton  # noqa: E402
from landmark.matching import PRESETS, MatchConfig  # noqa: E402

AGREEMENT_CASES = [
    ("delf", "distance 0.8, affine 20 px", PRESETS["delf"], "float16"),
    ("delf", "distance 0.8, affine 20 px", PRESETS["delf"], "int8"),
    ("delf", "ratio 0.8, affine 20 px", MatchConfig(rule="ratio", ratio=0.8), "float16"),
    ("aliked", "mutual + ratio 0.9, affine 12 px", PRESETS["aliked"], "float16"),
    ("aliked", "mutual + ratio 0.9, affine 12 px", PRESETS["aliked"], "int8"),
]


def timed(device: torch.device, work, repeats: int) -> list[float]:  # noqa: ANN001
    """Seconds of each of ``repeats`` calls of ``work(i)`` after one warm-up (synchronised)."""
    work(0)
    out = []
    for i in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        work(i + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def ceilings(device: torch.device) -> dict[str, float]:
    """Copy bandwidth (bytes read + written per second) and float16 product rate (FLOP/s),
    each the median of 10 after warm-up, on random data, timed with events."""
    if device.type != "cuda":
        return {"bandwidth_bytes_per_s": float("nan"), "fp16_flop_per_s": float("nan")}

    def events(work, repeats: int = 10) -> float:  # noqa: ANN001
        for _ in range(3):
            work()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            work()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)

    source = torch.randn(1 << 30, device=device)  # 4 GiB
    target = torch.empty_like(source)
    copy = events(lambda: target.copy_(source))
    del source, target
    n = 8192
    a, b = torch.randn(n, n, device=device, dtype=torch.float16), torch.randn(n, n, device=device, dtype=torch.float16)
    product = events(lambda: a @ b)
    return {"bandwidth_bytes_per_s": 2 * 4 * (1 << 30) / copy, "fp16_flop_per_s": 2 * n**3 / product}


def agreements(features: dict[str, dict[str, Features]], device: torch.device, kernels: str, cases: list,
               queries: int | None) -> list[dict]:
    return [{"features": kind, "dim": next(iter(features[kind].values())).descriptor_dim, "rule": rule,
             **agreement(features[kind], config, device=device, kernels=kernels, held_as=held_as, queries=queries)}
            for kind, rule, config, held_as in cases]


def replicas(bases: list[Features], images: int, held_as: str, device: torch.device, seed: int = 0) -> HeldBatch:
    """``images`` perturbed copies of ``bases`` in turn (descriptors plus noise of 0.01 per
    component, re-normalised; locations moved by up to 1 px), built on ``device`` in runs of
    whole cycles through ``bases``, each run's float32 work under 1 GB a tensor."""
    generator = torch.Generator(device=device).manual_seed(seed)
    sizes = np.array([b.num_features for b in bases], np.int64)
    counts = np.resize(sizes, images)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    dim = bases[0].descriptor_dim
    dtype = torch.float16 if held_as == "float16" else torch.int8
    descriptors = torch.empty((int(offsets[-1]), dim), dtype=dtype, device=device)
    locations = torch.empty((int(offsets[-1]), 2), dtype=torch.float32, device=device)
    scales = torch.empty(int(offsets[-1]), dtype=torch.float32, device=device) if held_as == "int8" else None
    base_desc = torch.from_numpy(np.concatenate([b.descriptors for b in bases])).to(device)
    base_loc = torch.from_numpy(np.concatenate([b.locations for b in bases])).to(device)
    cycles = max(1, (1 << 28) // (int(sizes.sum()) * dim))
    step = cycles * len(bases)
    for first in range(0, images, step):
        end = min(first + step, images)
        lo, hi = int(offsets[first]), int(offsets[end])
        source = torch.arange(int(sizes.sum()), device=device).repeat(cycles)[:hi - lo]  # runs start a cycle
        values = base_desc[source] + 0.01 * torch.randn((hi - lo, dim), device=device, generator=generator)
        values /= torch.linalg.vector_norm(values, dim=1, keepdim=True)
        locations[lo:hi] = base_loc[source] + torch.rand((hi - lo, 2), device=device, generator=generator) * 2 - 1
        if held_as == "float16":
            descriptors[lo:hi] = values.half()
        else:
            descriptors[lo:hi], scales[lo:hi] = quantise_int8(values)
        del source, values
    return HeldBatch(offsets, locations, descriptors, scales)


def parts(held: HeldBatch, images: int) -> list[HeldBatch]:
    """``held`` as partitions of ``images`` images (views: nothing is copied)."""
    out = []
    for first in range(0, len(held), images):
        end = min(first + images, len(held))
        lo, hi = int(held.offsets[first]), int(held.offsets[end])
        scales = None if held.scales is None else held.scales[lo:hi]
        out.append(HeldBatch(held.offsets[first:end + 1] - lo, held.locations[lo:hi], held.descriptors[lo:hi], scales))
    return out


def throughput(name: str, held: HeldBatch, queries: list[Features], config: MatchConfig, kernels: str,
               limits: dict[str, float], repeats: int, partition: int | None = None) -> dict:
    device = held.device
    pieces = parts(held, partition) if partition else [held]
    putatives = []

    def one(i: int) -> None:
        counts = [match_held(queries[i % len(queries)], p, config, kernels=kernels) for p in pieces]
        putatives.append(float(np.concatenate(counts)[:, 1].mean()))

    seconds = statistics.median(timed(device, one, repeats))
    images, rows = len(held), int(held.offsets[-1])
    nq = statistics.mean(q.num_features for q in queries)
    component = held.descriptors.element_size() + (4 / held.descriptor_dim if held.scales is not None else 0)
    bytes_read = rows * held.descriptor_dim * component
    flops = 2.0 * rows * nq * held.descriptor_dim
    floor = max(bytes_read / limits["bandwidth_bytes_per_s"], flops / limits["fp16_flop_per_s"])
    return {
        "case": name, "images": images, "rows_per_image": round(rows / images, 1), "dim": held.descriptor_dim,
        "held_as": str(held.descriptors.dtype).replace("torch.", ""), "partition_images": partition or images,
        "rule": config.rule, "trials": config.ransac_trials, "query_features": round(nq, 1),
        "mean_putatives": round(statistics.mean(putatives), 1), "seconds": round(seconds, 4),
        "images_per_s": round(images / seconds), "device_gb": round(held.device_nbytes / 1e9, 2),
        "floor_bytes": bytes_read, "floor_flops": flops, "floor_seconds": floor,
        "floor_images_per_s": round(images / floor) if floor == floor else None,
        "of_floor": round(floor / seconds, 3) if floor == floor else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    parser.add_argument("--kernels", default="auto", help="auto (Triton on CUDA), triton or torch")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="DELF-shaped images held (default: 100000 1000000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed queries per case (default 5)")
    parser.add_argument("--large-held", default="int8", choices=("int8", "float16"),
                        help="descriptors of the largest size (default int8: a million float16 DELF-shaped images "
                        "need 80 GB, more than an H100 holds)")
    parser.add_argument("--queries", type=int, default=None, help="landmark photos queried for agreement (all 17)")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.time()
    features = load()
    limits = ceilings(device)
    agree = agreements(features, device, args.kernels, AGREEMENT_CASES, args.queries)
    if use_triton(device, args.kernels):  # the plain PyTorch kernels too, on one case
        agree += agreements(features, device, "torch", AGREEMENT_CASES[:1], args.queries)
    delf = list(features["delf"].values())
    aliked = list(features["aliked"].values())
    delf_queries = [f for n, f in features["delf"].items() if not n.startswith("_")]
    aliked_queries = [f for n, f in features["aliked"].items() if not n.startswith("_")]
    small, large = min(args.sizes), max(args.sizes)
    speed = []
    for held_as in ("float16", "int8"):
        held = replicas(delf, small, held_as, device)
        speed.append(throughput("DELF-shaped", held, delf_queries, PRESETS["delf"], args.kernels, limits, args.repeats))
        if held_as == "float16":
            for partition in (256, 4096, 32768):
                speed.append(throughput("DELF-shaped, partitions", held, delf_queries, PRESETS["delf"], args.kernels,
                                        limits, max(2, args.repeats // 2), partition))
            speed.append(throughput("DELF-shaped, ratio 0.8", held, delf_queries, MatchConfig(rule="ratio", ratio=0.8),
                                    args.kernels, limits, args.repeats))
        del held
        torch.cuda.empty_cache() if device.type == "cuda" else None
    if large != small:
        held = replicas(delf, large, args.large_held, device)
        speed.append(throughput("DELF-shaped", held, delf_queries, PRESETS["delf"], args.kernels, limits, args.repeats))
        del held
        torch.cuda.empty_cache() if device.type == "cuda" else None
    for held_as in ("float16", "int8"):
        held = replicas(aliked, small, held_as, device)
        speed.append(throughput("ALIKED", held, aliked_queries, PRESETS["aliked"], args.kernels, limits, args.repeats))
        del held
        torch.cuda.empty_cache() if device.type == "cuda" else None

    print(f"\nceilings: copy {limits['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"float16 product {limits['fp16_flop_per_s'] / 1e12:.0f} TFLOP/s")
    print(f"\n{'features':8} {'dim':>3} {'rule':34} {'held':8} {'pairs':>6} {'within tol':>10} {'identical':>9} "
          f"{'top-10':>7}  kernels")
    for r in agree:
        print(f"{r['features']:8} {r['dim']:>3} {r['rule']:34} {r['held_as']:8} {r['pairs']:>6} "
              f"{r['within_tolerance']:>10.1%} {r['identical_counts']:>9.1%} {r['top10_up_to_near_ties']:>7}"
              f"  {r['kernels']}")
    print(f"\n{'case':24} {'images':>9} {'per call':>9} {'dim':>3} {'held':7} {'rule':8} {'putative':>8} "
          f"{'seconds':>8} {'images/s':>10} {'floor img/s':>12} {'of floor':>8}")
    for r in speed:
        print(f"{r['case']:24} {r['images']:>9,} {r['partition_images']:>9,} {r['dim']:>3} {r['held_as']:7} "
              f"{r['rule']:8} {r['mean_putatives']:>8} {r['seconds']:>8} {r['images_per_s']:>10,} "
              f"{r['floor_images_per_s'] or '-':>12} {r['of_floor'] or '-':>8}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    document = {
        "device": name, "torch": torch.__version__, "triton": use_triton(device, args.kernels),
        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started, 1), "ceilings": limits,
        "agreement_tolerance": "|gpu - cpu| <= max(3, 10% of cpu)", "agreement": agree, "throughput": speed,
    }
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu.json"
    path.write_text(json.dumps(document, indent=2, default=float) + "\n")
    print(f"\nsaved {path} ({document['seconds']} s)")


if __name__ == "__main__":
    main()
