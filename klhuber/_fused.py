r"""Fused kernels for :math:`D_{\alpha,\beta}` (eq. 16) and :math:`D'` (Appendix B).

Two providers of the same fused forward pass, each reading ``input`` and ``target`` once and
writing the loss (or its sum) and, when a backward will follow, the derivative
:math:`D'(x)` (already divided by the number of elements for ``reduction="mean"``):

* a C++ kernel for CPU float32/float64 tensors, built with the system compiler at first use
  and cached in ``$KLHUBER_CACHE`` (default ``~/.cache/klhuber``), called through
  :mod:`ctypes` (a few microseconds per call, the GIL released, threads for large tensors).
  It computes in the dtype of the data, with AVX2-width vectors (8 floats, 4 doubles), an
  inline exponential of about 1 ulp and the polynomials of ``klhuber._phi``; the sum of a
  reduction is accumulated in float64.  ``KLHUBER_NO_KERNEL=1`` disables it; without a
  compiler it is ``None``;
* :func:`torch.compile` with dynamic shapes of the same formulas (any device; on CUDA one
  Triton kernel for the forward): one compilation per (reduction, derivative or not, target or
  not, number of dimensions), whatever the sizes.  ``KLHUBER_NO_COMPILE=1`` disables it; if
  compilation fails the callers fall back to eager evaluation.

Both are restricted to Python-number scales for which :math:`1/\alpha`, :math:`1/\beta` and
:math:`\alpha/\beta` are normal numbers of the working dtype (the dispatch of
``klhuber.losses`` routes all other cases to its general implementation).

Numerics as in ``klhuber.losses``: with :math:`u = |x|/\alpha`,
:math:`D = (|x|/\beta)\,u\varphi(u)` and :math:`D' = \operatorname{sign}(x)\,u(1 - u\varphi(u))
/\beta` below the switch point ``t`` of the polynomial for
:math:`\varphi(u) = (e^{-u} - 1 + u)/u^2`, and :math:`D = |x|/\beta - (\alpha/\beta)(1 -
e^{-u})`, :math:`D' = \operatorname{sign}(x)(1 - e^{-u})/\beta` above, where nothing cancels.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from klhuber._cpp import compile_library
from klhuber._phi import PHI_U

#: dtype -> (switch point t, coefficients of phi in powers of u): the one source of the
#: polynomials for every path.
PHI = PHI_U

#: Number of compilations done by this module: C++ kernel builds plus graphs compiled by
#: :func:`torch.compile` for the compiled fused forward.  Read with :func:`compilations`.
_COMPILES = {"kernel": 0, "dynamo": 0}


def compilations() -> int:
    """How many compilations this process has done for the fused paths (kernel builds plus
    graphs compiled by :func:`torch.compile`)."""
    return _COMPILES["kernel"] + _COMPILES["dynamo"]


# ---------------------------------------------------------------------------------------------
# The C++ kernel
# ---------------------------------------------------------------------------------------------

_KERNEL_SRC = r"""
#include <stdint.h>
#include <string.h>
#include <thread>
#include <vector>

// One AVX2 register per step: 8 floats or 4 doubles; float32 data is computed in float32
// (as torch computes it), float64 in float64.
typedef float vf __attribute__((vector_size(32)));
typedef int vfi __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(32)));
typedef long long vdi __attribute__((vector_size(32)));
template <typename T> struct VT;
template <> struct VT<float> { typedef vf v; typedef vfi i; enum { W = 8 }; };
template <> struct VT<double> { typedef vd v; typedef vdi i; enum { W = 4 }; };

/* e^m for m <= 0 (NaN propagates): m = n ln2 + f, |f| <= ln2/2, e^f by its Taylor polynomial
   (degree 7 in float, truncation 5e-9; degree 13 in double, 5e-18), 2^n built in the
   exponent bits.  m is clamped where e^m is still normal (-87, -708); there e^m only enters
   as 1 - e^m or r e^m next to terms of order 1 or |x|/beta, so the clamp changes nothing. */
