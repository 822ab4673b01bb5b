"""Speed of the loss family: forward + backward of the mean loss, as ratios to Smooth L1.

Times, in the same run and on the same data, ``F.smooth_l1_loss`` (the reference of every
ratio), ``F.huber_loss``, a naive autograd version of eq. 16 and ``kl_huber_loss`` with the
default call, ``impl="fused"``, ``impl="compiled"`` and ``impl="autograd"``, and prints the
median of interleaved runs after warm-up with the ratio to ``F.smooth_l1_loss``.  Sizes:
512 x 4 elements (one image's box targets in a detector, timed on one thread) and 10^7.

Then a detector-sized sequence of varying shapes ((n, 4), n drawn anew every step, as the
number of positive boxes changes), with the total time per path and the number of
compilations it caused, and the compilations over 50 distinct shapes.

Targets (issue 19), ratios to ``F.smooth_l1_loss`` in the same run: the default call
<= 2x at 512 x 4 and at 10^7 elements; the fused path (``impl="fused"``) <= 1.3x at both.
On CUDA (when present) the same rows plus kernel launches per call (profiler).

    python benchmarks/bench_losses.py                     # both sizes, CPU (+ CUDA)
    python benchmarks/bench_losses.py --sizes 2048        # the small size only
    python benchmarks/bench_losses.py --json bench_losses.json  # also write the rows as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from klhuber import _fused
from klhuber.losses import kl_huber_loss

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SMALL = 100_000  # below this many elements: many repeats, --small-threads threads


def naive_kl_huber_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 1.0,
                        beta: float = 1.0) -> torch.Tensor:
    """Eq. 16 written directly, differentiated by autograd (inaccurate for small |x|/alpha)."""
    a = (input - target).abs()
    return ((alpha * torch.exp(-a / alpha) + a - alpha) / beta).mean()


def cases(compiled: bool) -> dict[str, Loss]:
    out: dict[str, Loss] = {
        "F.smooth_l1_loss": lambda i, t: F.smooth_l1_loss(i, t),
        "F.huber_loss": lambda i, t: F.huber_loss(i, t),
        "naive autograd eq. 16": naive_kl_huber_loss,
        "kl_huber_loss (default)": lambda i, t: kl_huber_loss(i, t),
        "kl_huber_loss (impl='fused')": lambda i, t: kl_huber_loss(i, t, impl="fused"),
        "kl_huber_loss (impl='autograd')": lambda i, t: kl_huber_loss(i, t, impl="autograd"),
    }
    if compiled:
        out["kl_huber_loss (impl='compiled')"] = lambda i, t: kl_huber_loss(i, t,
                                                                            impl="compiled")
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_fwd_bwd(loss_fn: Loss, input: torch.Tensor, target: torch.Tensor, repeats: int,
                 warmup: int) -> list[float]:
    """Seconds per forward + backward of ``loss_fn(input, target)`` (a scalar)."""
    times = []
    for i in range(warmup + repeats):
        input.grad = None
        _sync(input.device)
        start = time.perf_counter()
        loss = loss_fn(input, target)
        loss.backward()
        _sync(input.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def kernel_launches(loss_fn: Loss, input: torch.Tensor, target: torch.Tensor) -> int | None:
    """CUDA kernels launched by one forward + backward (torch.profiler), None on the CPU."""
    if input.device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    input.grad = None
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        loss_fn(input, target).backward()
        _sync(input.device)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def bench(device: torch.device, size: int, repeats: int, warmup: int,
          compiled: bool) -> list[tuple[str, float, int | None]]:
    """(case, median seconds, kernel launches) per case, interleaved: each round runs every
    case ``per_round`` times, so that load from other processes hits all alike."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (size // 4, 4) if size % 4 == 0 else (size,)
    input = torch.randn(shape, generator=gen).to(device).requires_grad_()
    target = torch.randn(shape, generator=gen).to(device)
    fns = cases(compiled)
    if size > SMALL:
        fns.pop("kl_huber_loss (impl='autograd')")  # the reference only matters when small
    for fn in fns.values():  # warm-up (and compilation) outside the timed runs
        time_fwd_bwd(fn, input, target, repeats=0, warmup=warmup)
    launches = {name: kernel_launches(fn, input, target) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    per_round = 10 if size <= SMALL else 1
    for _ in range(max(1, repeats // per_round)):
        for name, fn in fns.items():
            samples[name] += time_fwd_bwd(fn, input, target, repeats=per_round, warmup=0)
    return [(name, statistics.median(ts), launches[name]) for name, ts in samples.items()]


def detector_sequence(device: torch.device, steps: int, compiled: bool, rounds: int = 7,
                      seed: int = 0) -> list[tuple[str, float, int]]:
    """Seconds per forward + backward over ``steps`` shapes (n, 4), n uniform in [16, 1024]
    (the positives of a batch), and the compilations each path caused on its first pass.

    The first pass runs each path over the whole sequence (counting compilations; a path
    not called before in the process compiles here).  The timed passes are interleaved:
    every shape runs every path once (in rotated order), ``rounds`` times, and each path's
    time is the sum over the shapes of its median per shape."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ns = torch.randint(16, 1025, (steps,), generator=gen).tolist()
    data = [(torch.randn(n, 4, generator=gen).to(device).requires_grad_(),
             torch.randn(n, 4, generator=gen).to(device)) for n in ns]
    fns = {k: v for k, v in cases(compiled).items()
           if k.startswith(("F.smooth", "kl_huber_loss (default", "kl_huber_loss (impl='f",
                            "kl_huber_loss (impl='c"))}
    compilations = {}
    for name, fn in fns.items():
        before = _fused.compilations()
        for x, t in data:
            x.grad = None
            fn(x, t).backward()
        compilations[name] = _fused.compilations() - before
    per_shape: dict[str, list[list[float]]] = {name: [[] for _ in data] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for k, (x, t) in enumerate(data):
            start = (k + r) % len(names)  # rotated: no path always runs first on a shape
            for name in names[start:] + names[:start]:
                per_shape[name][k] += time_fwd_bwd(fns[name], x, t, repeats=1, warmup=0)
    return [(name, sum(statistics.median(ts) for ts in per_shape[name]), compilations[name])
            for name in fns]


def compilations_over_shapes(device: torch.device, impl: str, shapes: int = 50) -> int:
    """Compilations caused by ``shapes`` distinct shapes (n, 4) on a path (after one warm-up
    call at another shape, so that a cold start does not count)."""
    x = torch.randn(3, 4, device=device, requires_grad=True)
    kl_huber_loss(x, torch.zeros_like(x), impl=impl).backward()
    before = _fused.compilations()
    for n in range(5, 5 + 7 * shapes, 7):
        x = torch.randn(n, 4, device=device, requires_grad=True)
        kl_huber_loss(x, torch.zeros_like(x), impl=impl).backward()
    return _fused.compilations() - before


def _targets(rows: list[tuple[str, float, int | None]], reference: float) -> str:
    got = {case: t / reference for case, t, _ in rows}
    parts = []
    for case, limit in (("kl_huber_loss (default)", 2.0), ("kl_huber_loss (impl='fused')", 1.3)):
        if case in got:
            verdict = "ok" if got[case] <= limit else "MISSED"
            parts.append(f"{case} {got[case]:.2f}x <= {limit}x: {verdict}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2048,10000000",
                        help="comma-separated numbers of float32 elements")
    parser.add_argument("--size", type=int, default=None, help="one size (overrides --sizes)")
    parser.add_argument("--repeats", type=int, default=9,
                        help="timed runs per case at large sizes (>= 7)")
    parser.add_argument("--small-repeats", type=int, default=1000,
                        help=f"timed runs per case below {SMALL:,} elements")
    parser.add_argument("--small-threads", type=int, default=1,
                        help=f"torch threads below {SMALL:,} elements (0: unchanged)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200,
                        help="shapes in the detector-sized sequence (0 skips it)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--no-compile", action="store_true", help="skip impl='compiled'")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the rows as a results JSON (with provenance)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [args.size] if args.size else [int(s) for s in args.sizes.split(",") if s]
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    kernel = "C++ kernel" if _fused.cpu_kernel() is not None else "no C++ kernel"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads "
          f"({args.small_threads or torch.get_num_threads()} below {SMALL:,} elements), "
          f"{kernel}; forward + backward of the mean, float32")
    report: dict[str, dict] = {}
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        dev_report: dict[str, object] = {"name": name, "sizes": {}}
        for size in sizes:
            small = size <= SMALL
            repeats = args.small_repeats if small else args.repeats
            n_threads = args.small_threads if (small and device.type == "cpu") else None
            print(f"\n{device.type} ({name}), {size:,} elements, median of {repeats} runs"
                  + (f", {torch.get_num_threads() if not n_threads else n_threads} thread(s)"
                     if device.type == "cpu" else ""))
            with threads(n_threads):
                rows = bench(device, size, repeats, args.warmup, not args.no_compile)
            reference = rows[0][1]
            unit, scale = ("us", 1e6) if small else ("ms", 1e3)
            print(f"{'case':34s} {'median ' + unit:>11s} {'vs smooth_l1':>13s}"
                  + (f" {'kernel launches':>16s}" if device.type == "cuda" else ""))
            for case, t, launches in rows:
                print(f"{case:34s} {t * scale:11.2f} {t / reference:12.2f}x"
                      + (f" {launches:16d}" if launches is not None else ""))
            print("targets:", _targets(rows, reference))
            dev_report["sizes"][str(size)] = [
                {"case": case, "median_s": t, "ratio_to_smooth_l1": t / reference,
                 "kernel_launches": launches} for case, t, launches in rows]
            dev_report.setdefault("rows", dev_report["sizes"][str(size)])  # the first size
        if args.steps:
            with threads(args.small_threads if device.type == "cpu" else None):
                seq = detector_sequence(device, args.steps, not args.no_compile)
            print(f"\ndetector-sized sequence: {args.steps} shapes (n, 4), n in [16, 1024], "
                  "interleaved, sum of the median per shape")
            ref = seq[0][1]
            print(f"{'case':34s} {'total ms':>9s} {'us/call':>8s} {'vs smooth_l1':>13s} "
                  f"{'compilations':>13s}")
            for case, t, comp in seq:
                print(f"{case:34s} {t * 1e3:9.1f} {t / args.steps * 1e6:8.1f} "
                      f"{t / ref:12.2f}x {comp:13d}")
            dev_report["sequence"] = [{"case": c, "total_s": t, "compilations": k}
                                      for c, t, k in seq]
            counts = {impl: compilations_over_shapes(device, impl)
                      for impl in ("default", "fused")
                      + (() if args.no_compile else ("compiled",))}
            print("compilations over 50 distinct shapes (after one warm-up call): "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))
            dev_report["compilations_over_50_shapes"] = counts
        report[device.type] = dev_report
    print(f"\ncompilations in this run: {_fused.compilations()} "
          f"(C++ kernel builds and torch.compile graphs)")
    if args.json:
        from klhuber.results import save_results

        save_results(args.json, {"benchmark": "bench_losses", "args": vars(args),
                                 "torch_threads": torch.get_num_threads(), "devices": report},
                     command=" ".join(["python", *sys.argv]),
                     device="cuda" if "cuda" in report else "cpu",
                     wall_time_s=time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
