"""Speed of klhuber's RoIAlign backward pass against torchvision's, on the CPU.

Two measurements, each interleaved round-robin in one run so that load on a shared machine hits
both sides alike, reported as the ratio torchvision time / klhuber time (> 1: klhuber faster):

* the op: ``roi_align`` forward + backward at the ``cpu`` profile's sizes (16 images, 64 FPN
  channels of 16 x 16, 64 RoIs per image, 7 x 7 bins, sampling ratio 2);
* a whole Faster R-CNN training step of the ``cpu`` profile's model (``convnet4_fpn``, batch 16
  of 64 px): :func:`klhuber.detection.build_model`'s pooler against the same model with
  torchvision's ``MultiScaleRoIAlign`` put back.

Target: the training step >= 1.3x (the backward pass was about half of torchvision's step).

    python benchmarks/bench_roi_align.py               # 1 thread, as the grid's runs
    python benchmarks/bench_roi_align.py --threads 2 --repeats 10
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detection import batch  # noqa: E402

from klhuber.detection import roi_align as ra  # noqa: E402
from klhuber.detection.engine import TrainConfig, build_detector  # noqa: E402
from klhuber.detection.experiments import get_profile  # noqa: E402


def interleaved(functions: dict[str, callable], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of each function, timed round-robin."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for i in range(warmup + repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def op_functions() -> dict[str, callable]:
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(16, 64, 16, 16, generator=gen, requires_grad=True)
    k = 16 * 64
    index = torch.randint(0, 16, (k,), generator=gen).float()
    corner = torch.rand(k, 2, generator=gen) * 48
    size = 4 + torch.rand(k, 2, generator=gen) * 28
    rois = torch.cat([index[:, None], corner, corner + size], 1)
    grad = torch.randn(k, 64, 7, 7, generator=gen)

    def run(fn):
        def step():
            out = fn(features, rois, (7, 7), 0.25, 2)
            torch.autograd.grad(out, features, grad)
        return step

    return {"torchvision": run(torchvision.ops.roi_align), "klhuber": run(ra.roi_align)}


def step_functions() -> dict[str, callable]:
    # the cpu profile's Faster R-CNN settings (klhuber.detection.experiments, profile "cpu")
    kwargs = dict(get_profile("cpu").train["fasterrcnn"]["model_kwargs"])
    torch.manual_seed(0)
    cfg = TrainConfig(arch="fasterrcnn", backbone="convnet4_fpn", min_size=64, max_size=64,
                      box_loss="implementation", device="cpu", model_kwargs=kwargs)
    ours = build_detector(cfg, 6).train()
    assert type(ours.roi_heads.box_roi_pool) is ra.MultiScaleRoIAlign
    stock = copy.deepcopy(ours)
    stock.roi_heads.box_roi_pool.__class__ = TorchvisionMultiScaleRoIAlign
    images, targets = batch(64, 16, torch.device("cpu"))

    def run(model):
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step():
            torch.manual_seed(0)
            loss = sum(model(list(images), [dict(t) for t in targets]).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    return {"torchvision": run(stock), "klhuber": run(ours)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", type=float, default=1.3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    ok = True
    for what, functions, target in (("roi_align forward + backward", op_functions(), 1.0),
                                    ("Faster R-CNN training step (cpu profile)",
                                     step_functions(), args.target)):
        med = interleaved(functions, args.repeats, args.warmup)
        ratio = med["torchvision"] / med["klhuber"]
        ok &= ratio >= target
        print(f"{what}, {args.threads} thread(s): torchvision {med['torchvision'] * 1e3:.1f} ms,"
              f" klhuber {med['klhuber'] * 1e3:.1f} ms: {ratio:.2f}x "
              f"({'ok' if ratio >= target else 'BELOW TARGET'} {target:g}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
