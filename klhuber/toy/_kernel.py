r"""The fused float32 CPU kernel of gradient descent (``backend="kernel"`` of
:func:`klhuber.toy.gd_grid`), compiled with the system's C++ compiler at first use (internal).

Per loss, ``vpsi`` (:math:`\psi`) and ``rho1`` (the value) of the C++ source are the kernel's
copies of the formulas of :mod:`klhuber.toy.formulas`, selected by each loss's ``kernel_code``.
Without a compiler :func:`klhuber.toy.gd_grid` falls back to the torch backend.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from klhuber.toy._common import _check_positive_int
from klhuber.toy.formulas import loss_formulas

#: C++ source of the fused float32 CPU kernel of :func:`gd_grid` (``backend="kernel"``).  One
#: tile is ``W = 8`` configurations sharing a design matrix and a target vector; per iteration
#: one pass over the N rows computes :math:`r = y - \phi_i^\top\Theta`, :math:`\psi(r)` and
#: :math:`g \mathrel{+}= \phi_i \psi(r)` with :math:`\Theta` and :math:`g` in registers, so
#: nothing of size N x configurations is ever stored (compute-bound, not memory-bound).
_KERNEL_SRC = r"""
#include <cmath>
#include <math.h>
#include <stdint.h>
#define W 8
typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
static inline v8 vmin(v8 a, v8 b) { return a < b ? a : b; }
static inline v8 vmax(v8 a, v8 b) { return a > b ? a : b; }
/* exp(x) for x <= 0, inline (no call that would spill the registers): x = n ln2 + f,
   |f| <= ln2/2, exp(f) by its degree-6 Taylor polynomial (relative error < 2e-7). */
