"""The chunked CPU engine of the general path: eager evaluation of :math:`D` and :math:`D'` in
cache-sized chunks with preallocated buffers, for large contiguous CPU tensors with scalar
scales (:func:`forward_eval` and :func:`backward_eval` fall back to
:func:`klhuber._kernels.kernel` for everything else)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from klhuber._inspection import is_compiling as _is_compiling
from klhuber._inspection import is_transformed as _is_transformed
from klhuber._kernels import diff, kernel, moderate, sum_to
from klhuber._phi import PHI, PHI_U
from klhuber._validation import ParamLike

CHUNK = 32_000  # elements per chunk of the eager CPU kernel: below torch's grain size (32768)
CHUNK_MIN = 65_536  # smaller tensors are processed in one go
#: Python threads sharing the chunks.  Measured on 2 shared cores, one thread is fastest (the
#: GIL serialises the short operations); more may pay off on large idle machines.
MAX_WORKERS = 1

_LOG2E = 1.0 / math.log(2.0)
_POOL: Any = None  # the thread pool of run_chunks when MAX_WORKERS > 1
_POOL_PID = -1  # the process that created _POOL (a forked child makes its own)


def _scalar_param(p: ParamLike) -> bool:
    return not isinstance(p, Tensor) or p.numel() == 1


def _use_chunks(x: Tensor, alpha: ParamLike, beta: ParamLike) -> bool:
    return (x.device.type == "cpu" and x.numel() >= CHUNK_MIN and _scalar_param(alpha)
            and _scalar_param(beta) and type(x) is Tensor and not _is_compiling()
            and not _is_transformed(x))


def _chunkable(input: Tensor, alpha: ParamLike, beta: ParamLike) -> bool:
    return (_use_chunks(input, alpha, beta) and input.is_contiguous()
            and float(alpha) > 0 and input.dtype in PHI_U
            and moderate(float(alpha), float(beta), input.dtype))


class _Chunked:
    """Eager CPU evaluation of D and D' in cache-sized chunks with preallocated buffers.

    Branch-free form of the two-branch formula (``torch.where`` is slow on CPU): with
    ``uc = min(u, t)`` and ``q(uc) = uc phi(uc)``,

    * ``alpha g(u) = alpha uc q(uc) + alpha [(u - uc) + (min(e^{-u}, e^{-t}) - e^{-t})]``,
    * ``g'(u) = uc (1 - q(uc)) + (max(e^{-u}, e^{-t}) - e^{-u})``;

    the bracketed corrections are exactly 0 for ``u <= t`` and free of cancellation above.
    Chunks are smaller than torch's parallel grain size, so each operation runs on one core
    without OpenMP hand-offs; ``MAX_WORKERS`` Python threads (default 1) share the chunks.
    """

    def __init__(self, dtype: torch.dtype, alpha: float, beta: float) -> None:
        t, coeffs = PHI[dtype]  # powers of nu = -u
        L = _LOG2E
        # Work with m = -u log2(e), so that e^{-u} = exp2(m) (see _common).
        self.mt = -t * L
        self.et = 2.0 ** self.mt  # e^{-t}
        self.alpha, self.beta = alpha, beta
        self.m_scale = -L / alpha
        self.coeffs = [torch.tensor(c / L**k, dtype=dtype) for k, c in enumerate(coeffs)]
        self.zero = torch.zeros((), dtype=dtype)
        self.dtype = dtype

    def _buffers(self) -> list[Tensor]:
        return [torch.empty(CHUNK, dtype=self.dtype) for _ in range(6)]

    def _common(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None) -> tuple[Tensor, ...]:
        """Fills X = x, M = -u L, MC = -min(u, t) L, F = min(e^{-u}, e^{-t}) - e^{-t} and
        Q = -q(uc) L with L = log2(e) and q(uc) = uc phi(uc) = g(uc)/uc."""
        k = xi.numel()
        X, M, MC, F, Q = buf[:5] if k == CHUNK else (b[:k] for b in buf[:5])
        if ti is not None:
            torch.sub(xi, ti, out=X)
        else:
            X = xi
        torch.abs(X, out=M)
        M.mul_(self.m_scale)
        # e^{-u} as exp2: torch's exp parallelises even chunks this small (MKL-VML path, grain
        # 2048), whose OpenMP wake-ups cost more than the work; exp2 stays on the thread.
        torch.exp2(M, out=F)
        F.sub_(self.et).clamp_(max=0.0)  # exactly 0 for u <= t
        torch.clamp(M, min=self.mt, out=MC)
        cs = self.coeffs
        torch.add(cs[-2], MC, alpha=float(cs[-1]), out=Q)
        for c in reversed(cs[:-2]):
            torch.addcmul(c, Q, MC, out=Q)
        Q.mul_(MC)
        return X, M, MC, F, Q

    # With these, exactly (all corrections vanish for u <= t):
    #   D    = (alpha/beta) g(u) = (alpha/beta) [MC Q / L^2 + ((MC - M) + L F) / L]
    #   D'   = sign(x) g'(u) / beta,   -L g'(u) = MC + MC Q / L + L F

    def value(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None,
              out: Tensor | None) -> tuple[Tensor, float]:
        """Returns (V, s) with D = s * V (V written into ``out`` if given)."""
        X, M, MC, F, Q = self._common(buf, xi, ti)
        k = xi.numel()
        S = buf[5] if k == CHUNK else buf[5][:k]
        return self._value_from(S, M, MC, F, Q, out)

    def _value_from(self, S: Tensor, M: Tensor, MC: Tensor, F: Tensor, Q: Tensor,
                    out: Tensor | None) -> tuple[Tensor, float]:
        L = _LOG2E
        ab = self.alpha / self.beta
        torch.sub(MC, M, out=S)
        S.add_(F, alpha=L).mul_(ab / L)
        # scale MC before the product MC Q (~u^2), which could underflow where D does not
        MC.mul_(ab / L**2)
        return torch.addcmul(S, MC, Q, out=S if out is None else out), 1.0

    def deriv(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None, scale: float,
              out: Tensor, grad: Tensor | None = None) -> None:
        """out = scale * beta * D'(x) (times ``grad`` if given)."""
        X, M, MC, F, Q = self._common(buf, xi, ti)
        T = Q  # reused
        torch.addcmul(MC, MC, Q, value=1.0 / _LOG2E, out=T)
        T.add_(F, alpha=_LOG2E)  # -L g'(u)
        torch.sign(X, out=M)
        if grad is None:
            torch.addcmul(self.zero, T, M, value=-scale / _LOG2E, out=out)
        else:
            T.mul_(M)
            torch.mul(T, grad, out=out).mul_(-scale / _LOG2E)

    def value_deriv(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None,
                    out: Tensor | None, dout: Tensor) -> tuple[Tensor, float]:
        """Value as in :meth:`value` and D' (into ``dout``) in one pass."""
        X, M, MC, F, Q = self._common(buf, xi, ti)
        k = xi.numel()
        S = buf[5] if k == CHUNK else buf[5][:k]
        torch.addcmul(MC, MC, Q, value=1.0 / _LOG2E, out=dout)
        dout.add_(F, alpha=_LOG2E)  # -L g'(u)
        torch.sign(X, out=S)
        torch.addcmul(self.zero, dout, S, value=-1.0 / (_LOG2E * self.beta), out=dout)
        return self._value_from(S, M, MC, F, Q, out)


