r"""The exact minimiser of the convex objective, without a learning rate.

:func:`exact_grid` solves every (family, scale, seed, alpha) in float64 by a batched
safeguarded Newton / IRLS method; ``l1`` by IRLS finished by an LP-certified vertex (and linear
programming for the rest), ``l2`` in closed form.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

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
from klhuber.toy.data import ToyData, _test_rmse
from klhuber.toy.formulas import (
    _check_loss,
    _irls_weights,
    _loss_value,
    _loss_value_fast,
    _newton_terms,
)

__all__ = ["ExactResult", "exact_grid"]




@dataclass
class ExactResult:
    """Exact minimisers over (family, scale, seed, alpha); arrays shaped (F, S, seeds, A[, K])."""

    loss: str
    alphas: np.ndarray
    rmse: np.ndarray
    objective: np.ndarray
    theta: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    wall_time_s: float


def _exact_block(phi: Tensor, quad: Tensor, y: Tensor, alpha: Tensor, loss: str, tol: float,
                 max_iter: int, theta0: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact minimiser for phi (seeds, N, K), quad (seeds, N, K(K+1)/2), y (seeds, N, M).

    Each iteration takes the full Newton step where it lowers the objective; only the
    configurations where it does not try the half Newton step and the IRLS step.
    """
    seeds, n, k = phi.shape
    m = y.shape[-1]
    iu = torch.triu_indices(k, k, device=phi.device)
    eye = torch.eye(k, dtype=phi.dtype, device=phi.device)
    if theta0 is None:  # least squares start (seeds, K, M)
        theta = torch.linalg.solve(phi.mT @ phi, phi.mT @ y)
    else:
        theta = theta0.clone()
    its = torch.zeros(seeds, m, dtype=torch.long, device=phi.device)
    conv = torch.zeros(seeds, m, dtype=torch.bool, device=phi.device)
    if loss == "l2":
        conv[:] = True
        return theta, _loss_value(y - phi @ theta, loss, alpha).mean(1), its, conv
    eta = 1e-9 * float(y.abs().mean())

    def objective(th: Tensor, ya: Tensor, a: Tensor) -> Tensor:
        return _loss_value_fast(torch.baddbmm(ya, phi, th, alpha=-1.0), loss, a).mean(1)

    def solve(w: Tensor, g: Tensor) -> Tensor:
        hq = torch.bmm(w.mT, quad) / n  # (seeds, M', K(K+1)/2)
        h = torch.zeros(seeds, w.shape[-1], k, k, dtype=phi.dtype, device=phi.device)
        h[:, :, iu[0], iu[1]] = hq
        h[:, :, iu[1], iu[0]] = hq
        ridge = 1e-12 * h.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-300)
        d, _ = torch.linalg.solve_ex(h + ridge[..., None, None] * eye, g.mT[..., None])
        d = d[..., 0].mT
        return torch.where(torch.isfinite(d), d, torch.zeros_like(d))

    active = torch.ones(seeds, m, dtype=torch.bool, device=phi.device)
    # one alpha for the whole block (the continuation sweep): scalar fast paths
    scalar = float(alpha[0]) if bool((alpha == alpha[0]).all()) else None
    obj = objective(theta, y, alpha if scalar is None else scalar)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        cols = active.any(0).nonzero()[:, 0]  # configurations active in any seed
        ya, ta = y[:, :, cols], theta[:, :, cols]
        aa = alpha[cols] if scalar is None else scalar
        ra = torch.baddbmm(ya, phi, ta, alpha=-1.0)
        ps, wn = _newton_terms(ra, loss, aa, eta)
        g = phi.mT @ ps / n  # minus the gradient of the mean loss
        dn = solve(wn, g)
        best_obj = objective(ta + dn, ya, aa)
        old = obj[:, cols]
        better = best_obj < old
        best_step = torch.where(better[:, None, :], dn, torch.zeros_like(dn))
        best_obj = torch.where(better, best_obj, old)
        fail = ~better.all(0)
        if bool(fail.any()):  # safeguard: half Newton step and the IRLS (MM) step
            sub = fail.nonzero()[:, 0]
            ys, ts, rs = ya[:, :, sub], ta[:, :, sub], ra[:, :, sub]
            as_ = aa if scalar is not None else aa[sub]
            di = solve(_irls_weights(rs, loss, as_, eta), g[:, :, sub])
            bo, bs = best_obj[:, sub], best_step[:, :, sub]
            for d in (0.5 * dn[:, :, sub], di):
                o = objective(ts + d, ys, as_)
                b = o < bo
                bo = torch.where(b, o, bo)
                bs = torch.where(b[:, None, :], d, bs)
            best_obj[:, sub], best_step[:, :, sub] = bo, bs
        act = active[:, cols]
        best_step = best_step * act[:, None, :]
        new_theta = ta + best_step
        small = best_step.norm(dim=1) <= tol * (1.0 + new_theta.norm(dim=1))
        stuck = best_obj >= old  # no candidate lowers the objective: optimal to rounding
        done = act & (small | stuck)
        theta[:, :, cols] = new_theta
        obj[:, cols] = torch.where(act, best_obj, old)
        its[:, cols] += act.long()
        conv[:, cols] |= done
        active[:, cols] = act & ~done
    return theta, obj, its, conv


