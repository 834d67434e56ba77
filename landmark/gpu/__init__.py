"""Matching and verification on a GPU (``LANDMARK_DEVICE=cuda``), with PyTorch.

The same work as :func:`landmark.matching.match_batch` and the same answer, ``[B x 2]``
``(inliers, putative matches)`` per stored image, for a partition held in GPU memory:

- :mod:`.held`: a partition's descriptors (float16, or int8 with a scale per row), locations and
  image offsets as device tensors, uploaded once when the partition is read (:func:`hold`).
- :mod:`.nearest`: each stored descriptor's nearest and second-nearest query descriptor, and
  for the mutual rule each query descriptor's best score within each image, for many images
  per launch; the rule then keeps a pair exactly as :func:`landmark.matching._nearest_kept` does.
- :mod:`.ransac`: DELF's affine RANSAC for every verified pair at once: all hypotheses of all
  pairs are scored in parallel, from the very samples the CPU path draws (they depend only on
  the seed, the number of putative matches and the trials), and the CPU path's early stop is
  replayed on the counts, so inlier counts agree with it up to floating-point rounding.
- :mod:`.kernels`: the two hot loops as Triton kernels (the similarity products fused with
  their reductions, so no ``[rows x Nq]`` matrix is written; the hypotheses' inlier counts);
  :mod:`.nearest` and :mod:`.ransac` also hold plain PyTorch versions of both, which run
  anywhere (the CPU included: that is how the tests check this path without a GPU).
- :mod:`.match`: the orchestration, in chunks of images that bound device memory.

Why PyTorch rather than CuPy (both run on our GPU machines): its batched products, reductions
(``max``, ``cummax``, ``scatter_reduce``), gathers and ``nonzero`` are ready-made and run on
the CPU as well, so the whole path is testable on a machine without a GPU; and it ships Triton,
which compiles the two fused kernels for whatever GPU it finds. CuPy would need the kernels
written as CUDA C strings, and a second implementation for the CPU.

Nothing here is imported unless ``device`` is ``cuda`` (:mod:`landmark.search` imports it when
a worker loads a partition): CPU-only installs never import PyTorch.
"""

from __future__ import annotations

from .held import HeldBatch, hold

__all__ = ["HeldBatch", "hold"]
