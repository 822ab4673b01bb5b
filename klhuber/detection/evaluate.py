"""COCO evaluation of a detector with pycocotools' ``COCOeval`` (the metric of Tables 3-6).

:func:`evaluate` runs a model over a :class:`klhuber.detection.data.CocoDetection` split and
returns AP@[.5:.95] (the paper's "0.5-0.95 IoU" column), AP50, AP75 ("0.5 IoU", "0.75 IoU"),
AP for small/medium/large objects, AR, and the AP at each of the ten IoU thresholds
(for the "AP vs IoU threshold" plot).  Values are fractions in [0, 1] (the paper prints
percentages).  :func:`evaluate_checkpoint` rebuilds a model from a training checkpoint and
saves a results JSON with provenance (:func:`klhuber.results.save_results`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["IOU_THRESHOLDS", "METRIC_NAMES", "ap_text", "check_label_mapping", "coco_metrics",
           "evaluate", "evaluate_checkpoint", "flush_denormals", "score_predictions"]

#: COCOeval's IoU thresholds 0.50, 0.55, ..., 0.95.
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: Names of COCOeval's twelve summary statistics, in its order.
METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                 "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_metrics(coco_gt: Any, detections: list[dict[str, Any]],
                 image_ids: list[int] | None = None) -> dict[str, Any]:
    """COCOeval ``bbox`` metrics of ``detections`` (COCO result dicts) against ``coco_gt``.

    Statistics that COCOeval reports as ``-1`` (no ground truth in that size range) become
    ``None``.  With no detection at all every AP/AR is 0.
    """
    from pycocotools.cocoeval import COCOeval

    ids = sorted(coco_gt.getImgIds()) if image_ids is None else list(image_ids)
    if not detections:
        out: dict[str, Any] = {name: 0.0 for name in METRIC_NAMES}
        out["AP_per_iou"] = [0.0] * len(IOU_THRESHOLDS)
        out["num_detections"] = 0
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        cocoeval = COCOeval(coco_gt, coco_dt, "bbox")
        cocoeval.params.imgIds = ids
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    stats = [float(s) for s in cocoeval.stats]
    out = {name: (None if s < 0 else s) for name, s in zip(METRIC_NAMES, stats)}
    precision = cocoeval.eval["precision"]  # [T, R, K, A, M]
    per_iou = []
    for t in range(precision.shape[0]):
        p = precision[t, :, :, 0, -1]
        valid = p[p > -1]
        per_iou.append(float(np.mean(valid)) if valid.size else 0.0)
    out["AP_per_iou"] = per_iou
    out["num_detections"] = len(detections)
    return out


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: Any, *, device: str | torch.device = "cpu",
             batch_size: int = 8, amp: str = "none", progress: bool = False,
             workers: int = 0) -> dict[str, Any]:
    """Detections of ``model`` on every image of ``dataset`` scored with COCOeval.

    ``dataset`` is a :class:`~klhuber.detection.data.CocoDetection` (it provides ``coco``,
    ``ids`` and ``label_to_cat``).  ``amp`` ("bf16"/"fp16"/"auto") applies on CUDA only.  On a
    CPU, float denormals are flushed to zero while it runs (:func:`flush_denormals`; they make
    CPU kernels 10-30x slower); the setting is restored afterwards.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return _evaluate(model, dataset, device, batch_size, amp, progress, workers)
    with flush_denormals():
        return _evaluate(model, dataset, device, batch_size, amp, progress, workers)


def flush_denormals() -> contextlib.AbstractContextManager[None]:
    """A context in which torch flushes float denormals to zero on the CPU
    (``torch.set_flush_denormal(True)``); the previous setting is restored on exit."""
    return _FlushDenormals()


class _FlushDenormals(contextlib.AbstractContextManager):
    def __enter__(self) -> None:
        # torch has no getter: a denormal double reads as 0 while flushing is on.
        self.previous = torch.tensor([1e-323], dtype=torch.float64).item() == 0.0
        torch.set_flush_denormal(True)

    def __exit__(self, *exc: Any) -> None:
        torch.set_flush_denormal(self.previous)