def _l1_polish(phi: Tensor, y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Vertex through the K smallest residuals, and its LP optimality certificate.

    An L1 minimiser interpolates K points (a basis B).  With :math:`s_i = \mathrm{sign}(r_i)`
    off B, the vertex is optimal iff :math:`\Phi_B^\top u = -\sum_{i \notin B} s_i \phi_i` has
    :math:`\|u\|_\infty \le 1` (the dual of the LP).  Returns (theta, objective, certified).
    """
    seeds, n, k = phi.shape
    m = y.shape[-1]
    r = torch.baddbmm(y, phi, theta, alpha=-1.0)
    sel = r.abs().topk(k, dim=1, largest=False).indices  # (seeds, K, M)
    phi_b = torch.gather(phi[:, None, :, :].expand(seeds, m, n, k), 2,
                         sel.mT[..., None].expand(-1, -1, -1, k))  # (seeds, M, K, K)
    y_b = torch.gather(y, 1, sel).mT[..., None]  # (seeds, M, K, 1)
    pol, info = torch.linalg.solve_ex(phi_b, y_b)
    pol = pol[..., 0].mT
    ok = (info == 0) & torch.isfinite(pol).all(1)
    pol = torch.where(ok[:, None, :], pol, theta)
    rp = torch.baddbmm(y, phi, pol, alpha=-1.0)
    obj = rp.abs().mean(1)
    sgn = torch.sign(rp).scatter_(1, sel, 0.0)
    g = phi.mT @ sgn  # (seeds, K, M)
    u, info_u = torch.linalg.solve_ex(phi_b.mT, -g.mT[..., None])
    cert = ok & (info_u == 0) & (u[..., 0].abs().amax(-1) <= 1.0 + 1e-9)
    return pol, obj, cert


def _l1_irls(phi: Tensor, quad: Tensor, y: Tensor, iterations: int
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Least absolute deviations: IRLS with weights :math:`1/\\max(|r|, \\eta_t)`, finished exactly.

    :math:`\\eta_t` starts at the median absolute least-squares residual and shrinks by 0.7 per
    iteration down to :math:`10^{-10}` of it.  From iteration 30 on, every 10 iterations the
    vertex through the K smallest residuals is tried and kept when the LP optimality
    certificate holds (:func:`_l1_polish`); ``converged`` means certified optimal.  Uncertified
    fits end with the IRLS iterate or the vertex, whichever has the lower objective.
    """
    seeds, n, k = phi.shape
    iu = torch.triu_indices(k, k, device=phi.device)
    theta = torch.linalg.solve(phi.mT @ phi, phi.mT @ y)
    r = torch.baddbmm(y, phi, theta, alpha=-1.0)
    eta0 = r.abs().median(dim=1).values  # (seeds, M)
    done = torch.zeros_like(eta0, dtype=torch.bool)
    its = torch.zeros_like(eta0, dtype=torch.long)
    for t in range(iterations):
        eta = (eta0 * max(0.7**t, 1e-10))[:, None, :]
        w = 1.0 / r.abs().clamp_min(eta)
        hq = torch.bmm(w.mT, quad)
        h = torch.zeros(seeds, y.shape[-1], k, k, dtype=phi.dtype, device=phi.device)
        h[:, :, iu[0], iu[1]] = hq
        h[:, :, iu[1], iu[0]] = hq
        rhs = (phi.mT @ (w * y)).mT[..., None]
        new, info = torch.linalg.solve_ex(h, rhs)
        new = new[..., 0].mT
        ok = (info == 0)[:, None, :] & torch.isfinite(new).all(1, keepdim=True) & ~done[:, None, :]
        theta = torch.where(ok, new, theta)
        its += (~done).long()
        if (t >= 30 and t % 10 == 0) or t == iterations - 1:
            pol, _, cert = _l1_polish(phi, y, theta)
            theta = torch.where((cert & ~done)[:, None, :], pol, theta)
            done |= cert
            if bool(done.all()):
                break
        r = torch.baddbmm(y, phi, theta, alpha=-1.0)
    obj = torch.baddbmm(y, phi, theta, alpha=-1.0).abs().mean(1)
    pol, obj_p, _ = _l1_polish(phi, y, theta)  # uncertified: keep the vertex if it is lower
    take = ~done & (obj_p < obj)
    theta = torch.where(take[:, None, :], pol, theta)
    return theta, torch.where(take, obj_p, obj), its, done


def _lad_linprog(phi: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    r"""Least absolute deviations by linear programming (HiGHS), or None if it fails.

    Solves the dual :math:`\max_u y^\top u` subject to :math:`\Phi^\top u = 0`,
    :math:`-1 \le u \le 1` (K equality rows, so it is fast); the coefficients are minus the
    multipliers of the equality constraints.
    """
    from scipy.optimize import linprog

    res = linprog(-y, A_eq=phi.T, b_eq=np.zeros(phi.shape[1]), bounds=(-1.0, 1.0),
                  method="highs-ipm")
    if res.status != 0 or res.eqlin is None:
        return None
    return -np.asarray(res.eqlin.marginals, dtype=np.float64)


def _finish_lad(phi: Tensor, y: Tensor, theta: Tensor, obj: Tensor, done: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Solve the LAD fits that IRLS left uncertified by linear programming (exact optimum)."""
    from concurrent.futures import ThreadPoolExecutor

    todo = (~done).nonzero().tolist()
    phi_np, y_np = phi.cpu().numpy(), y.cpu().numpy()
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # HiGHS releases the GIL
        sols = list(pool.map(lambda t: _lad_linprog(phi_np[t[0]], y_np[t[0], :, t[1]]), todo))
    for (se, mi), sol in zip(todo, sols):
        if sol is None:
            continue
        th = torch.as_tensor(sol, dtype=theta.dtype, device=theta.device)
        ob = (y[se, :, mi] - phi[se] @ th).abs().mean()
        if ob <= obj[se, mi] * (1 + 1e-12):
            theta[se, :, mi], obj[se, mi] = th, ob
        done[se, mi] = True
    return theta, obj, done


def exact_grid(
    data: ToyData,
    alphas: Sequence[float] = (1.0,),
    *,
    loss: str = "huber",
    tol: float = 1e-9,
    max_iter: int = 100,
    device: str | torch.device = "cpu",
    max_elements: int | None = None,
    l1_iterations: int = 300,
    progress: bool = True,
) -> ExactResult:
    r"""Exact minimiser of the mean loss for every (family, scale, seed, alpha), in float64.

    Batched over (family, scale, seed); the alphas are swept from the largest to the smallest,
    each solve starting from the previous solution (continuation; the first from least
    squares).  Each iteration takes the Newton step (Hessian :math:`\Phi^\top
    \mathrm{diag}(\psi'(r))\Phi / N`) where it lowers the objective, else the best of the half
    Newton step and the IRLS / MM step (weights :math:`\psi(r)/r`, never an increase).  It stops
    when the step is below ``tol`` relative to :math:`1 + \|\theta\|` or no candidate lowers the
    objective.  ``l2`` is solved in closed form, ``l1`` by at most ``l1_iterations`` of IRLS
    finished by an LP-certified vertex (``_l1_irls``), and the fits it leaves uncertified by
    linear programming with HiGHS (alphas are ignored for both).
    """
    if progress:  # the notebook-aware bar only when one is shown (no widget warnings)
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    _check_loss(loss)
    alphas = _check_positive_grid(alphas, "alphas")
    max_iter = _check_positive_int(max_iter, "max_iter")
    _check_finite_at_least(tol, "tol", 0.0)
    device = torch.device(device)
    if loss in ("l1", "l2"):
        alphas = alphas[:1]
    nf, ns, nseed, na, k, n = (len(data.families), len(data.scales), len(data.seeds), len(alphas),
                               data.k, data.n)
    if max_elements is None:
        max_elements = _default_max_elements(device, torch.float64, 16, 6_000_000)
    phi = data.phi.to(device)
    iu = torch.triu_indices(k, k)
    quad = (phi[..., iu[0].to(device)] * phi[..., iu[1].to(device)]).contiguous()
    pairs = nf * ns
    block = max(1, max_elements // (nseed * n))
    y_all = data.y.reshape(pairs, nseed, n)
    theta_out = torch.zeros(pairs, nseed, na, k, dtype=torch.float64)
    obj_out = torch.zeros(pairs, nseed, na, dtype=torch.float64)
    its_out = torch.zeros(pairs, nseed, na, dtype=torch.long)
    conv_out = torch.zeros(pairs, nseed, na, dtype=torch.bool)
    order = np.argsort(-alphas, kind="stable")
    t0 = time.perf_counter()
    tasks = _chunks(pairs, block)
    bar = tqdm(total=len(tasks) * na, desc=f"exact {loss}", disable=not progress, leave=False)
    for p0, p1 in tasks:
        y = y_all[p0:p1].permute(1, 2, 0).to(device).contiguous()  # (seeds, N, pairs)
        theta = None
        if loss == "l1":
            theta, ob, it, cv = _l1_irls(phi, quad, y, l1_iterations)
            theta, ob, cv = _finish_lad(phi, y, theta, ob, cv)
            theta_out[p0:p1, :, 0] = theta.permute(2, 0, 1).cpu()
            obj_out[p0:p1, :, 0] = ob.mT.cpu()
            its_out[p0:p1, :, 0] = it.mT.cpu()
            conv_out[p0:p1, :, 0] = cv.mT.cpu()
            bar.update(1)
            continue
        for ai in order:
            a_vec = torch.full((p1 - p0,), float(alphas[ai]), dtype=torch.float64, device=device)
            theta, ob, it, cv = _exact_block(phi, quad, y, a_vec, loss, tol, max_iter, theta)
            theta_out[p0:p1, :, ai] = theta.permute(2, 0, 1).cpu()
            obj_out[p0:p1, :, ai] = ob.mT.cpu()
            its_out[p0:p1, :, ai] = it.mT.cpu()
            conv_out[p0:p1, :, ai] = cv.mT.cpu()
            bar.update(1)
    bar.close()
    wall = time.perf_counter() - t0
    shape = (nf, ns, nseed, na)
    theta = theta_out.reshape(*shape, k)
    rmse = _test_rmse(theta, data, seed_dim=2).numpy()
    obj = obj_out.reshape(shape).numpy()
    rmse = np.where(np.isfinite(obj), rmse, np.nan)
    return ExactResult(loss, alphas, rmse, obj, theta.numpy(), its_out.reshape(shape).numpy(),
                       conv_out.reshape(shape).numpy(), wall)
