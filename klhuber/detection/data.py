"""COCO-format detection data through pycocotools (COCO 2014/2017, or the synthetic shapes set).

Follows torchvision's ``references/detection`` (``coco_utils.py``): images are read with PIL,
annotations with ``pycocotools.coco.COCO``; crowd boxes and degenerate boxes are dropped from
training targets; training images without annotations are removed; category ids are mapped to
contiguous labels ``1..K`` (0 is background, torchvision's convention) and back for evaluation.

``--data-root`` layouts (:func:`coco_split_paths`)::

    COCO 2017:  root/train2017/  root/val2017/  root/annotations/instances_{train,val}2017.json
    COCO 2014:  root/train2014/  root/val2014/  root/annotations/instances_{train,val}2014.json
    synthetic:  root/train/      root/val/      root/annotations/instances_{train,val}.json

The paper trains Faster R-CNN on COCO 2014 train and tests on 2014 val (Table 3), and
RetinaNet on 2017 train / 2017 val (Table 4).

Random augmentation (horizontal flip) is *not* done here but in the training loop
(:func:`klhuber.detection.engine.random_horizontal_flip`) with a generator whose state is
checkpointed, so that data loading is a pure function of the index and interrupted runs resume
exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from klhuber.detection.config import DATA_LAYOUTS

__all__ = [
    "CocoDetection",
    "SkipSampler",
    "collate",
    "check_categories",
    "coco_split_paths",
    "dataset_hash",
    "load_coco",
]

# Accepted ``layout`` values of :func:`coco_split_paths` ("auto" picks the one present);
# declared with the other training options, in klhuber.detection.config.


def coco_split_paths(root: str | os.PathLike, split: str,
                     layout: str = "auto") -> tuple[Path, Path]:
    """Image folder and annotation file of ``split`` (``"train"`` or ``"val"``) under ``root``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if layout not in DATA_LAYOUTS:
        raise ValueError(f"layout must be one of {DATA_LAYOUTS}, got {layout!r}")
    root = Path(root)
    suffixes = {"2017": "2017", "2014": "2014", "synthetic": ""}
    candidates = [layout] if layout != "auto" else ["2017", "2014", "synthetic"]
    for name in candidates:
        suffix = suffixes[name]
        img_dir = root / f"{split}{suffix}"
        ann_file = root / "annotations" / f"instances_{split}{suffix}.json"
        if img_dir.is_dir() and ann_file.is_file():
            return img_dir, ann_file
    tried = ", ".join(
        f"{split}{suffixes[n]}/ + annotations/instances_{split}{suffixes[n]}.json"
        for n in candidates
    )
    raise ValueError(f"data root {str(root)!r} has no {split} split (looked for {tried})")


def load_coco(ann_file: str | os.PathLike) -> Any:
    """``pycocotools.coco.COCO(ann_file)`` without its chatter on stdout.

    A missing file raises ``FileNotFoundError`` and a file that is not COCO JSON a
    ``ValueError``, both naming the file.
    """
    try:
        from pycocotools.coco import COCO
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{error}; pycocotools comes with the detection extra: "
            f"pip install 'klhuber[detection]'", name=error.name) from error

    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise ValueError(f"{path} is not a COCO annotation file "
                         f"({type(error).__name__}: {error})") from error


def check_categories(coco: Any, ann_file: str | os.PathLike = "annotations") -> None:
    """Raise ``ValueError`` when an annotation's ``category_id`` is not a declared category."""
    declared = set(coco.cats)
    bad = [a for a in coco.dataset.get("annotations", []) if a.get("category_id") not in declared]
    if bad:
        ids = sorted({str(a.get("category_id")) for a in bad})
        first = bad[0]
        raise ValueError(
            f"{ann_file}: {len(bad)} annotation(s) have a category_id that is not among the "
            f"declared categories {sorted(declared)}: {', '.join(ids[:10])} (first: annotation "
            f"{first.get('id')} of image {first.get('image_id')}); declare the categories or "
            f"remove those annotations")