def _evaluate(model: nn.Module, dataset: Any, device: torch.device, batch_size: int, amp: str,
              progress: bool, workers: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from klhuber.detection.data import collate
    from klhuber.detection.engine import amp_dtype as autocast_dtype

    model = model.to(device)
    was_training = model.training
    model.eval()
    amp_dtype = autocast_dtype(amp, device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=workers)
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="eval", leave=False)
    detections: list[dict[str, Any]] = []
    start = time.perf_counter()
    for images, targets in iterator:
        images = [im.to(device, non_blocking=True) for im in images]
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            outputs = model(images)
        for target, output in zip(targets, outputs):
            image_id = int(target["image_id"])
            boxes = output["boxes"].float().cpu()
            if boxes.numel() == 0:
                continue
            xywh = boxes.clone()
            xywh[:, 2:] -= xywh[:, :2]
            for box, score, label in zip(xywh.tolist(), output["scores"].float().cpu().tolist(),
                                         output["labels"].cpu().tolist()):
                detections.append({"image_id": image_id,
                                   "category_id": dataset.label_to_cat[int(label)],
                                   "bbox": [round(v, 3) for v in box],
                                   "score": round(float(score), 5)})
    inference_s = time.perf_counter() - start
    metrics = coco_metrics(dataset.coco, detections, dataset.ids)
    metrics["eval_images"] = len(dataset)
    metrics["inference_s"] = round(inference_s, 3)
    model.train(was_training)
    return metrics


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, data_root: str | None = None,
                        split: str = "val", layout: str | None = None,
                        device: str = "cpu", batch_size: int = 8, amp: str = "none",
                        output: str | os.PathLike | None = None, command: str | None = None,
                        progress: bool = False, extra: dict[str, Any] | None = None,
                        fix_sizes: bool | None = None) -> dict[str, Any]:
    """Rebuild the model of a training checkpoint, evaluate it on ``split`` and (optionally)
    save ``output`` as a results JSON with provenance (iterations, data set hash, config).

    The split's category ids and names must be those the model was trained with (the
    checkpoint's label mapping), else ``ValueError`` names the first difference.  ``amp``
    other than ``"none"``/``"auto"`` needs a CUDA ``device``.  ``fix_sizes`` (default: the
    training run's) is :class:`~klhuber.detection.data.CocoDetection`'s.
    """
    from klhuber.detection.engine import AMP_MODES

    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp in ("bf16", "fp16") and not str(device).startswith("cuda"):
        raise ValueError(f"amp={amp!r} needs a CUDA device, got device={device!r}; use "
                         f"amp='none'")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    from klhuber.detection.data import CocoDetection, coco_split_paths, dataset_hash
    from klhuber.detection.engine import TrainConfig, build_detector, load_checkpoint
    from klhuber.results import save_results

    start = time.perf_counter()
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(json.loads(state["config"]))
    config.weights_path = None
    root = data_root or config.data_root
    img_dir, ann_file = coco_split_paths(root, split, layout or config.data_layout)
    dataset = CocoDetection(img_dir, ann_file, train=False,
                            fix_sizes=config.fix_sizes if fix_sizes is None else fix_sizes)
    if dataset.num_classes != state["num_classes"]:
        raise ValueError(f"the {split} split has {dataset.num_classes - 1} classes, the "
                         f"checkpoint {state['num_classes'] - 1}")
    check_label_mapping(dataset, state, f"the {split} split ({ann_file})", checkpoint)
    model = build_detector(config, state["num_classes"])
    model.load_state_dict(state["model"])
    metrics = evaluate(model, dataset, device=device, batch_size=batch_size, amp=amp,
                       progress=progress)
    payload = {
        "metrics": metrics,
        "iterations": int(state["iteration"]),
        "train_wall_time_s": float(state.get("wall_time_s", 0.0)),
        "nonfinite_steps": int(state["nonfinite"]),
        "config": config.as_dict(),
        "eval_data": {"root": os.path.abspath(root), "split": split,
                      "images": os.path.abspath(img_dir),
                      "annotations": os.path.abspath(ann_file), "hash": dataset_hash(img_dir, ann_file)},
    }
    if extra:
        payload.update(extra)
    if output is not None:
        save_results(output, payload, command=command, device=device,
                     wall_time_s=time.perf_counter() - start,
                     extra={"iterations": payload["iterations"],
                            "dataset_hash": payload["eval_data"]["hash"]})
    return payload