def _run_chunks(n: int, work: Callable[[list[Tensor], slice], Any],
                make_buffers: Callable[[], list[Tensor]]) -> list[Any]:
    """Apply ``work(buffers, slice)`` to all chunks of ``range(n)``, on up to
    ``torch.get_num_threads()`` threads, each with its own buffers.  Returns the results in
    chunk order."""
    global _POOL, _POOL_PID
    starts = list(range(0, n, CHUNK))
    workers = max(1, min(torch.get_num_threads(), MAX_WORKERS, len(starts)))
    if workers == 1:
        buf = make_buffers()
        return [work(buf, slice(s, s + CHUNK)) for s in starts]
    if _POOL is None or _POOL_PID != os.getpid() or _POOL._max_workers < workers:
        # (re)create after a fork: the threads of a parent's pool do not exist in the child
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="klhuber")
        _POOL_PID = os.getpid()
    parts = [starts[w::workers] for w in range(workers)]
    inference = torch.is_inference_mode_enabled()

    def job(my_starts: list[int]) -> list[tuple[int, Any]]:
        # grad mode and inference mode are thread-local: mirror the caller's
        with torch.inference_mode(inference), torch.no_grad():
            buf = make_buffers()
            return [(s, work(buf, slice(s, s + CHUNK))) for s in my_starts]

    futures = [_POOL.submit(job, p) for p in parts]
    results = dict(kv for fut in futures for kv in fut.result())
    return [results[s] for s in starts]