template <typename T> struct ExpC;
template <> struct ExpC<float> {
  static constexpr float lo = -87.0f, shift = 12582912.0f;  // 1.5 * 2^23
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187e-06f;
  enum { degree = 7, bias = 127, mantissa = 23 };
};
template <> struct ExpC<double> {
  static constexpr double lo = -708.0, shift = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double log2e = 1.4426950408889634;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  enum { degree = 13, bias = 1023, mantissa = 52 };
};
// k! in T: exact for the degrees above (7! < 2^24, 13! < 2^53), so 1/k! is rounded once
template <typename T> static constexpr T factorial(int k) {
  return k <= 1 ? (T)1 : (T)k * factorial<T>(k - 1);
}
// Horner steps p = p f + 1/k! for k = K-1, ..., 0, with the coefficients folded at compile time
template <typename T, int K> struct Taylor {
  static inline typename VT<T>::v horner(typename VT<T>::v p, typename VT<T>::v f) {
    constexpr T c = (T)1 / factorial<T>(K - 1);
    return Taylor<T, K - 1>::horner(p * f + c, f);
  }
};
template <typename T> struct Taylor<T, 0> {
  static inline typename VT<T>::v horner(typename VT<T>::v p, typename VT<T>::v) { return p; }
};
template <typename T>
static inline typename VT<T>::v vexp(typename VT<T>::v m) {
  typedef typename VT<T>::v v;
  typedef typename VT<T>::i vi;
  typedef ExpC<T> C;
  const v lo = (v){} + C::lo, shift = (v){} + C::shift;
  m = m < lo ? lo : m;
  v kd = m * C::log2e + shift;
  v n = kd - shift;
  v f = (m - n * C::ln2_hi) - n * C::ln2_lo;
  constexpr T top = (T)1 / factorial<T>(C::degree);
  v p = Taylor<T, C::degree>::horner((v){} + top, f);  // e^f
  vi ki, sh, bits;
  memcpy(&ki, &kd, sizeof ki);
  memcpy(&sh, &shift, sizeof sh);
  bits = (ki - sh + (int)C::bias) << (int)C::mantissa;
  v s;
  memcpy(&s, &bits, sizeof s);
  return p * s;
}

// phi(u) = (e^{-u} - 1 + u)/u^2 on [0, t) and t, per dtype (klhuber._phi.PHI_U)
static inline vf phi(vf uc) {
  vf p = (vf){} + PHI32_LAST;
PHI32_HORNER
  return p;
}
static inline vd phi(vd uc) {
  vd p = (vd){} + PHI64_LAST;
PHI64_HORNER
  return p;
}
static inline float switch_point(float) { return PHI32_T; }
static inline double switch_point(double) { return PHI64_T; }

template <typename T>
struct Consts { T ia, ib, r, ibds; };

// D and D' (times ds) of x.
template <typename T>
static inline void dd(typename VT<T>::v x, const Consts<T>& c, typename VT<T>::v* val,
                      typename VT<T>::v* der) {
  typedef typename VT<T>::v v;
  typedef typename VT<T>::i vi;
  const v zero = {}, one = zero + (T)1, t = zero + switch_point((T)0);
  v a = x < zero ? -x : x;
  v u = a * c.ia;
  vi small = u < t;
  v uc = small ? u : t;
  v q = uc * phi(uc);                 // u phi(u) = g(u)/u on [0, t)
  v e = vexp<T>(-u);
  v ome = one - e;                    // 1 - e^{-u}, no cancellation for u >= t
  if (val) {
    v ab = a * c.ib;                  // |x|/beta first: no spurious underflow of products
    *val = small ? ab * q : ab - c.r * ome;
  }
  if (der) {
    v d = (small ? uc * (one - q) : ome) * c.ibds;
    vi db, xb, sign;                  // copysign(d, x); NaN x gives NaN d (e is NaN there)
    const v negzero = -zero;
    memcpy(&db, &d, sizeof db);
    memcpy(&xb, &x, sizeof xb);
    memcpy(&sign, &negzero, sizeof sign);
    db = (db & ~sign) | (xb & sign);
    memcpy(der, &db, sizeof db);
  }
}

template <typename T>
static inline void acc_add(vd& acc, typename VT<T>::v v);
template <> inline void acc_add<double>(vd& acc, vd v) { acc += v; }
template <> inline void acc_add<float>(vd& acc, vf v) {
  typedef float hf __attribute__((vector_size(16)));
  hf lo = {v[0], v[1], v[2], v[3]}, hi = {v[4], v[5], v[6], v[7]};
  acc += __builtin_convertvector(lo, vd) + __builtin_convertvector(hi, vd);
}

