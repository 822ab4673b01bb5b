"""Throughput of a detector training step with each box-loss preset vs stock torchvision.

For each architecture, builds one model per preset with :func:`klhuber.detection.build_model`
from the same seed, plus the *stock* torchvision model: the same layers with torchvision's own
``RegionProposalNetwork`` / ``RoIHeads`` / ``RetinaNetRegressionHead`` classes and box coders
(so the only difference is the box loss).  Times forward + backward + SGD step on the same
batch, interleaving the models round-robin so that load on a shared machine hits all of them
alike, and prints images/s (median) and the ratio to stock.  Target (issue 8): every preset
>= 0.97x stock, i.e. the loss costs nothing.

    python benchmarks/bench_detection.py              # CPU tiny config (+ CUDA if available)
    python benchmarks/bench_detection.py --repeats 10  # quicker, noisier
    python benchmarks/bench_detection.py --json bench_detection.json  # also write JSON
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from klhuber.detection.engine import TrainConfig, build_detector

PRESETS = ("torchvision", "publication", "implementation", "experiment_c", "appendix_d",
           "appendix_e")


def stock_copy(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """The same model with torchvision's own loss modules (class swap on a deep copy).

    The RoI pooler stays klhuber's (:mod:`klhuber.detection.roi_align`, torchvision's forward
    with a faster CPU backward) in both, so the ratio measures the box loss alone;
    ``bench_roi_align.py`` measures the pooler."""
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.models.detection.retinanet import RetinaNetRegressionHead
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.rpn import RegionProposalNetwork

    stock = copy.deepcopy(model)
    if arch == "fasterrcnn":
        stock.rpn.__class__ = RegionProposalNetwork
        stock.rpn.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        stock.roi_heads.__class__ = RoIHeads
        stock.roi_heads.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    else:
        head = stock.head.regression_head
        head.__class__ = RetinaNetRegressionHead
        head.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        head._loss_type = "l1"
        stock.box_coder = head.box_coder
    return stock


def batch(size: int, n: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, size, size, generator=g).to(device))
        k = 3
        xy = torch.rand(k, 2, generator=g) * size * 0.6
        wh = 8 + torch.rand(k, 2, generator=g) * size * 0.35
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
        targets.append({"boxes": boxes.to(device),
                        "labels": torch.randint(1, 4, (k,), generator=g).to(device)})
    return images, targets


#: Backbones timed by default: the quick profile's and the cpu profile's (its own anchors and
#: heads, :mod:`klhuber.detection.backbones`).
BACKBONES = ("resnet18_fpn", "convnet4_fpn")


def config(arch: str, size: int, device: str, backbone: str = "resnet18_fpn") -> TrainConfig:
    small = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 150,
             "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 32}
    if backbone == "convnet4_fpn":  # the builder's anchors and heads, as the cpu profile
        return TrainConfig(arch=arch, backbone=backbone, min_size=size, max_size=size,
                           device=device, model_kwargs=small if arch == "fasterrcnn" else {})
    return TrainConfig(arch=arch, backbone=backbone, min_size=size, max_size=size,
                       anchor_sizes=(8, 16, 32, 64, 128), device=device,
                       box_head_dim=128 if arch == "fasterrcnn" else None,
                       model_kwargs=small if arch == "fasterrcnn" else {})


def bench(arch: str, device: torch.device, size: int, batch_size: int, repeats: int,
          warmup: int, amp: bool, presets: tuple[str, ...] = PRESETS,
          backbone: str = "resnet18_fpn") -> dict[str, list[float]]:
    models = {}
    for preset in presets:
        torch.manual_seed(0)
        cfg = config(arch, size, str(device), backbone)
        cfg.box_loss = preset
        models[preset] = build_detector(cfg, 4).to(device).train()
    models["stock"] = stock_copy(models["torchvision"], arch).to(device).train()
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
    images, targets = batch(size, batch_size, device)
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(warmup + repeats):
        for name, model in models.items():
            torch.manual_seed(i)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                losses = model(list(images), [dict(t) for t in targets])
            loss = sum(losses.values())
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def report(arch: str, device: torch.device, batch_size: int, times: dict[str, list[float]],
           target: float, backbone: str = "resnet18_fpn") -> bool:
    stock = statistics.median(times["stock"])
    print(f"\n{arch} ({backbone}) on {device}: images/s of a training step (median), ratio to "
          f"stock torchvision")
    ok = True
    for name, values in times.items():
        med = statistics.median(values)
        ratio = stock / med
        flag = "" if name == "stock" else ("  ok" if ratio >= target else "  BELOW TARGET")
        ok &= name == "stock" or ratio >= target
        print(f"  {name:<16} {batch_size / med:8.2f} img/s   {ratio:5.3f}x{flag}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--arch", action="append", default=None)
    parser.add_argument("--backbone", action="append", default=None, choices=BACKBONES,
                        help="only these backbones (repeatable; default all)")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--preset", action="append", default=None, choices=PRESETS,
                        help="only these presets (repeatable; default all; stock is always "
                        "timed and needs 'torchvision')")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write images/s and ratios as a results JSON (with provenance)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows: list[dict] = []
    if args.threads:
        torch.set_num_threads(args.threads)
    archs = args.arch or ["fasterrcnn", "retinanet"]
    presets = tuple(args.preset or PRESETS)
    if "torchvision" not in presets:  # the stock model is a copy of the torchvision preset's
        presets = ("torchvision", *presets)
    ok = True
    for backbone in args.backbone or BACKBONES:
        for arch in archs:
            times = bench(arch, torch.device("cpu"), 64, 2, args.repeats, args.warmup,
                          amp=False, presets=presets, backbone=backbone)
            ok &= report(arch, torch.device("cpu"), 2, times, args.target, backbone)
            rows.append(_row(arch, "cpu", 64, 2, False, times, backbone))
            if torch.cuda.is_available() and not args.no_cuda:
                device = torch.device("cuda")
                times = bench(arch, device, 128, 16, args.repeats, args.warmup, amp=True,
                              presets=presets, backbone=backbone)
                ok &= report(arch, device, 16, times, args.target, backbone)
                rows.append(_row(arch, "cuda", 128, 16, True, times, backbone))
    print("\nall presets within target" if ok else "\nsome preset below target (on a shared, "
          "loaded machine single medians are noisy: re-run before concluding)")
    if args.json:
        from klhuber.results import save_results

        save_results(args.json, {"benchmark": "bench_detection", "args": vars(args),
                                 "all_within_target": ok, "rows": rows},
                     command=" ".join(["python", *sys.argv]),
                     device="cuda" if any(r["device"] == "cuda" for r in rows) else "cpu",
                     wall_time_s=time.perf_counter() - started)
    return 0


def _row(arch: str, device: str, size: int, batch_size: int, amp: bool,
         times: dict[str, list[float]], backbone: str = "resnet18_fpn") -> dict:
    """One (arch, backbone, device) block of the JSON: images/s and the ratio to stock."""
    stock = statistics.median(times["stock"])
    return {"arch": arch, "backbone": backbone, "device": device, "image_size": size,
            "batch_size": batch_size,
            "amp_bf16": amp, "repeats": len(times["stock"]),
            "models": {name: {"median_s": statistics.median(v),
                              "images_per_s": batch_size / statistics.median(v),
                              "ratio_to_stock": stock / statistics.median(v)}
                       for name, v in times.items()}}


if __name__ == "__main__":
    sys.exit(main())
