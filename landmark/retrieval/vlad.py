"""VLAD: one vector per image from its local descriptors, against a codebook learned from the
collection itself (pure numpy, but the k-means, which faiss runs).

An image's descriptors ``[N x D]`` are each assigned to their nearest codeword; per codeword the
residuals (descriptor minus codeword) are summed, each sum is L2-normalised on its own (intra
normalisation, so that a burst of similar features on one repeated pattern counts once), the
``[k x D]`` result is flattened, square-rooted with its sign kept (power normalisation) and
L2-normalised. The dot product of two such vectors, in ``[-1, 1]``, is the similarity.
(Jégou et al., "Aggregating local descriptors into a compact image representation", CVPR 2010;
Arandjelović & Zisserman, "All about VLAD", CVPR 2013.)
"""

from __future__ import annotations

import numpy as np

CODEWORDS = 32
"""Codebook size ``k``: 32 x 128-D descriptors give 4096-D vectors, 8 kB per image in float16
(measured: 32 words keep as many true matches in a shortlist as 64 or 128 do)."""

SAMPLE_PER_CODEWORD = 1000
"""Descriptors drawn per codeword to train the codebook (k-means needs a few hundred each)."""


def train_codebook(descriptors: np.ndarray, k: int = CODEWORDS, *, seed: int = 0, iterations: int = 20) -> np.ndarray:
    """k-means centroids ``[k x D]`` float32 of ``descriptors`` ``[N x D]`` (a sample of the
    collection's; at most ``k * SAMPLE_PER_CODEWORD`` of them are used, drawn with ``seed``)."""
    import faiss

    data = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(data) < k:
        raise ValueError(f"a codebook of {k} words needs at least {k} descriptors, got {len(data)}")
    rng = np.random.default_rng(seed)
    if len(data) > k * SAMPLE_PER_CODEWORD:
        data = data[rng.choice(len(data), k * SAMPLE_PER_CODEWORD, replace=False)]
    kmeans = faiss.Kmeans(data.shape[1], k, niter=iterations, seed=seed, verbose=False)
    kmeans.train(data)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def vlad(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The VLAD vector ``[k * D]`` float32 (unit length, or zero for no descriptors) of
    ``descriptors`` ``[N x D]`` against ``centroids`` ``[k x D]``."""
    k, dim = centroids.shape
    out = np.zeros((k, dim), np.float32)
    if len(descriptors):
        x = np.asarray(descriptors, dtype=np.float32)
        # Nearest codeword by squared distance; |x|^2 is the same for every codeword.
        nearest = np.argmax(x @ centroids.T - 0.5 * (centroids * centroids).sum(axis=1), axis=1)
        # Residual sums per codeword as one product: (one-hot assignment)^T [k x N] @ x [N x D]
        # less each codeword times its count (a scattered add is ~10x slower).
        assignment = np.zeros((k, len(x)), np.float32)
        assignment[nearest, np.arange(len(x))] = 1.0
        out = assignment @ x - assignment.sum(axis=1, keepdims=True) * centroids
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0).ravel()
    out = np.sign(out) * np.sqrt(np.abs(out))
    length = np.linalg.norm(out)
    return out / length if length > 0 else out