template <typename T>
static double run(int64_t i0, int64_t i1, const T* x, const T* t, T* out, T* der,
                  const Consts<T>& c) {
  typedef typename VT<T>::v v;
  const int W = VT<T>::W;
  vd acc = {};
  int64_t i = i0;
  for (; i + W <= i1; i += W) {
    v xv, val, d;
    memcpy(&xv, x + i, sizeof xv);
    if (t) { v tv; memcpy(&tv, t + i, sizeof tv); xv = xv - tv; }
    dd<T>(xv, c, &val, der ? &d : 0);
    if (out) memcpy(out + i, &val, sizeof val); else acc_add<T>(acc, val);
    if (der) memcpy(der + i, &d, sizeof d);
  }
  double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  if (i < i1) {  // tail: padded with zeros (D(0) = 0)
    int64_t k = i1 - i;
    T xs[W] = {}, ts[W] = {};
    memcpy(xs, x + i, k * sizeof(T));
    if (t) memcpy(ts, t + i, k * sizeof(T));
    v xv, tv, val = {}, d = {};
    memcpy(&xv, xs, sizeof xv);
    memcpy(&tv, ts, sizeof tv);
    xv = xv - tv;
    dd<T>(xv, c, &val, der ? &d : 0);
    for (int j = 0; j < k; j++) {
      if (out) out[i + j] = val[j]; else s += val[j];
      if (der) der[i + j] = d[j];
    }
  }
  return s;
}

template <typename T>
static void fwd(int64_t n, const T* x, const T* t, T* out, T* der, T* red, const double* cs,
                double ds, double rscale, int threads) {
  Consts<T> c = {(T)cs[0], (T)cs[1], (T)cs[2], (T)(cs[1] * ds)};
  const int64_t grain = 1 << 16;
  int64_t nt = threads < 1 ? 1 : threads;
  if (n / grain < nt) nt = n / grain < 1 ? 1 : n / grain;
  double total = 0.0;
  if (nt == 1) {
    total = run<T>(0, n, x, t, out, der, c);
  } else {
    std::vector<double> part(nt, 0.0);
    std::vector<std::thread> pool;
    int64_t step = (n + nt - 1) / nt;
    step = (step + 63) / 64 * 64;
    for (int64_t k = 1; k < nt; k++) {
      int64_t a = k * step, b = a + step < n ? a + step : n;
      if (a >= b) break;
      pool.emplace_back([=, &part, &c] { part[k] = run<T>(a, b, x, t, out, der, c); });
    }
    part[0] = run<T>(0, step < n ? step : n, x, t, out, der, c);
    for (auto& th : pool) th.join();
    for (int64_t k = 0; k < nt; k++) total += part[k];
  }
  if (red) *red = (T)(total * rscale);
}

