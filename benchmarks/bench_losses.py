"""Speed of the loss family: forward + backward of the mean loss.

Times, in the same run and on the same data, ``F.smooth_l1_loss`` (the reference of every
ratio), ``F.huber_loss``, a naive autograd version of eq. 16, ``kl_huber_loss`` with the default
implementation (custom autograd Function) and with ``impl="compiled"`` (torch.compile), and
prints the median of ``--repeats`` runs after warm-up with the ratio to ``F.smooth_l1_loss``.

Targets (issue 4): default <= 3x and compiled <= 1.5x ``F.smooth_l1_loss`` on CPU.

    python benchmarks/bench_losses.py                # 10^7 float32 elements, CPU (+ CUDA)
    python benchmarks/bench_losses.py --size 100000  # quick run
    python benchmarks/bench_losses.py --json bench_losses.json  # also write the rows as JSON
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from klhuber.losses import kl_huber_loss


def naive_kl_huber_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 1.0,
                        beta: float = 1.0) -> torch.Tensor:
    """Eq. 16 written directly, differentiated by autograd (inaccurate for small |x|/alpha)."""
    a = (input - target).abs()
    return ((alpha * torch.exp(-a / alpha) + a - alpha) / beta).mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 input: torch.Tensor, target: torch.Tensor, repeats: int,
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


def saved_bytes(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                input: torch.Tensor, target: torch.Tensor) -> int | None:
    """Bytes of the tensors saved for backward that are new allocations (not the inputs), as
    seen by ``saved_tensors_hooks``; None when nothing is visible (compiled graphs)."""
    seen: dict[int, int] = {}
    inputs = {input.untyped_storage().data_ptr(), target.untyped_storage().data_ptr()}
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        ptr = t.untyped_storage().data_ptr()
        if ptr not in inputs:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(input, target)
    loss.backward()
    input.grad = None
    return sum(seen.values()) if count else None


def bench(device: torch.device, size: int, repeats: int, warmup: int, compiled: bool,
          interleave: bool = True) -> list[tuple[str, float]]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    input = torch.randn(size, generator=gen).to(device).requires_grad_()
    target = torch.randn(size, generator=gen).to(device)
    cases: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "F.smooth_l1_loss": lambda i, t: F.smooth_l1_loss(i, t),
        "F.huber_loss": lambda i, t: F.huber_loss(i, t),
        "naive autograd eq. 16": naive_kl_huber_loss,
        "kl_huber_loss (default)": lambda i, t: kl_huber_loss(i, t),
    }
    if compiled:
        cases["kl_huber_loss (impl='compiled')"] = lambda i, t: kl_huber_loss(i, t,
                                                                              impl="compiled")
    for fn in cases.values():  # warm-up (and compilation) outside the timed runs
        time_fwd_bwd(fn, input, target, repeats=0, warmup=warmup)
    memory = {name: saved_bytes(fn, input, target) for name, fn in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    rounds = repeats if interleave else 1
    per_round = 1 if interleave else repeats
    for _ in range(rounds):  # interleaved, so that load from other processes hits all alike
        for name, fn in cases.items():
            samples[name] += time_fwd_bwd(fn, input, target, repeats=per_round, warmup=0)
    return [(name, statistics.median(ts), memory[name]) for name, ts in samples.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="number of float32 elements")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per case (>= 7)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--no-compile", action="store_true", help="skip impl='compiled'")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the rows as a results JSON (with provenance)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"size {args.size:,} float32, median of {args.repeats} runs (forward + backward)")
    report: dict[str, dict] = {}
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"\n{device.type} ({name})")
        rows = bench(device, args.size, args.repeats, args.warmup, not args.no_compile)
        reference = rows[0][1]
        print(f"{'case':34s} {'median ms':>10s} {'vs smooth_l1':>13s} "
              f"{'new saved for backward':>23s}")
        for case, t, mem in rows:
            saved = "n/a (compiled graph)" if mem is None else \
                f"{mem / (4 * args.size):.2f} x input"
            print(f"{case:34s} {t * 1e3:10.2f} {t / reference:12.2f}x {saved:>23s}")
        report[device.type] = {"name": name, "rows": [
            {"case": case, "median_s": t, "ratio_to_smooth_l1": t / reference,
             "saved_for_backward_bytes": mem} for case, t, mem in rows]}
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