def check_label_mapping(dataset: Any, state: dict[str, Any], what: str = "the data",
                        checkpoint: Any = "the checkpoint") -> None:
    """Raise ``ValueError`` unless ``dataset`` maps labels to the category ids and names the
    checkpoint ``state`` was trained with (checkpoints without a mapping are not checked)."""
    stored = state.get("label_to_cat")
    if stored is not None:
        stored_map = {int(k): int(v) for k, v in stored.items()}
        if stored_map != dict(dataset.label_to_cat):
            mine = sorted(dataset.label_to_cat.values())
            theirs = sorted(stored_map.values())
            raise ValueError(f"{what} has category ids {mine}, but the model of {checkpoint} "
                             f"was trained on {theirs}; evaluate it on data with the same "
                             f"categories")
    names = state.get("class_names")
    if names is not None and list(names) != list(dataset.class_names):
        for cat, old, new in zip(dataset.cat_ids, names, dataset.class_names):
            if old != new:
                raise ValueError(f"{what} names category {cat} {new!r}, but the model of "
                                 f"{checkpoint} learnt it as {old!r}; evaluate it on data with "
                                 f"the same categories")


def score_predictions(gt: str | os.PathLike, predictions: str | os.PathLike | list[dict[str, Any]]
                      ) -> dict[str, Any]:
    """COCOeval ``bbox`` metrics of a COCO results file (a JSON list of ``image_id``,
    ``category_id``, ``bbox`` [x, y, w, h], ``score``) against the annotation file ``gt``.

    Every detection's ``image_id`` must be an image of ``gt`` and its ``category_id`` a
    declared category (``ValueError`` otherwise); the metrics are over all images of ``gt``.
    """
    from pathlib import Path

    from klhuber.detection.data import check_categories, load_coco

    coco_gt = load_coco(gt)
    check_categories(coco_gt, gt)
    if isinstance(predictions, (str, os.PathLike)):
        path = Path(predictions)
        if not path.is_file():
            raise FileNotFoundError(f"predictions file {path} does not exist")
        try:
            detections = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"predictions file {path} is not JSON ({error})") from error
        source = str(path)
    else:
        detections, source = predictions, "predictions"
    if not isinstance(detections, list):
        raise ValueError(f"{source} must hold a JSON list of COCO detections, got "
                         f"{type(detections).__name__}")
    images, cats = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for i, det in enumerate(detections):
        if not isinstance(det, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(det):
            raise ValueError(f"{source}: detection {i} must be an object with image_id, "
                             f"category_id, bbox and score, got {det!r:.120}")
        bbox = det["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)):
            raise ValueError(f"{source}: detection {i} has bbox {bbox!r:.80}; expected four "
                             f"finite numbers x, y, w, h")
        if det["image_id"] not in images:
            raise ValueError(f"{source}: detection {i} has image_id {det['image_id']!r}, which "
                             f"is not an image of {gt}")
        if det["category_id"] not in cats:
            raise ValueError(f"{source}: detection {i} has category_id {det['category_id']!r}, "
                             f"not among the declared categories {sorted(cats)} of {gt}")
    return coco_metrics(coco_gt, detections)


def ap_text(metrics: dict[str, Any]) -> str:
    """One line of the COCO metrics in percent: ``AP 63.7  AP50 89.7  AP75 75.9  APs ...``."""
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    return (f"AP {pct(metrics['AP'])}  AP50 {pct(metrics['AP50'])}  AP75 {pct(metrics['AP75'])}"
            f"  APs {pct(metrics['APs'])}  APm {pct(metrics['APm'])}  APl {pct(metrics['APl'])}")