def forward_eval(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                 reduction: str, want_d: bool = False) -> tuple[Tensor, Tensor]:
    """The loss and, on the chunked CPU path when ``want_d``, D'(input - target) for backward
    (else an empty tensor)."""
    no_d = input.new_empty(0)
    if not _chunkable(input, alpha, beta) or (target is not None and not target.is_contiguous()):
        val = kernel(diff(input, target), alpha, beta, value=True, deriv=False)["value"]
        if reduction == "none":
            return val, no_d
        return (val.sum() if reduction == "sum" else val.mean()), no_d
    eng = _Chunked(input.dtype, float(alpha), float(beta))
    flat_in = input.view(-1)
    flat_t = None if target is None else target.view(-1)
    n = flat_in.numel()
    out = torch.empty(n, dtype=input.dtype) if reduction == "none" else None
    d = torch.empty(n, dtype=input.dtype) if want_d else None

    def work(buf: list[Tensor], sl: slice) -> float:
        xi, ti = flat_in[sl], None if flat_t is None else flat_t[sl]
        o = None if out is None else out[sl]
        v, scale = (eng.value(buf, xi, ti, o) if d is None
                    else eng.value_deriv(buf, xi, ti, o, d[sl]))
        return 0.0 if out is not None else float(v.sum()) * scale  # chunk sums in float64

    parts = _run_chunks(n, work, eng._buffers)
    d_out = no_d if d is None else d.view(input.shape)
    if out is not None:
        return out.view(input.shape), d_out
    total = torch.tensor(math.fsum(parts), dtype=input.dtype)
    return (total if reduction == "sum" else total / n), d_out


def backward_eval(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                  grad: Tensor, reduction: str, need_x: bool, need_a: bool,
                  need_b: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """First-order backward, no graph: recompute D' (and the parameter derivatives)."""
    reduced = reduction != "none"
    fast = (need_x and not (need_a or need_b) and _chunkable(input, alpha, beta)
            and (target is None or target.is_contiguous()))
    if not fast:
        x = diff(input, target)
        k = kernel(x, alpha, beta, value=need_b, deriv=need_x, dalpha=need_a)
        gx = grad * k["deriv"] if need_x else None
        ga = sum_to(grad * k["dalpha"], alpha) if need_a else None
        gb = sum_to(-grad * k["value"] / beta, beta) if need_b else None
        return gx, ga, gb
    eng = _Chunked(input.dtype, float(alpha), float(beta))
    flat_in = input.view(-1)
    flat_t = None if target is None else target.view(-1)
    n = flat_in.numel()
    gx = torch.empty(n, dtype=input.dtype)
    if reduced:
        scale, flat_g = float(grad) / float(beta), None
    else:
        scale = 1.0 / float(beta)
        flat_g = grad.to(input.dtype).expand(input.shape).reshape(-1)

    def work(buf: list[Tensor], sl: slice) -> None:
        eng.deriv(buf, flat_in[sl], None if flat_t is None else flat_t[sl], scale, gx[sl],
                  None if flat_g is None else flat_g[sl])

    _run_chunks(n, work, eng._buffers)
    return gx.view(input.shape), None, None
