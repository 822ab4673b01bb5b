r"""Gradient descent over the whole grid (the paper's solver).

:func:`gd_grid` runs every (family, scale, seed, alpha, learning rate) at once, as one batched
program: on the CPU in float32 a fused C++ kernel compiled at first use (``_kernel``), else
torch (any device and dtype), with divergence detection and early retirement of converged
configurations, chunked with optional checkpoints.  ``gd_reference_loop`` is the unbatched
reference of the benchmarks.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from klhuber.toy._common import (
    _check_finite_at_least,
    _check_positive_grid,
    _check_positive_int,
    _chunks,
    _default_max_elements,
)
from klhuber.toy._kernel import _cpu_kernel, _kernel_threads, _KernelBackend
from klhuber.toy.data import ToyData, _test_rmse
from klhuber.toy.exact import _l1_irls
from klhuber.toy.formulas import (
    ALPHA_LOSSES,
    _check_loss,
    _loss_value,
    _psi_inplace,
    loss_formulas,
    psi,
)

__all__ = ["GDResult", "StoppedEarly", "gd_grid", "gd_reference_loop"]



@dataclass
class GDResult:
    """GD over (family, scale, seed, alpha, lr); arrays shaped (F, S, seeds, A, L[, K]).

    ``status``: 0 ran to the end, 1 converged early (retired: continuing could not have moved
    the test RMSE by more than ``retire_tol`` relative), 2 diverged (never scored: its ``rmse``
    is NaN).  ``stop_iteration``: the iteration at which the configuration stopped
    (``iterations`` for status 0).  ``objective``: final mean loss; ``rmse``: test RMSE;
    ``theta``: final coefficients (basis); ``step_reference``: the eigenvalue the relative
    learning rates divide, per (F, S, seeds, A) (see ``lr_reference`` of :func:`gd_grid`).
    """

    loss: str
    basis: str
    alphas: np.ndarray
    lrs: np.ndarray
    iterations: int
    rmse: np.ndarray
    objective: np.ndarray
    grad_norm: np.ndarray
    status: np.ndarray
    theta: np.ndarray
    wall_time_s: float
    stop_iteration: np.ndarray | None = None
    step_reference: np.ndarray | None = None
    lr_reference: str = "gram"
    retire_tol: float = 0.0
    backend: str = "torch"

    @property
    def diverged(self) -> np.ndarray:
        return self.status == 2

    @property
    def converged_early(self) -> np.ndarray:
        return self.status == 1

    def best_over_lr(self) -> tuple[np.ndarray, np.ndarray]:
        """(rmse, lr index) of the best non-diverged learning rate per (F, S, seed, A); NaN if none."""
        r = np.where(self.diverged, np.inf, self.rmse)
        r = np.where(np.isfinite(r), r, np.inf)
        idx = np.argmin(r, axis=-1)
        best = np.take_along_axis(r, idx[..., None], axis=-1)[..., 0]
        best = np.where(np.isfinite(best), best, np.nan)
        return best, idx


class StoppedEarly(RuntimeError):
    """Raised by :func:`gd_grid` / :func:`run` when ``deadline`` passed before a new chunk started.

    Every finished chunk is in the checkpoint folder, so the same call resumes.
    """


def _lr_reference(phi: Tensor) -> Tensor:
    """:math:`\\lambda_{\\max}(\\Phi^\\top\\Phi/N)` per seed (float64)."""
    gram = phi.mT @ phi / phi.shape[-2]
    return torch.linalg.eigvalsh(gram)[..., -1]


def _curvature_reference(data: ToyData, alphas: np.ndarray, loss: str) -> np.ndarray:
    r""":math:`\lambda_{\max}(H_\alpha)`, :math:`H_\alpha = \Phi^\top \mathrm{diag}(\psi_\alpha'(\hat r))
    \Phi / N`, per (pair, seed, alpha): the curvature of the mean loss at a robust pilot fit.

    :math:`\hat r` are the residuals of a least-absolute-deviations pilot (30 IRLS iterations of
    :func:`_l1_irls`, float64).  ``psi'`` is :math:`1\{|r| \le \alpha\}` for ``huber`` and
    :math:`e^{-|r|/\alpha}` for ``kl``; the result is floored at :math:`10^{-4}
    \lambda_{\max}(\Phi^\top\Phi/N)`.  Other losses: :math:`\lambda_{\max}` of the Gram matrix.
    """
    phi = data.phi.to(torch.float64)
    nseed, n, k = phi.shape
    pairs = len(data.families) * len(data.scales)
    lam_g = _lr_reference(phi)  # (seeds,)
    out = np.broadcast_to(lam_g.numpy()[None, :, None], (pairs, nseed, len(alphas))).copy()
    formulas = loss_formulas(loss)
    if formulas.name not in ALPHA_LOSSES:
        return out
    iu = torch.triu_indices(k, k)
    quad = (phi[..., iu[0]] * phi[..., iu[1]]).contiguous()
    y = data.y.reshape(pairs, nseed, n).permute(1, 2, 0).to(torch.float64).contiguous()
    pilot, *_ = _l1_irls(phi, quad, y, 30)
    r = torch.baddbmm(y, phi, pilot, alpha=-1.0).abs()  # (seeds, N, pairs)
    for ai, a in enumerate(alphas):
        w = formulas.dpsi(r, float(a))  # r >= 0 here
        hq = torch.bmm(w.mT, quad) / n  # (seeds, pairs, K(K+1)/2)
        h = torch.zeros(nseed, pairs, k, k, dtype=torch.float64)
        h[:, :, iu[0], iu[1]] = hq
        h[:, :, iu[1], iu[0]] = hq
        lam = torch.linalg.eigvalsh(h)[..., -1]  # (seeds, pairs)
        out[:, :, ai] = torch.maximum(lam, 1e-4 * lam_g[:, None]).mT.numpy()
    return out


class _TorchBackend:
    """Runs windows of GD with torch (any device and dtype), blocked over rows.

    Per row block: ``r = y[pair] - Phi_blk Theta`` (one ``baddbmm`` for all configurations of a
    seed), :math:`\\psi` in place, ``g += Phi_blk^T psi(r)``; the block is sized so that ``r``
    has at most ``block_elements`` entries (a cache-sized block on the CPU, all rows on CUDA).
    """

    name = "torch"

    def __init__(self, phi: Tensor, y: Tensor, loss: str, block_elements: int) -> None:
        self.phi, self.loss, self.block = phi, loss, block_elements
        self.n = phi.shape[1]
        self.phit = phi.mT.contiguous()
        self.yt = y.permute(0, 2, 1).contiguous()  # (S, N, pairs)

    def advance(self, seed: np.ndarray, pair: np.ndarray, alpha: np.ndarray, step: np.ndarray,
                theta: np.ndarray, iters: int) -> tuple[np.ndarray, ...]:
        phi, dt, dev = self.phi, self.phi.dtype, self.phi.device
        nseed, n, k = phi.shape
        order = np.argsort(seed, kind="stable")
        counts = np.bincount(seed, minlength=nseed)
        m = int(counts.max())
        pos = np.arange(seed.size) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
        s_idx, p_idx = seed[order], pos
        th = torch.zeros(nseed, k, m, dtype=dt)
        al = torch.ones(nseed, 1, m, dtype=dt)
        st = torch.zeros(nseed, 1, m, dtype=dt)
        pr = torch.zeros(nseed, 1, m, dtype=torch.long)
        th[s_idx, :, p_idx] = torch.as_tensor(theta[order], dtype=dt)
        al[s_idx, 0, p_idx] = torch.as_tensor(alpha[order], dtype=dt)
        st[s_idx, 0, p_idx] = torch.as_tensor(step[order], dtype=dt)
        pr[s_idx, 0, p_idx] = torch.as_tensor(pair[order])
        th, al, st, pr = (v.to(dev) for v in (th, al, st, pr))
        nb = max(1, min(n, self.block // max(nseed * m, 1)))
        g = torch.zeros(nseed, k, m, dtype=dt, device=dev)
        last = torch.zeros_like(th)
        obj = torch.zeros(nseed, m, dtype=torch.float64, device=dev)
        for it in range(iters + 1):
            g.zero_()
            for r0 in range(0, n, nb):
                r1 = min(n, r0 + nb)
                yb = torch.gather(self.yt[:, r0:r1], 2, pr.expand(nseed, r1 - r0, m))
                r = torch.baddbmm(yb, phi[:, r0:r1], th, alpha=-1.0)
                if it == iters:
                    obj += _loss_value(r, self.loss, al).sum(1, dtype=torch.float64)
                _psi_inplace(r, self.loss, al)
                g.baddbmm_(self.phit[:, :, r0:r1], r)
            if it == iters:
                break
            new = th + st * g
            last = new - th
            th = new
        obj /= n

        def back(v: Tensor) -> np.ndarray:
            return v.cpu().double().numpy()

        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        s_o, p_o = s_idx[inv], p_idx[inv]
        return (back(th)[s_o, :, p_o], back(g)[s_o, :, p_o], back(obj)[s_o, p_o],
                back(last)[s_o, :, p_o])


def _check_iterations(iterations: int, check_every: int) -> list[int]:
    """Iterations after which divergence and convergence are checked: early ones (10, 30) for
    divergence, then every ``check_every``, and the last."""
    its = {c for c in (10, 30) if c < iterations}
    its |= set(range(check_every, iterations, check_every))
    return sorted(its | {iterations})


def _gd_chunk(backend: Any, seed: np.ndarray, pair: np.ndarray, alpha: np.ndarray,
              step: np.ndarray, obj0: np.ndarray, loss: str, iterations: int, check_every: int,
              div_factor: float, retire_tol: float, gram: np.ndarray, theta_star: np.ndarray,
              tick: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    r"""GD for C configurations (arrays over columns, ordered by (seed, pair)); returns per column
    ``theta`` (C, K), ``obj``, ``grad_norm``, ``status``, ``stop``.

    After each check iteration (:func:`_check_iterations`) a configuration is *diverged* (status
    2) if its objective or coefficients are not finite, or its objective is above
    ``div_factor`` times its initial value (or, at the end, above its initial value).  It is
    *converged* (status 1) if the rest of the run cannot move the fit by more than
    ``retire_tol`` times its current test RMSE (so the test RMSE cannot change by more than that,
    relative): with :math:`v` the net displacement of :math:`\theta` over the last window (in
    the test-Gram norm, i.e. function space) per iteration and :math:`\rho \le 1` the
    per-iteration contraction of :math:`v` over the last windows (the larger of the last two),
    the remaining movement is estimated by :math:`v \sum_{j=1}^{R} \rho^j` (:math:`v R` when
    it does not contract).  A last step of exactly zero is a fixed point of the iteration
    (rounding included): continuing would change nothing.  Retired configurations leave the
    batch (compaction), so a window only costs what is still running.
    """
    c, k = seed.size, theta_star.size
    theta = np.zeros((c, k))
    prev = np.zeros((c, k))
    obj = obj0.copy()
    grad_norm = np.full(c, np.nan)
    status = np.zeros(c, np.int8)
    stop = np.full(c, iterations, np.int32)
    prev_v = np.full(c, np.nan)
    prev_rho = np.ones(c)
    active = np.arange(c)
    it, prev_w = 0, 0
    for nxt in _check_iterations(iterations, check_every):
        if active.size == 0:
            break
        th, g, ob, last = backend.advance(seed[active], pair[active], alpha[active],
                                          step[active], theta[active], nxt - it)
        if tick is not None:
            tick(nxt - it)
        w, it = nxt - it, nxt
        theta[active], obj[active] = th, ob
        grad_norm[active] = np.linalg.norm(g, axis=1) / backend.n
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            bad = (~np.isfinite(ob) | (ob > div_factor * obj0[active])
                   | ~np.isfinite(th).all(1) | ~np.isfinite(g).all(1))
            if it == iterations:
                bad |= ob > obj0[active]
            gm = gram[seed[active]]
            disp = th - prev[active]
            v = np.sqrt(np.clip(np.einsum("ci,cij,cj->c", disp, gm, disp), 0, None)) / w
            d = th - theta_star
            rmse = np.sqrt(np.clip(np.einsum("ci,cij,cj->c", d, gm, d), 0, None))
            pv = prev_v[active]
            rho = np.where(pv > 0, (v / pv) ** (2.0 / (w + prev_w)), 1.0)
            rho = np.minimum(np.where(np.isfinite(rho), rho, 1.0), 1.0)
            rho_use = np.maximum(rho, prev_rho[active])
            rem = iterations - it
            geo = np.where(rho_use < 1, rho_use * (1 - rho_use**rem)
                           / np.maximum(1 - rho_use, 1e-300), rem)
            fixed = (last == 0).all(1)
            conv = ~bad & (it < iterations) & (fixed | (v * geo <= retire_tol * rmse))
        prev_v[active], prev_rho[active], prev[active] = v, rho, th
        prev_w = w
        done = bad | conv
        status[active[bad]] = 2
        status[active[conv]] = 1
        stop[active[done]] = it
        theta[active[bad]] = 0.0
        active = active[~done]
    if tick is not None and it < iterations:
        tick(iterations - it)
    return {"theta": theta, "obj": obj, "grad_norm": grad_norm, "status": status, "stop": stop}


def _initial_objective(y: Tensor, alphas: np.ndarray, loss: str) -> np.ndarray:
    """Mean loss at :math:`\\theta = 0` per (pairs, seeds, alpha), float64."""
    y = y.to(torch.float64)
    return np.stack([_loss_value(y, loss, float(a)).mean(-1).numpy() for a in alphas], -1)


def gd_grid(
    data: ToyData,
    alphas: Sequence[float],
    lrs: Sequence[float],
    *,
    loss: str = "huber",
    iterations: int = 1000,
    check_every: int = 100,
    div_factor: float = 10.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    max_elements: int | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    lr_reference: str = "gram",
    retire_tol: float = 1e-6,
    backend: str = "auto",
    deadline: float | None = None,
) -> GDResult:
    """Gradient descent on the mean loss for every (family, scale, seed, alpha, lr) at once.

    The update of every configuration is :math:`\\theta \\mathrel{+}= \\eta / N\\,
    \\Phi^\\top\\psi(y - \\Phi\\theta)` from :math:`\\theta = 0`, with :math:`\\eta =` ``lr`` /
    :math:`\\lambda`: ``lr_reference="gram"`` takes :math:`\\lambda = \\lambda_{\\max}(\\Phi^\\top
    \\Phi/N)` (per seed), ``"curvature"`` the largest eigenvalue of the loss Hessian at
    :math:`\\alpha` at a robust pilot fit (``_curvature_reference``, per family, scale, seed
    and alpha; for ``l1``/``l2`` the Gram matrix), so that a relative rate of 1 is the classic
    step of the local quadratic at every alpha.

    Backends: ``"kernel"`` (CPU, float32) a fused C++ kernel compiled on first use that keeps
    the coefficients and gradients of 8 configurations in registers while it streams the rows;
    ``"torch"`` (any device/dtype) one ``baddbmm`` per block of rows for all configurations of
    a seed (``r`` never exceeds a cache-sized block on the CPU); ``"auto"`` takes the kernel when
    it applies and compiles.  Configurations retire when they diverge or converge (status 1/2,
    see ``_gd_chunk``); they are then removed from the batch.  For ``l1``/``l2`` pass
    ``alphas=[1.0]`` (unused).

    Work is split into chunks of whole (family, scale) pairs (or alpha slices) with at most
    ``max_elements`` = configurations x N; with ``checkpoint_dir`` each finished chunk is saved
    atomically under a key of all inputs and reused on a re-run (resume).  With ``deadline`` (a
    ``time.monotonic()`` value) no chunk starts after it: :class:`StoppedEarly` is raised.
    """
    if progress:  # the notebook-aware bar only when one is shown (no widget warnings)
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    from klhuber.results import atomic_write_bytes

    _check_loss(loss)
    alphas = _check_positive_grid(alphas, "alphas")
    lrs = _check_positive_grid(lrs, "lrs")
    iterations = _check_positive_int(iterations, "iterations")
    check_every = _check_positive_int(check_every, "check_every")
    if lr_reference not in ("gram", "curvature"):
        raise ValueError(f"lr_reference must be 'gram' or 'curvature', got {lr_reference!r}")
    if backend not in ("auto", "kernel", "torch"):
        raise ValueError(f"backend must be 'auto', 'kernel' or 'torch', got {backend!r}")
    if not (retire_tol >= 0):
        raise ValueError(f"retire_tol must be >= 0, got {retire_tol}")
    _check_finite_at_least(div_factor, "div_factor", 1.0, allow_inf=True)
    device = torch.device(device)
    nf, ns, nseed = len(data.families), len(data.scales), len(data.seeds)
    na, nl, k, n = len(alphas), len(lrs), data.k, data.n
    lib = None
    if backend != "torch" and device.type == "cpu" and dtype == torch.float32:
        lib = _cpu_kernel(k)
    if backend == "kernel" and lib is None:
        raise RuntimeError("backend='kernel' needs device='cpu', dtype=float32 and a C++ compiler")
    backend_name = "kernel" if lib is not None else "torch"
    if max_elements is None:
        max_elements = _default_max_elements(device, dtype, 4, 24_000_000)
    per_pair = nseed * n * na * nl
    pairs = nf * ns
    block = max(1, min(pairs, max_elements // max(per_pair, 1)))
    a_block = na if per_pair <= max_elements else max(1, max_elements // (nseed * n * nl))
    tasks = [(p0, p1, a0, a1) for p0, p1 in _chunks(pairs, block) for a0, a1 in _chunks(na, a_block)]
    key = None
    if checkpoint_dir is not None:
        h = hashlib.sha256()
        for part in (data.y.numpy().tobytes(), data.phi.numpy().tobytes(), alphas.tobytes(),
                     lrs.tobytes(), repr((loss, iterations, check_every, div_factor, str(dtype),
                                          block, a_block, lr_reference, retire_tol,
                                          backend_name, "v2")).encode()):
            h.update(part)
        key = h.hexdigest()[:16]
        checkpoint_dir = Path(checkpoint_dir)
    t0 = time.perf_counter()
    y_all = data.y.reshape(pairs, nseed, n)
    if lr_reference == "curvature":
        lam = _curvature_reference(data, alphas, loss)  # (pairs, seeds, A)
    else:
        lam = np.broadcast_to(_lr_reference(data.phi).numpy()[None, :, None],
                              (pairs, nseed, na)).copy()
    gram = data.gram_test.numpy()
    theta_star = data.theta_star.numpy()
    theta_out = np.zeros((pairs, nseed, na, nl, k))
    obj_out = np.full((pairs, nseed, na, nl), np.nan)
    gn_out = np.full((pairs, nseed, na, nl), np.nan)
    status_out = np.zeros((pairs, nseed, na, nl), dtype=np.int8)
    stop_out = np.zeros((pairs, nseed, na, nl), dtype=np.int32)
    phi_dev = data.phi.to(device=device, dtype=dtype)
    block_elements = 1 << 18 if device.type == "cpu" else max_elements
    bar = tqdm(total=len(tasks) * iterations, desc=f"GD {loss}", unit="it", disable=not progress,
               leave=False)
    names = ("theta", "obj", "grad_norm", "status", "stop")
    for ti, (p0, p1, a0, a1) in enumerate(tasks):
        ckpt = None if key is None else checkpoint_dir / f"gd_{loss}_{key}_{ti:04d}.pt"
        npair, nal = p1 - p0, a1 - a0
        shape = (nseed, npair, nal, nl)
        if ckpt is not None and ckpt.exists():
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
            out = {name: saved[name].numpy() for name in names}
            bar.update(iterations)
        else:
            if deadline is not None and time.monotonic() >= deadline:
                bar.close()
                raise StoppedEarly(f"GD {loss}: deadline reached before chunk {ti + 1}/"
                                   f"{len(tasks)}; {ti} chunks done")
            # columns ordered (seed, pair, alpha, lr): one group per (seed, pair)
            s_i, p_i, a_i, l_i = (v.ravel() for v in np.meshgrid(
                np.arange(nseed), np.arange(p0, p1), np.arange(a0, a1), np.arange(nl),
                indexing="ij"))
            y = y_all[p0:p1].permute(1, 0, 2)  # (seeds, npair, N)
            step = lrs[l_i] / lam[p_i, s_i, a_i] / n
            obj0 = _initial_objective(y_all[p0:p1], alphas[a0:a1], loss)[p_i - p0, s_i, a_i - a0]
            if lib is not None:
                be: Any = _KernelBackend(lib, data.phi, y, loss, _kernel_threads())
            else:
                be = _TorchBackend(phi_dev, y.to(device=device, dtype=dtype), loss,
                                   block_elements)
            res = _gd_chunk(be, s_i, p_i - p0, alphas[a_i], step, obj0, loss, iterations,
                            check_every, div_factor, retire_tol, gram, theta_star, bar.update)
            # back to (pairs, seeds, alphas, lrs) order
            out = {name: v.reshape(*shape, *v.shape[1:]).swapaxes(0, 1)
                   for name, v in res.items()}
            if ckpt is not None:
                buf = io.BytesIO()
                torch.save({name: torch.as_tensor(np.ascontiguousarray(v))
                            for name, v in out.items()}, buf)
                atomic_write_bytes(ckpt, buf.getvalue())
        theta_out[p0:p1, :, a0:a1] = out["theta"]
        obj_out[p0:p1, :, a0:a1] = out["obj"]
        gn_out[p0:p1, :, a0:a1] = out["grad_norm"]
        status_out[p0:p1, :, a0:a1] = out["status"]
        stop_out[p0:p1, :, a0:a1] = out["stop"]
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    shape = (nf, ns, nseed, na, nl)
    theta_t = torch.as_tensor(theta_out.reshape(*shape, k))
    rmse = _test_rmse(theta_t, data, seed_dim=2).numpy()
    status = status_out.reshape(shape)
    rmse = np.where(status == 2, np.nan, rmse)
    return GDResult(loss, data.basis, alphas, lrs, iterations, rmse, obj_out.reshape(shape),
                    gn_out.reshape(shape), status, theta_out.reshape(*shape, k), wall,
                    stop_iteration=stop_out.reshape(shape),
                    step_reference=lam.reshape(nf, ns, nseed, na), lr_reference=lr_reference,
                    retire_tol=float(retire_tol), backend=backend_name)


def gd_reference_loop(data: ToyData, alpha: float, lr: float, *, family_index: int = 0,
                      scale_index: int = 0, seed_index: int = 0, loss: str = "huber",
                      iterations: int = 1000, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """One configuration at a time (the unbatched reference of ``benchmarks/bench_toy.py``).

    Returns the final coefficients (K,).  Same update as :func:`gd_grid`, no divergence checks.
    """
    phi = data.phi[seed_index].to(dtype)
    y = data.y[family_index, scale_index, seed_index].to(dtype)
    step = lr / float(_lr_reference(data.phi[seed_index])) / data.n
    theta = torch.zeros(data.k, dtype=dtype)
    for _ in range(iterations):
        r = y - phi @ theta
        theta = theta + step * (phi.T @ psi(r, loss, alpha))
    return theta.double().numpy()