static inline v8 vexp(v8 x) {
  const v8 z = {0};
  x = vmax(x, z - 87.0f);
  v8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  v8 f = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  v8 p = z + 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f; p = p * f + 1.0f / 24.0f; p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f; p = p * f + 1.0f; p = p * f + 1.0f;
  v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  return p * (v8)e;
}
static inline v8 vabs(v8 a) { return a < 0 ? -a : a; }
static inline v8 vpsi(v8 r, v8 a, v8 ia, int loss) {
  const v8 zero = {0}, one = zero + 1.0f;
  if (loss == 0) return vmin(vmax(r, -a), a);
  if (loss == 1) { v8 m = a - a * vexp(-vabs(r) * ia); return r > 0 ? m : (r < 0 ? -m : zero); }
  if (loss == 2) return r > 0 ? one : (r < 0 ? -one : zero);
  return r;
}
static inline double rho1(float r, float a, int loss) {
  double x = fabs((double)r);
  if (loss == 0) { double h = x < a ? x : a; return h * (x - 0.5 * h); }
  if (loss == 1) { double u = x / a; return (double)a * a * (u + expm1(-u)); }
  if (loss == 2) return x;
  return 0.5 * x * x;
}
static inline v8 resid(const float* p, float yi, const v8* t) {
  v8 r = (v8){0} + yi, r2 = (v8){0};
  int k = 0;
  for (; k + 1 < KK; k += 2) { r -= p[k] * t[k]; r2 -= p[k + 1] * t[k + 1]; }
  if (KK & 1) r -= p[KK - 1] * t[KK - 1];
  return r + r2;
}
template <int LOSS>
static void tile(int n, const float* phi, const float* y, float* th, const float* al,
                 const float* st, int iters, float* grad, double* obj, float* last) {
  v8 t[KK], g[KK], d[KK], a, s, ia;
  for (int k = 0; k < KK; k++) for (int w = 0; w < W; w++) { t[k][w] = th[k * W + w]; d[k][w] = 0; }
  for (int w = 0; w < W; w++) { a[w] = al[w]; s[w] = st[w]; ia[w] = 1.0f / al[w]; }
  for (int it = 0; it <= iters; it++) {
    for (int k = 0; k < KK; k++) g[k] = (v8){0};
    for (int i = 0; i < n; i++) {
      const float* p = phi + (int64_t)i * KK;
      v8 r = vpsi(resid(p, y[i], t), a, ia, LOSS);
      for (int k = 0; k < KK; k++) g[k] += p[k] * r;
    }
    if (it == iters) break;
    for (int k = 0; k < KK; k++) { v8 nt = t[k] + s * g[k]; d[k] = nt - t[k]; t[k] = nt; }
  }
  double o[W];
  for (int w = 0; w < W; w++) o[w] = 0.0;
  for (int i = 0; i < n; i++) {
    v8 r = resid(phi + (int64_t)i * KK, y[i], t);
    for (int w = 0; w < W; w++) o[w] += rho1(r[w], a[w], LOSS);
  }
  for (int k = 0; k < KK; k++) for (int w = 0; w < W; w++) {
    th[k * W + w] = t[k][w]; grad[k * W + w] = g[k][w]; last[k * W + w] = d[k][w];
  }
  for (int w = 0; w < W; w++) obj[w] = o[w] / n;
}
extern "C" int kernel_k(void) { return KK; }
extern "C" void gd_tiles(int n, int loss, const float* phi, const float* y, int t0, int t1,
                         const int* tile_seed, const int* tile_y, float* theta, const float* alpha,
                         const float* step, int iters, float* grad, double* obj, float* last) {
  for (int t = t0; t < t1; t++) {
    const float* p = phi + (int64_t)tile_seed[t] * n * KK;
    const float* yy = y + (int64_t)tile_y[t] * n;
    int64_t o = (int64_t)t * KK * W, q = (int64_t)t * W;
    switch (loss) {
      case 0: tile<0>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o); break;
      case 1: tile<1>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o); break;
      case 2: tile<2>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o); break;
      default: tile<3>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o);
    }
  }
}
"""
_KERNEL_W = 8


@functools.cache
def _cpu_kernel(k: int) -> Any:
    """The compiled fused kernel for K = ``k`` (ctypes library), or None without a C++ compiler.

    Compiled once per source, K and CPU with ``-O3 -march=native`` (no ``-ffast-math``, which
    would change the floating-point mode of the whole process) and cached in
    ``$KLHUBER_CACHE`` (default ``~/.cache/klhuber``).  ``KLHUBER_NO_KERNEL=1`` disables it.
    """
    import ctypes

    from klhuber._cpp import compile_library

    lib = compile_library(_KERNEL_SRC, "toy_gd_kernel", flags=(f"-DKK={k}",), key=(str(k),))
    if lib is None:
        return None
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.gd_tiles.argtypes = [i, i, p, p, i, i, p, p, p, p, p, i, p, p, p]
    lib.gd_tiles.restype = None
    return lib if lib.kernel_k() == k else None


def _kernel_threads() -> int:
    """Threads of the fused kernel: ``$KLHUBER_GD_THREADS``, else the usable cores.

    Independent of torch's intra-op threads, so ``OMP_NUM_THREADS=1`` (advisable for torch's
    small ops when other jobs share the cores: spin-waiting OpenMP barriers crawl there) still
    runs the kernel on every core.
    """
    import os

    env = os.environ.get("KLHUBER_GD_THREADS")
    if env:
        return _check_positive_int(int(env), "KLHUBER_GD_THREADS")
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _KernelBackend:
    """Runs windows of GD on the active configurations with the fused CPU kernel (float32)."""

    name = "kernel"

    def __init__(self, lib: Any, phi: Tensor, y: Tensor, loss: str, threads: int) -> None:
        self.lib, self.threads = lib, max(1, threads)
        self.loss = loss_formulas(loss).kernel_code
        self.phi = np.ascontiguousarray(phi.to(torch.float32).numpy())  # (S, N, K)
        self.npair = y.shape[1]
        self.y = np.ascontiguousarray(y.to(torch.float32).numpy()).reshape(-1, y.shape[-1])
        self.n, self.k = self.phi.shape[1], self.phi.shape[2]

    def advance(self, seed: np.ndarray, pair: np.ndarray, alpha: np.ndarray, step: np.ndarray,
                theta: np.ndarray, iters: int) -> tuple[np.ndarray, ...]:
        from concurrent.futures import ThreadPoolExecutor

        w, k = _KERNEL_W, self.k
        group = seed.astype(np.int64) * self.npair + pair  # sorted: columns ordered by group
        starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
        counts = np.diff(np.r_[starts, group.size])
        tiles_per = -(-counts // w)
        first_tile = np.r_[0, np.cumsum(tiles_per)[:-1]]
        rank = np.arange(group.size) - np.repeat(starts, counts)
        tile = np.repeat(first_tile, counts) + rank // w
        lane = rank % w
        nt = int(tiles_per.sum())
        th = np.zeros((nt, k, w), np.float32)
        al = np.ones((nt, w), np.float32)
        st = np.zeros((nt, w), np.float32)
        th[tile, :, lane] = theta
        al[tile, lane] = alpha
        st[tile, lane] = step
        t_seed = np.ascontiguousarray(np.repeat(seed[starts], tiles_per), np.int32)
        t_y = np.ascontiguousarray(np.repeat(group[starts], tiles_per), np.int32)
        grad = np.zeros_like(th)
        last = np.zeros_like(th)
        obj = np.zeros((nt, w), np.float64)

        def call(span: tuple[int, int]) -> None:
            self.lib.gd_tiles(self.n, self.loss, self.phi.ctypes.data, self.y.ctypes.data,
                              span[0], span[1], t_seed.ctypes.data, t_y.ctypes.data,
                              th.ctypes.data, al.ctypes.data, st.ctypes.data, int(iters),
                              grad.ctypes.data, obj.ctypes.data, last.ctypes.data)

        # small spans handed out dynamically (balanced when another process shares the cores)
        nthreads = min(self.threads, nt)
        size = max(1, -(-nt // (8 * nthreads)))
        spans = [(a, min(a + size, nt)) for a in range(0, nt, size)]
        if nthreads == 1:
            for span in spans:
                call(span)
        else:  # ctypes releases the GIL: one Python thread per core
            with ThreadPoolExecutor(nthreads) as pool:
                list(pool.map(call, spans))
        return (th[tile, :, lane].astype(np.float64), grad[tile, :, lane].astype(np.float64),
                obj[tile, lane], last[tile, :, lane].astype(np.float64))