def dataset_hash(img_dir: str | os.PathLike, ann_file: str | os.PathLike,
                 *, images: bool = True) -> str:
    """SHA-256 (hex, first 16 characters) of the annotation file and, by default, all images
    it lists (names and bytes), so results record exactly which data they come from."""
    digest = hashlib.sha256()
    ann_bytes = Path(ann_file).read_bytes()
    digest.update(ann_bytes)
    if images:
        import json

        for info in sorted(json.loads(ann_bytes)["images"], key=lambda i: i["id"]):
            path = Path(img_dir) / info["file_name"]
            digest.update(info["file_name"].encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection data set returning ``(image, target)`` as torchvision expects.

    ``image`` is a float tensor ``(3, H, W)`` in ``[0, 1]``; ``target`` holds ``boxes``
    (``(n, 4)`` float32, ``x0, y0, x1, y1`` in pixels), ``labels`` (int64, ``1..K``),
    ``image_id``, ``area`` and ``iscrowd``.  Category ids of all annotations are checked
    against the declared categories at construction (``ValueError`` naming the undeclared ids).

    Parameters
    ----------
    img_dir, ann_file:
        Image folder and COCO instances JSON.
    train:
        Drop crowd and degenerate boxes and images left without any box (as torchvision's
        references do for training).
    cache:
        Keep decoded images in memory (uint8) after first use; ``"preload"`` decodes all at
        construction.  Worth it for small data sets (the synthetic shapes).
    max_images:
        Use only the first ``max_images`` images (by id).
    fix_sizes:
        At construction every used image's file header is read and its size compared with the
        ``width``/``height`` of the JSON (they define where boxes are clipped).  A difference
        raises ``ValueError`` naming the image; with ``fix_sizes=True`` the sizes of the files
        are used instead (boxes stay in pixels and are clipped to the real image), which is
        what ``klhuber detect train/eval --fix-sizes`` does.
    """

    def __init__(self, img_dir: str | os.PathLike, ann_file: str | os.PathLike, *,
                 train: bool = False, cache: bool | str = False,
                 max_images: int | None = None, fix_sizes: bool = False) -> None:
        self.img_dir = Path(img_dir)
        self.ann_file = Path(ann_file)
        self.coco = load_coco(ann_file)
        check_categories(self.coco, self.ann_file)
        self.train = train
        self.fix_sizes = bool(fix_sizes)
        cat_ids = sorted(self.coco.getCatIds())
        self.cat_ids = cat_ids
        self.cat_to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_cat = {i + 1: c for i, c in enumerate(cat_ids)}
        self.class_names = [self.coco.cats[c]["name"] for c in cat_ids]
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if self._has_valid_annotation(i)]
        if max_images is not None:
            if int(max_images) != max_images or max_images < 1:
                raise ValueError(f"max_images must be an int >= 1, got {max_images!r}")
            ids = ids[:max_images]
        self.ids = ids
        self._check_sizes()
        self._cache: dict[int, Tensor] = {}
        self.cache = bool(cache)
        if cache == "preload":
            for index in range(len(self.ids)):
                self._image(index)

    @property
    def num_classes(self) -> int:
        """Number of classes *including* background (torchvision's ``num_classes``)."""
        return len(self.cat_ids) + 1

    def _has_valid_annotation(self, image_id: int) -> bool:
        anns = self.coco.imgToAnns.get(image_id, [])
        return any(a.get("iscrowd", 0) == 0 and a["bbox"][2] > 1 and a["bbox"][3] > 1
                   for a in anns)

    def _check_sizes(self) -> None:
        """Compare the JSON's width/height of every used image with its file (header only)."""
        from PIL import Image, UnidentifiedImageError

        wrong = []
        for image_id in self.ids:
            info = self.coco.imgs[image_id]
            path = self.img_dir / info["file_name"]
            try:
                with Image.open(path) as img:
                    size = img.size
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.ann_file}: image {image_id} is {path}, which "
                                        f"does not exist") from None
            except (UnidentifiedImageError, OSError) as error:
                raise ValueError(f"{self.ann_file}: image {image_id} ({path}) cannot be read: "
                                 f"{error}") from error
            declared = (info.get("width"), info.get("height"))
            if declared == size:
                continue
            if self.fix_sizes or None in declared:
                info["width"], info["height"] = size
            else:
                wrong.append((image_id, path, size, declared))
        if wrong:
            image_id, path, size, declared = wrong[0]
            raise ValueError(
                f"{self.ann_file}: {len(wrong)} image(s) differ in size from their width/height "
                f"in the JSON, e.g. image {image_id} ({path.name}) is {size[0]}x{size[1]} but "
                f"declared {declared[0]}x{declared[1]}; correct the JSON, or pass --fix-sizes "
                f"(fix_sizes=True) to use the sizes of the files")

    def __len__(self) -> int:
        return len(self.ids)

    def _image(self, index: int) -> Tensor:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        from PIL import Image

        info = self.coco.imgs[self.ids[index]]
        with Image.open(self.img_dir / info["file_name"]) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        if self.cache:
            self._cache[index] = tensor
        return tensor

    def target(self, index: int) -> dict[str, Tensor]:
        """The target of image ``index`` (no image decoding)."""
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        anns = self.coco.imgToAnns.get(image_id, [])
        if self.train:
            anns = [a for a in anns if a.get("iscrowd", 0) == 0]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, info["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, info["height"])
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns],
                              dtype=torch.int64)
        area = torch.tensor([a.get("area", 0.0) for a in anns], dtype=torch.float32)
        iscrowd = torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.int64)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        return {"boxes": boxes[keep], "labels": labels[keep], "image_id": torch.tensor(image_id),
                "area": area[keep], "iscrowd": iscrowd[keep]}

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image = self._image(index).float().div_(255.0)
        return image, self.target(index)


def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[tuple, tuple]:
    """torchvision references' ``collate_fn``: tuples of images and of targets."""
    return tuple(zip(*batch))  # type: ignore[return-value]


class SkipSampler(torch.utils.data.Sampler):
    """The indices of ``sampler`` for one epoch, from position ``skip`` on (to resume mid-epoch).

    ``sampler`` is typically a ``DistributedSampler`` (also for one process), whose order is a
    pure function of its seed and ``set_epoch``.
    """

    def __init__(self, sampler: torch.utils.data.Sampler, skip: int = 0) -> None:
        self.sampler = sampler
        self.skip = int(skip)

    def __iter__(self):
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]
