"""Speed of the toy-problem solvers (issue 14): batched GD against per-configuration loops.

Everything is measured in one run on the same subset of configurations (the paper's N = 10,000
points, K = 8), and printed as ratios:

1. batched GD (:func:`klhuber.toy.gd_grid`) with each backend -- ``kernel`` (fused float32 C++
   CPU kernel) and ``torch`` (one ``baddbmm`` per row block for all configurations) -- with
   early retirement switched off (``retire_tol=0``), so every configuration runs every
   iteration as in the loops, versus (a) a per-configuration Python loop with the same update
   (:func:`klhuber.toy.gd_reference_loop`) and (b) the loop a straightforward reproduction would
   write: autograd of :func:`klhuber.losses.huber` and ``torch.optim.SGD``.  The loops are timed
   on a few configurations and scaled to the whole subset.  Then the default ``gd_grid`` (kernel,
   retirement on) on the same grid.
2. What bounds each batched step: the torch backend's memory traffic (bytes it reads and writes
   per iteration, estimated from its tensor passes) in bytes/s against a measured copy bandwidth,
   and the kernel's arithmetic in GFLOP/s (it stores nothing of size N x configurations).
3. the exact solver (:func:`klhuber.toy.exact_grid`) versus batched GD run until it reaches the
   same tolerance (relative function-space distance to the exact minimiser <= ``--tol``).

Usage: ``python benchmarks/bench_toy.py [--device cpu|cuda] [--iterations 200] [--json PATH]``
(``--n 500 --iterations 5 --loop-configs 1 --repeats 1``: a seconds-long smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
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


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--n", type=int, default=toy.N_TRAIN,
                        help="training points (default: the paper's N; small for a smoke run)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the timings and ratios as a results JSON (with "
                        "provenance)")
    args = parser.parse_args(argv)
    dev, its = args.device, args.iterations
    started = time.perf_counter()
    torch.manual_seed(0)

    data = toy.make_data(("laplace", "cauchy"), (0.5, 2.0), (0, 1), n=args.n,
                         n_test=min(2000, args.n))
    alphas = tuple(np.geomspace(0.05, 5.0, 6).tolist())
    lrs = (1.0, 8.0, 64.0)
    n_cfg = len(data.families) * len(data.scales) * len(data.seeds) * len(alphas) * len(lrs)
    print(f"subset: {n_cfg} configurations (2 families x 2 scales x 2 seeds x {len(alphas)} alphas"
          f" x {len(lrs)} lrs), N = {data.n}, K = {data.k}, {its} iterations, device {dev}, "
          f"{torch.get_num_threads()} threads")

    # 1. batched GD vs loops ------------------------------------------------------------------
    backends = ["torch"]
    if dev == "cpu" and toy._cpu_kernel(data.k) is not None:
        backends.insert(0, "kernel")
    t_batched: dict[str, float] = {}
    results: dict[str, toy.GDResult] = {}
    for be in backends:
        kw = dict(iterations=its, device=dev, progress=False, retire_tol=0.0, backend=be,
                  max_elements=args.max_elements)
        toy.gd_grid(data, alphas, lrs, **{**kw, "iterations": 5})  # warm-up (kernel compile)
        _sync(dev)
        times = []
        for _ in range(args.repeats):  # short: median of several runs (the loops are long enough)
            t = time.perf_counter()
            results[be] = toy.gd_grid(data, alphas, lrs, **kw)
            _sync(dev)
            times.append(time.perf_counter() - t)
        t_batched[be] = statistics.median(times)
    gd = results[backends[0]]
    t = time.perf_counter()
    retired = toy.gd_grid(data, alphas, lrs, iterations=its, device=dev, progress=False,
                          max_elements=args.max_elements)
    _sync(dev)
    t_retire = time.perf_counter() - t

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
    print(f"per-config loop, same update    : {t_loop:8.2f} s (extrapolated from "
          f"{len(picks)} configurations)")
    print(f"per-config loop, autograd + SGD : {t_auto:8.2f} s")
    for be in backends:
        tb = t_batched[be]
        print(f"batched GD, backend {be:7s}     : {tb:8.3f} s (median of {args.repeats}, no "
              f"retirement)  {t_loop / tb:7.1f}x the same-update loop, {t_auto / tb:7.1f}x "
              f"autograd + SGD")
    print(f"batched GD, default (retirement): {t_retire:8.3f} s  {t_loop / t_retire:7.1f}x the "
          f"same-update loop, {t_auto / t_retire:7.1f}x autograd + SGD; status counts "
          f"{np.bincount(retired.status.ravel(), minlength=3).tolist()} (ran/converged/diverged)"
          f", mean stop iteration {retired.stop_iteration.mean():.0f}")
    print(f"batched ({backends[0]}) vs loop max relative coefficient difference (float32): "
          f"{max_dev:.1e}")
    report: dict = {
        "benchmark": "bench_toy", "args": vars(args), "configurations": n_cfg, "n": data.n,
        "k": data.k, "torch_threads": torch.get_num_threads(),
        "loop_same_update_s": t_loop, "loop_autograd_sgd_s": t_auto,
        "batched_no_retirement_s": t_batched,
        "speedup_vs_same_update_loop": {be: t_loop / tb for be, tb in t_batched.items()},
        "speedup_vs_autograd_sgd": {be: t_auto / tb for be, tb in t_batched.items()},
        "batched_default_s": t_retire,
        "default_status_counts": np.bincount(retired.status.ravel(), minlength=3).tolist(),
        "batched_vs_loop_max_rel_diff": max_dev,
    }

    # what bounds the batched step --------------------------------------------------------------
    n, k, m = data.n, data.k, n_cfg
    pci = float(m) * n * its  # (point, configuration, iteration) triples
    if dev == "cpu":
        big = torch.empty(64 * 2**20 // 4, dtype=torch.float32).normal_()
        dst = torch.empty_like(big)
        dst.copy_(big)
        t = time.perf_counter()
        for _ in range(5):
            dst.copy_(big)
        copy_bw = 5 * 2 * big.numel() * 4 / (time.perf_counter() - t)  # read + write
        print(f"measured copy bandwidth (64 MiB, read + write): {copy_bw / 1e9:6.1f} GB/s")
        report["copy_bandwidth_gb_s"] = copy_bw / 1e9
    else:
        copy_bw = None
    if "torch" in t_batched:
        # per iteration and configuration-row: gather writes r, baddbmm reads y and writes r,
        # psi reads and writes r, the second baddbmm reads r: 6 float32 accesses
        traffic = 6 * 4 * pci
        bw = traffic / t_batched["torch"]
        report["torch_backend_traffic_gb_s"] = bw / 1e9
        line = f"torch backend: {bw / 1e9:6.1f} GB/s of tensor traffic ({traffic / 1e9:.1f} GB)"
        if copy_bw:
            frac = bw / copy_bw
            line += (f" = {frac:.0%} of the copy bandwidth: "
                     + ("memory-bandwidth bound" if frac > 0.5 else
                        "below the bandwidth (its blocks stay in cache; op overhead dominates)"))
        print(line)
    if "kernel" in t_batched:
        flops = (4 * k + 4) * pci  # residual and gradient: 2K multiply-adds, psi and the rest
        tk = t_batched["kernel"]
        stream = (k + 1) * 4 * n * its * -(-m // 8) / tk  # phi and y rows, once per 8 configs
        report["kernel_gflop_s"] = flops / tk / 1e9
        print(f"kernel backend: {flops / tk / 1e9:6.1f} GFLOP/s, {pci / tk / 1e9:5.2f} G "
              f"(point, configuration) updates/s; it streams phi and y from cache at "
              f"{stream / 1e9:5.1f} GB/s and stores nothing of size N x configurations: "
              f"compute bound, not memory bound")

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
        report.setdefault("gd_to_tolerance", []).append(
            {"iterations": budget, "seconds": elapsed, "fraction_within_tol": reached})
        t_gd_tol = elapsed
        if reached >= 0.99:
            break
        budget *= 2
    print(f"exact solver (all alphas, float64)  : {t_exact:8.2f} s, converged "
          f"{ex.converged.mean():.1%}")
    print(f"GD to tolerance {args.tol:g} ({reached:.1%} reached): {t_gd_tol:8.2f} s  "
          f"exact is {t_gd_tol / t_exact:6.1f}x faster")
    report.update(exact_s=t_exact, exact_converged_fraction=float(ex.converged.mean()),
                  gd_to_tol_s=t_gd_tol, exact_speedup_vs_gd_to_tol=t_gd_tol / t_exact)
    if args.json:
        from klhuber.results import save_results

        save_results(args.json, report, command=" ".join(["python", *sys.argv]), device=dev,
                     wall_time_s=time.perf_counter() - started)


if __name__ == "__main__":
    main()
