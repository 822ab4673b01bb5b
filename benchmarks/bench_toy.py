"""Speed of the toy-problem solvers (issue: batched GD >= 30x a per-configuration loop on CPU).

Everything is measured in one run on the same subset of configurations (the paper's N = 10,000
points, K = 8), and printed as ratios:

1. batched GD (:func:`klhuber.toy.gd_grid`, all configurations in one tensor program) versus
   (a) a per-configuration Python loop with the same hand-written update
   (:func:`klhuber.toy.gd_reference_loop`) and (b) the per-configuration loop a straightforward
   reproduction would write: autograd of :func:`klhuber.losses.huber` and ``torch.optim.SGD``.
   The loops are timed on a few configurations and scaled to the whole subset.
2. the exact solver (:func:`klhuber.toy.exact_grid`) versus batched GD run until it reaches the
   same tolerance (relative function-space distance to the exact minimiser <= ``--tol``).

Usage: ``python benchmarks/bench_toy.py [--device cpu|cuda] [--iterations 200]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from klhuber import losses, toy


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autograd_loop(data: toy.ToyData, alpha: float, lr: float, fi: int, si: int, se: int,
                  iterations: int, device: str) -> np.ndarray:
    """A typical per-configuration reproduction: autograd + torch.optim.SGD on the mean loss."""
    phi = data.phi[se].to(device=device, dtype=torch.float32)
    y = data.y[fi, si, se].to(device=device, dtype=torch.float32)
    theta = torch.zeros(data.k, device=device, requires_grad=True)
    step = lr / float(toy._lr_reference(data.phi[se]))
    opt = torch.optim.SGD([theta], lr=step)
    for _ in range(iterations):
        opt.zero_grad()
        losses.huber(y - phi @ theta, alpha).mean().backward()
        opt.step()
    return theta.detach().double().cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--loop-configs", type=int, default=4,
                        help="configurations timed in the per-configuration loops")
    parser.add_argument("--tol", type=float, default=1e-2,
                        help="relative function distance to the exact minimiser (float32 GD "
                        "floors near 1e-3 for the smallest noise)")
    parser.add_argument("--max-elements", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of batched GD")
    args = parser.parse_args()
    dev, its = args.device, args.iterations
    torch.manual_seed(0)

    data = toy.make_data(("laplace", "cauchy"), (0.5, 2.0), (0, 1), n=toy.N_TRAIN, n_test=2000)
    alphas = tuple(np.geomspace(0.05, 5.0, 6).tolist())
    lrs = (1.0, 8.0, 64.0)
    n_cfg = len(data.families) * len(data.scales) * len(data.seeds) * len(alphas) * len(lrs)
    print(f"subset: {n_cfg} configurations (2 families x 2 scales x 2 seeds x {len(alphas)} alphas"
          f" x {len(lrs)} lrs), N = {data.n}, K = {data.k}, {its} iterations, device {dev}, "
          f"{torch.get_num_threads()} threads")

    # 1. batched GD vs loops ------------------------------------------------------------------
    toy.gd_grid(data, alphas, lrs, iterations=5, device=dev, progress=False)  # warm-up
    _sync(dev)
    batched_times = []
    for _ in range(args.repeats):  # short: median of several runs (the loops are long enough)
        t = time.perf_counter()
        gd = toy.gd_grid(data, alphas, lrs, iterations=its, device=dev, progress=False,
                         max_elements=args.max_elements)
        _sync(dev)
        batched_times.append(time.perf_counter() - t)
    t_batched = statistics.median(batched_times)

    picks = [(fi, si, se, ai, li) for fi in range(2) for si in range(2) for se in range(2)
             for ai in range(len(alphas)) for li in range(len(lrs))]
    rng = np.random.default_rng(0)
    picks = [picks[i] for i in rng.choice(len(picks), args.loop_configs, replace=False)]
    t = time.perf_counter()
    max_dev = 0.0
    for fi, si, se, ai, li in picks:
        th = toy.gd_reference_loop(data, alphas[ai], lrs[li], family_index=fi, scale_index=si,
                                   seed_index=se, iterations=its)
        if not gd.diverged[fi, si, se, ai, li]:
            ref = gd.theta[fi, si, se, ai, li]
            max_dev = max(max_dev, float(np.abs(th - ref).max() / (1 + np.abs(ref).max())))
    t_loop = (time.perf_counter() - t) / len(picks) * n_cfg
    t = time.perf_counter()
    for fi, si, se, ai, li in picks:
        autograd_loop(data, alphas[ai], lrs[li], fi, si, se, its, dev)
    _sync(dev)
    t_auto = (time.perf_counter() - t) / len(picks) * n_cfg
    print(f"batched GD                      : {t_batched:8.2f} s (median of {args.repeats})")
    print(f"per-config loop, same update    : {t_loop:8.2f} s (extrapolated from "
          f"{len(picks)} configurations)  speed-up {t_loop / t_batched:6.1f}x")
    print(f"per-config loop, autograd + SGD : {t_auto:8.2f} s  speed-up {t_auto / t_batched:6.1f}x")
    print(f"batched vs loop max relative coefficient difference (float32): {max_dev:.1e}")

    # 2. exact vs GD to the same tolerance -------------------------------------------------------
    t = time.perf_counter()
    ex = toy.exact_grid(data, alphas, device=dev, progress=False)
    _sync(dev)
    t_exact = time.perf_counter() - t
    budget, t_gd_tol, reached = its, None, 0.0
    while budget <= 16 * its:
        t = time.perf_counter()
        g = toy.gd_grid(data, alphas, lrs, iterations=budget, device=dev, progress=False,
                        max_elements=args.max_elements)
        _sync(dev)
        elapsed = time.perf_counter() - t
        rmse, idx = g.best_over_lr()
        th = np.take_along_axis(g.theta, idx[..., None, None], axis=4)[..., 0, :]
        d = torch.as_tensor(th - ex.theta)
        gram = data.gram_test.reshape(1, 1, -1, 1, data.k, data.k)
        dist = torch.einsum("...i,...ij,...j->...", d, gram, d).sqrt().numpy() / ex.rmse
        reached = float(np.mean(dist <= args.tol))
        print(f"  GD {budget:6d} iterations: {elapsed:7.2f} s, {reached:6.1%} of (config, alpha)"
              f" within {args.tol:g} of the exact minimiser")
        t_gd_tol = elapsed
        if reached >= 0.99:
            break
        budget *= 2
    print(f"exact solver (all alphas, float64)  : {t_exact:8.2f} s, converged "
          f"{ex.converged.mean():.1%}")
    print(f"GD to tolerance {args.tol:g} ({reached:.1%} reached): {t_gd_tol:8.2f} s  "
          f"exact is {t_gd_tol / t_exact:6.1f}x faster")


if __name__ == "__main__":
    main()