extern "C" int kl_abi(void) { return 2; }
extern "C" void kl_fwd_f32(int64_t n, const float* x, const float* t, float* out, float* der,
                           float* red, const double* cs, double ds, double rscale,
                           int threads) {
  fwd<float>(n, x, t, out, der, red, cs, ds, rscale, threads);
}
extern "C" void kl_fwd_f64(int64_t n, const double* x, const double* t, double* out,
                           double* der, double* red, const double* cs, double ds, double rscale,
                           int threads) {
  fwd<double>(n, x, t, out, der, red, cs, ds, rscale, threads);
}
"""

def _source(phi: dict[torch.dtype, tuple[float, tuple[float, ...]]]) -> str:
    """The kernel source with the switch points and the Horner steps of phi spelled out (from
    ``phi``: dtype -> (t, coefficients in powers of u))."""
    src = _KERNEL_SRC
    for dtype, tag, suffix in ((torch.float32, "PHI32", "f"), (torch.float64, "PHI64", "")):
        t, coeffs = phi[dtype]
        steps = "\n".join(f"  p = p * uc + {c!r}{suffix};" for c in reversed(coeffs[:-1]))
        src = (src.replace(f"{tag}_HORNER", steps).replace(f"{tag}_LAST", f"{coeffs[-1]!r}{suffix}")
               .replace(f"{tag}_T", f"{t!r}{suffix}"))
    return src


@functools.cache
def cpu_kernel() -> Any:
    """The ctypes library of the C++ kernel, or ``None`` (no compiler, build failure, or
    ``KLHUBER_NO_KERNEL=1``).  Built once per source, compiler and CPU with
    ``-O3 -march=native`` and without ``-ffast-math`` (which would change the floating-point
    mode of the process and the rounding of the formulas)."""
    import ctypes

    def built() -> None:
        _COMPILES["kernel"] += 1

    lib = compile_library(_source(PHI), "kl_fused", flags=("-std=c++14", "-pthread"),
                          key=("-std=c++14", "-pthread"), on_build=built)
    try:
        if lib is None or lib.kl_abi() != 2:
            return None
    except AttributeError:  # a library without the ABI marker
        return None
    p = ctypes.c_void_p
    for name in ("kl_fwd_f32", "kl_fwd_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_int64, p, p, p, p, p, p, ctypes.c_double, ctypes.c_double,
                       ctypes.c_int]
        fn.restype = None
    return lib


@functools.lru_cache(maxsize=256)
def _consts(alpha: float, beta: float) -> Any:
    """The kernel's constants (1/alpha, 1/beta, alpha/beta) as a ctypes array, cached per pair
    of scales."""
    import ctypes

    return (ctypes.c_double * 3)(1.0 / alpha, 1.0 / beta, alpha / beta)


def cpu_forward(lib: Any, x: Tensor, t: Tensor | None, alpha: float, beta: float,
                reduction: str, want_d: bool) -> tuple[Tensor, Tensor | None]:
    """The loss (reduced as ``reduction`` says) and, if ``want_d``, :math:`D'(x - t)` divided
    by the number of elements for ``"mean"``, for contiguous CPU float32/float64 ``x`` (and
    ``t`` of the same dtype and shape).  One pass over the data."""
    n = x.numel()
    fn = lib.kl_fwd_f32 if x.dtype == torch.float32 else lib.kl_fwd_f64
    if reduction == "none":
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        res = out
        red_ptr = None
        ds = rscale = 1.0
    else:
        out = None
        res = torch.empty((), dtype=x.dtype)
        red_ptr = res.data_ptr()
        if reduction == "mean":
            ds = rscale = 1.0 / n if n else float("nan")
        else:
            ds = rscale = 1.0
    d = torch.empty_like(x, memory_format=torch.contiguous_format) if want_d else None
    if n == 0:
        if reduction != "none":
            res.fill_(0.0 if reduction == "sum" else float("nan"))
        return res, d
    threads = torch.get_num_threads() if n >= 131072 else 1
    fn(n, x.data_ptr(), None if t is None else t.data_ptr(),
       None if out is None else out.data_ptr(), None if d is None else d.data_ptr(), red_ptr,
       _consts(alpha, beta), ds, rscale, threads)
    return res, d


# ---------------------------------------------------------------------------------------------
# The compiled (torch.compile, dynamic shapes) forward
# ---------------------------------------------------------------------------------------------


def formula(x: Tensor, c: Tensor | tuple[float, ...], degree: int,
            want_val: bool = True) -> tuple[Tensor | None, Tensor]:
    """D (if ``want_val``) and D' of ``x`` with ``c = [1/alpha, 1/beta, alpha/beta, t, c_0,
    ..., c_degree]`` (t and the coefficients of phi in powers of u).

    Compiled, ``c`` is a tensor: new scales need no recompilation, and Dynamo sees no Python
    floats (which it would trace as symbolic values or specialise on).  Eager, it is a tuple
    of floats (scalar operands cost no indexing operation)."""
    a = x.abs()
    u = a * c[0]
    t = c[3]
    small = u < t
    uc = torch.clamp(u, max=t)
    p = uc * c[4 + degree]
    p.add_(c[3 + degree])
    for k in range(degree - 2, -1, -1):
        p.mul_(uc).add_(c[4 + k])
    q = p.mul_(uc)
    ome = torch.expm1(-u).neg_()
    d = torch.where(small, uc * (1.0 - q), ome).mul_(c[1])
    d = torch.copysign(d, x)
    if not want_val:
        return None, d
    ab = a * c[1]
    val = torch.where(small, ab * q, ab - c[2] * ome)
    return val, d


# One function per reduction (each its own code object, so that each has its own
# compilation cache).


def _fwd_none(input: Tensor, target: Tensor | None, c: Tensor | tuple[float, ...],
              want_d: bool) -> tuple[Tensor, Tensor | None]:
    x = input if target is None else input - target
    val, d = formula(x, c, len(PHI[x.dtype][1]) - 1)
    return val, (d if want_d else None)


def _fwd_sum(input: Tensor, target: Tensor | None, c: Tensor | tuple[float, ...],
             want_d: bool) -> tuple[Tensor, Tensor | None]:
    x = input if target is None else input - target
    val, d = formula(x, c, len(PHI[x.dtype][1]) - 1)
    return val.sum(), (d if want_d else None)


def _fwd_mean(input: Tensor, target: Tensor | None, c: Tensor | tuple[float, ...],
              want_d: bool) -> tuple[Tensor, Tensor | None]:
    x = input if target is None else input - target
    val, d = formula(x, c, len(PHI[x.dtype][1]) - 1)
    return val.mean(), (d / x.numel() if want_d else None)


_EAGER = {"none": _fwd_none, "sum": _fwd_sum, "mean": _fwd_mean}


def _counting_backend(gm: Any, example_inputs: Any) -> Any:
    """Inductor, counting the graphs it compiles."""
    from torch._dynamo import lookup_backend

    _COMPILES["dynamo"] += 1
    return lookup_backend("inductor")(gm, example_inputs)


_BROKEN: set[str] = set()


@functools.cache
def _compiled_fwd(reduction: str) -> Callable[..., tuple[Tensor, Tensor | None]]:
    return torch.compile(_EAGER[reduction], backend=_counting_backend, dynamic=True)


def mark_compile_broken(err: BaseException) -> None:
    """Record that :func:`torch.compile` failed (``err``): no compiled path is tried again in
    this process (:func:`compile_available` is false from now on)."""
    _BROKEN.add(type(err).__name__)


def compile_available(device: torch.device | None = None) -> bool:
    """Whether the compiled fused forward may be tried on ``device``: ``torch.compile``
    present, not disabled with ``KLHUBER_NO_COMPILE=1``, not failed before in this process,
    and Triton importable for CUDA."""
    if not hasattr(torch, "compile") or os.environ.get("KLHUBER_NO_COMPILE") or _BROKEN:
        return False
    if device is not None and device.type == "cuda":
        return _has_triton()
    return True


@functools.cache
def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - old torch
        return False
    return bool(has_triton())


@functools.lru_cache(maxsize=256)
def _consts_tuple(alpha: float, beta: float, dtype: torch.dtype) -> tuple[float, ...]:
    """``c`` of :func:`formula` as Python floats (eager evaluation)."""
    t, coeffs = PHI[dtype]
    return (1.0 / alpha, 1.0 / beta, alpha / beta, t, *coeffs)


@functools.lru_cache(maxsize=64)
def _consts_tensor(alpha: float, beta: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``c`` of :func:`formula`, cached per scales, dtype and device."""
    t, coeffs = PHI[dtype]
    return torch.tensor([1.0 / alpha, 1.0 / beta, alpha / beta, t, *coeffs], dtype=dtype,
                        device=device)


def compiled_forward(x: Tensor, t: Tensor | None, alpha: float, beta: float, reduction: str,
                     want_d: bool, compiled: bool = True) -> tuple[Tensor, Tensor | None]:
    """The fused forward through :func:`torch.compile` (``dynamic=True``); eager evaluation of
    the same formulas if ``compiled`` is false or compilation fails (then the compiled path is
    not tried again in this process).

    Dynamo specialises sizes 0 and 1, so tensors with fewer than 2 elements are evaluated
    eagerly instead of compiling a graph for them.  (Flattening the inputs would not save
    the compilation per number of dimensions: Dynamo guards on the base of a view.)"""
    if compiled and x.numel() >= 2 and compile_available(x.device):
        c = _consts_tensor(alpha, beta, x.dtype, x.device)
        try:
            return _compiled_fwd(reduction)(x, t, c, want_d)
        except Exception as err:  # no C++ compiler / Triton, unsupported platform, ...
            import warnings

            mark_compile_broken(err)
            warnings.warn(f"klhuber: torch.compile of the fused KL loss failed ({err!r:.200}); "
                          "using eager evaluation", RuntimeWarning, stacklevel=3)
    return _EAGER[reduction](x, t, _consts_tuple(alpha, beta, x.dtype), want_d)
