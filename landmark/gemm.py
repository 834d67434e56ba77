"""Similarity products ``stored @ query.T`` in float32 (numpy) or bfloat16 (Intel MKL).

Putative matching is one large matrix product per partition and dominates a query's time.
``bfloat16`` halves the bytes read and runs on the CPU's bfloat16 units (AVX512-BF16/AMX)
through MKL's ``cblas_gemm_bf16bf16f32`` (inputs bfloat16, accumulation and output float32):
about 2x faster for 40-d and 3x for 128-d descriptors on a 4th-generation Xeon. Products move
by up to ~2e-3, so a few matches near the thresholds change; inlier counts stay within the
agreement tolerance (see ``benchmarks/pairs.py``). MKL is optional: ``pip install landmark[mkl]``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import numpy as np

from .errors import ConfigError

PRECISIONS = ("float32", "bfloat16")

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def as_precision(descriptors: np.ndarray, precision: str) -> np.ndarray:
    """``descriptors`` ``[M x D]`` in the layout :func:`similarity` takes for ``precision``."""
    if precision == "float32":
        return np.ascontiguousarray(descriptors)  # float32 from the store; float64 kept as given
    import ml_dtypes

    return np.ascontiguousarray(descriptors, dtype=np.float32).astype(ml_dtypes.bfloat16)


def similarity(stored: np.ndarray, query: np.ndarray, precision: str) -> np.ndarray:
    """float32 ``[M x N]`` dot products of ``stored`` ``[M x D]`` and ``query`` ``[N x D]`` rows,
    both already in ``precision``'s layout (:func:`as_precision`)."""
    if precision == "float32":
        return stored @ query.T
    m, d = stored.shape
    n = query.shape[0]
    out = np.empty((m, n), dtype=np.float32)
    if m and n:
        _mkl().cblas_gemm_bf16bf16f32(
            _ROW_MAJOR, _NO_TRANS, _TRANS, m, n, d, ctypes.c_float(1.0),
            stored.ctypes.data_as(ctypes.c_void_p), d, query.ctypes.data_as(ctypes.c_void_p), d,
            ctypes.c_float(0.0), out.ctypes.data_as(ctypes.c_void_p), n,
        )
    return out


def check(precision: str) -> None:
    """A clear error, now, if ``precision`` cannot run here."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "bfloat16":
        _mkl()


@functools.cache
def _mkl() -> ctypes.CDLL:
    names = [os.path.join(sys.prefix, "lib", "libmkl_rt.so.3"), os.path.join(sys.prefix, "lib", "libmkl_rt.so.2"),
             "libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]
    for name in names:
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(library, "cblas_gemm_bf16bf16f32"):
            # Matching runs one task per core: MKL must not start threads of its own.
            library.MKL_Set_Num_Threads(1)
            return library
    raise ConfigError(
        "precision: bfloat16 needs Intel MKL (libmkl_rt with cblas_gemm_bf16bf16f32), which is not "
        "installed; install it with: pip install 'landmark[mkl]' (x86-64 only), or use float32"
    )
