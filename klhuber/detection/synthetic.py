"""A COCO-format "shapes" data set with *controlled* annotation noise (stand-in for COCO).

Section 6 reads a box loss as a statement about the noise of the labels: with
:math:`H_\\alpha \\approx D_{\\alpha,1/\\alpha}` (eq. 20-21) the loss of a stage assumes Laplace
label noise of scale :math:`\\alpha\\sigma_x w_a` on the box centre and :math:`\\alpha\\sigma_w w_a`
on its width (eq. 26, 32; Table 2).  On COCO the true label noise is unknown, so the paper could
only compare presets by their AP (Tables 3-6).  Here it is known: the images are drawn with
exact boxes, and every *training* box edge is moved by an independent Laplace (or Gaussian)
offset whose scale is a chosen fraction of the box's width (left/right edges) or height
(top/bottom edges).  Validation labels stay exact.  Which preset's interpreted label noise
matches the true noise can therefore be tested directly.

Layout written by :func:`generate_shapes` (the COCO 2017 layout with ``year=""``, which
:func:`klhuber.detection.data.coco_split_paths` understands)::

    root/train/000000.png ...           images (PNG, RGB)
    root/val/000000.png ...
    root/annotations/instances_train.json        noisy boxes (what the detector learns from)
    root/annotations/instances_train_clean.json  the exact boxes of the same images
    root/annotations/instances_val.json          exact boxes
    root/synthetic.json                          the generator's settings (the data set's recipe)

Everything is a deterministic function of the settings: each image uses its own
``numpy.random.Generator`` seeded from ``(seed, split, index)``, so any subset can be
regenerated, in any order, in parallel, with identical bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from klhuber.results import atomic_write_text

__all__ = [
    "CLASSES",
    "NOISE_DISTRIBUTIONS",
    "ShapesSpec",
    "add_box_noise",
    "centre_noise_huber_threshold",
    "draw_image",
    "equivalent_laplace_scales",
    "generate_shapes",
]

#: Shape classes (COCO category ids 1..len(CLASSES), in this order).
CLASSES: tuple[str, ...] = ("rectangle", "ellipse", "triangle", "ring", "cross")
#: Distributions of the per-edge annotation offsets.
NOISE_DISTRIBUTIONS: tuple[str, ...] = ("laplace", "gaussian")
_SPLIT_CODES = {"train": 1, "val": 2}


@dataclass(frozen=True)
class ShapesSpec:
    """Settings of a synthetic shapes data set.

    Parameters
    ----------
    image_size:
        Side of the square images in pixels (>= 32).
    num_train, num_val:
        Number of images per split.
    noise_scale:
        Scale of the offset added to each *training* box edge, as a fraction of the box's width
        (x edges) or height (y edges): Laplace scale :math:`b` (``noise="laplace"``) or Gaussian
        standard deviation (``noise="gaussian"``).  ``0`` gives exact training labels.
    noise:
        ``"laplace"`` or ``"gaussian"``.
    min_objects, max_objects:
        Objects per image (uniform).
    min_box, max_box:
        Range of the longer box side, as a fraction of ``image_size`` (log-uniform).
    max_aspect:
        Aspect ratios ``w/h`` are log-uniform in ``[1/max_aspect, max_aspect]``.
    clutter:
        Number of distractor strokes / blobs (not annotated) per image, uniform in
        ``[0, clutter]``.
    max_overlap:
        Maximum IoU between two objects of one image (rejection sampling).
    seed:
        Base seed.
    classes:
        Which shape classes to use (a subset of :data:`CLASSES`, in any order).
    """

    image_size: int = 128
    num_train: int = 1000
    num_val: int = 200
    noise_scale: float = 0.0
    noise: str = "laplace"
    min_objects: int = 1
    max_objects: int = 5
    min_box: float = 0.12
    max_box: float = 0.5
    max_aspect: float = 2.5
    clutter: int = 4
    max_overlap: float = 0.3
    seed: int = 0
    classes: tuple[str, ...] = field(default=CLASSES)

    def __post_init__(self) -> None:
        if int(self.image_size) != self.image_size or self.image_size < 32:
            raise ValueError(f"image_size must be an int >= 32, got {self.image_size!r}")
        for name in ("num_train", "num_val"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (math.isfinite(self.noise_scale) and 0 <= self.noise_scale <= 1):
            raise ValueError(f"noise_scale must be in [0, 1], got {self.noise_scale!r}")
        if self.noise not in NOISE_DISTRIBUTIONS:
            raise ValueError(f"noise must be one of {NOISE_DISTRIBUTIONS}, got {self.noise!r}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0 < self.min_box <= self.max_box <= 1:
            raise ValueError(
                f"need 0 < min_box <= max_box <= 1, got {self.min_box}, {self.max_box}"
            )
        if self.min_box * self.image_size < 4:
            raise ValueError(
                f"min_box * image_size must be >= 4 pixels, got {self.min_box * self.image_size}"
            )
        if not self.max_aspect >= 1:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect!r}")
        if self.clutter < 0:
            raise ValueError(f"clutter must be >= 0, got {self.clutter!r}")
        if not 0 < self.max_overlap <= 1:
            raise ValueError(f"max_overlap must be in (0, 1], got {self.max_overlap!r}")
        classes = tuple(self.classes)
        if not classes or len(set(classes)) != len(classes) or set(classes) - set(CLASSES):
            raise ValueError(f"classes must be distinct names from {CLASSES}, got {classes!r}")
        object.__setattr__(self, "classes", classes)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out


def _rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index), int(stream)])


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[int, int, int]:
    """A random colour at least some distance from ``avoid`` (so objects stay visible)."""
    for _ in range(20):
        c = rng.integers(0, 256, size=3)
        if avoid is None or np.abs(c - avoid).sum() > 150:
            break
    return (int(c[0]), int(c[1]), int(c[2]))


def draw_image(spec: ShapesSpec, split: str, index: int) -> tuple[Any, list[dict[str, Any]]]:
    """Draw image ``index`` of ``split``: a PIL RGB image and its exact objects.

    Each object is ``{"category": name, "bbox": [x0, y0, x1, y1]}`` with pixel-edge
    coordinates (a shape covering pixel columns 3..10 has ``x0 = 3, x1 = 11``), computed from
    the shape's own drawn mask, so boxes are exact even for anti-aliasing-free polygons.
    """
    from PIL import Image, ImageDraw

    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rng = _rng(spec.seed, split, index)
    size = spec.image_size
    # Background: a smooth two-colour gradient plus mild pixel noise.
    c0 = rng.integers(0, 256, size=3).astype(np.float32)
    c1 = rng.integers(0, 256, size=3).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = (np.cos(direction) * xx + np.sin(direction) * yy + 1.5) / 3.0
    background = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    background += rng.normal(0, 6, size=background.shape)
    mean_bg = background.reshape(-1, 3).mean(axis=0)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)

    # Clutter: thin strokes and tiny blobs (never annotated).
    for _ in range(int(rng.integers(0, spec.clutter + 1))):
        colour = _colour(rng)
        if rng.random() < 0.5:
            pts = rng.uniform(0, size, size=4)
            draw.line([(pts[0], pts[1]), (pts[2], pts[3])], fill=colour,
                      width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(1, max(2.0, 0.03 * size))
            cx, cy = rng.uniform(0, size, size=2)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)

    objects: list[dict[str, Any]] = []
    boxes: list[list[float]] = []
    n_objects = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    for _ in range(n_objects):
        for _attempt in range(30):
            side = size * math.exp(rng.uniform(math.log(spec.min_box), math.log(spec.max_box)))
            aspect = math.exp(rng.uniform(-math.log(spec.max_aspect), math.log(spec.max_aspect)))
            w, h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
            w, h = max(4, int(round(w))), max(4, int(round(h)))
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            box = [x0, y0, x0 + w, y0 + h]
            if all(_iou(box, other) <= spec.max_overlap for other in boxes):
                break
        else:
            continue
        category = spec.classes[int(rng.integers(0, len(spec.classes)))]
        colour = _colour(rng, mean_bg)
        mask = Image.new("L", (size, size), 0)
        mdraw = ImageDraw.Draw(mask)
        x1, y1 = x0 + w - 1, y0 + h - 1  # PIL's inclusive corners
        if category == "rectangle":
            mdraw.rectangle([x0, y0, x1, y1], fill=255)
        elif category == "ellipse":
            mdraw.ellipse([x0, y0, x1, y1], fill=255)
        elif category == "triangle":
            apex = x0 + rng.uniform(0, 1) * (w - 1)
            mdraw.polygon([(apex, y0), (x0, y1), (x1, y1)], fill=255)
        elif category == "ring":
            mdraw.ellipse([x0, y0, x1, y1], fill=255)
            t = max(1, int(round(0.25 * min(w, h))))
            if w - 2 * t >= 2 and h - 2 * t >= 2:
                mdraw.ellipse([x0 + t, y0 + t, x1 - t, y1 - t], fill=0)
        else:  # cross
            tw = max(1, int(round(0.3 * w)))
            th = max(1, int(round(0.3 * h)))
            cx0 = x0 + (w - tw) // 2
            cy0 = y0 + (h - th) // 2
            mdraw.rectangle([cx0, y0, cx0 + tw - 1, y1], fill=255)
            mdraw.rectangle([x0, cy0, x1, cy0 + th - 1], fill=255)
        bbox = mask.getbbox()  # exact extent of the drawn shape (x0, y0, x1 + 1, y1 + 1)
        if bbox is None:
            continue
        image.paste(Image.new("RGB", (size, size), colour), (0, 0), mask)
        boxes.append([float(v) for v in bbox])
        objects.append({"category": category, "bbox": [float(v) for v in bbox]})
    return image, objects


def add_box_noise(
    box: Sequence[float], scale: float, rng: np.random.Generator, *,
    noise: str = "laplace", image_size: int | None = None,
) -> list[float]:
    """Move each edge of ``box`` (``[x0, y0, x1, y1]``) by an independent random offset.

    The offsets of the left/right edges have scale ``scale * width``, those of the top/bottom
    edges ``scale * height`` (Laplace scale or Gaussian standard deviation).  The result is
    clipped to the image and kept at least one pixel wide and high.
    """
    if noise not in NOISE_DISTRIBUTIONS:
        raise ValueError(f"noise must be one of {NOISE_DISTRIBUTIONS}, got {noise!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if scale == 0:
        return [x0, y0, x1, y1]
    draw = rng.laplace if noise == "laplace" else rng.normal
    e = draw(0.0, 1.0, size=4) * scale
    nx0, nx1 = sorted((x0 + e[0] * w, x1 + e[2] * w))
    ny0, ny1 = sorted((y0 + e[1] * h, y1 + e[3] * h))
    if image_size is not None:
        nx0, ny0 = max(0.0, nx0), max(0.0, ny0)
        nx1, ny1 = min(float(image_size), nx1), min(float(image_size), ny1)
    if nx1 - nx0 < 1:
        c = min(max((nx0 + nx1) / 2, 0.5), (image_size or 1e9) - 0.5)
        nx0, nx1 = c - 0.5, c + 0.5
    if ny1 - ny0 < 1:
        c = min(max((ny0 + ny1) / 2, 0.5), (image_size or 1e9) - 0.5)
        ny0, ny1 = c - 0.5, c + 0.5
    return [nx0, ny0, nx1, ny1]


def equivalent_laplace_scales(edge_scale: float, noise: str = "laplace") -> dict[str, float]:
    """Laplace scales (variance-matched, :math:`\\mathrm{Var} = 2b^2`) of the label noise that
    independent per-edge offsets of relative scale ``edge_scale`` induce on the box centre
    :math:`x^*` and width :math:`w^*`, in units of the box width (likewise ``y``, ``h``).

    With edge offsets :math:`e_0, e_1` of variance :math:`v` (``2 s^2`` for Laplace, ``s^2`` for
    Gaussian), :math:`x^* = (x_0+x_1)/2` has variance :math:`v/2` and :math:`w^* = x_1-x_0`
    variance :math:`2v`.  These are the numbers to hold against Table 2's label scales
    :math:`\\alpha\\sigma_x w_a` and :math:`\\alpha\\sigma_w w_a` (anchor ≈ box).
    """
    if noise not in NOISE_DISTRIBUTIONS:
        raise ValueError(f"noise must be one of {NOISE_DISTRIBUTIONS}, got {noise!r}")
    var = (2.0 if noise == "laplace" else 1.0) * edge_scale**2
    return {"x": math.sqrt(var / 2 / 2), "w": math.sqrt(2 * var / 2)}


def _coco_document(spec: ShapesSpec, split: str, images: list[dict],
                   annotations: list[dict]) -> dict[str, Any]:
    return {
        "info": {
            "description": f"klhuber synthetic shapes, split {split}",
            "version": "1",
            "klhuber_synthetic": spec.as_dict(),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(spec.classes)
        ],
    }


def _annotation(ann_id: int, image_id: int, category_id: int, box: Sequence[float]) -> dict:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [round(x0, 4), round(y0, 4), round(w, 4), round(h, 4)],
        "area": round(w * h, 4),
        "iscrowd": 0,
        "segmentation": [],
    }


def _render_one(args: tuple[ShapesSpec, str, int, str]) -> list[dict[str, Any]]:
    spec, split, index, path = args
    image, objects = draw_image(spec, split, index)
    image.save(path, format="PNG", optimize=False, compress_level=1)
    return objects


def generate_shapes(
    root: str | Path, spec: ShapesSpec | None = None, *, workers: int = 0,
    progress: bool = False, **kwargs: Any,
) -> dict[str, Any]:
    """Write the data set described by ``spec`` (or ``ShapesSpec(**kwargs)``) under ``root``.

    Skips the work when ``root/synthetic.json`` already records the same settings and all
    files exist (so calling it again is cheap and safe).  ``workers > 1`` renders images in a
    process pool (same bytes as serial).  Returns the recipe dict (``spec``, file paths).
    """
    if spec is None:
        spec = ShapesSpec(**kwargs)
    elif kwargs:
        raise ValueError("pass either spec or keyword settings, not both")
    root = Path(root)
    recipe_path = root / "synthetic.json"
    ann_dir = root / "annotations"
    files = {
        "train_images": str(root / "train"),
        "val_images": str(root / "val"),
        "train_annotations": str(ann_dir / "instances_train.json"),
        "train_clean_annotations": str(ann_dir / "instances_train_clean.json"),
        "val_annotations": str(ann_dir / "instances_val.json"),
    }
    recipe = {"spec": spec.as_dict(), "files": {k: Path(v).name for k, v in files.items()}}
    if recipe_path.exists():
        try:
            old = json.loads(recipe_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        if old == recipe and all(Path(p).exists() for p in files.values()):
            return {"spec": spec.as_dict(), "files": files, "root": str(root)}

    ann_dir.mkdir(parents=True, exist_ok=True)
    cat_ids = {name: i + 1 for i, name in enumerate(spec.classes)}
    for split, count in (("train", spec.num_train), ("val", spec.num_val)):
        img_dir = root / split
        img_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(spec, split, i, str(img_dir / f"{i:06d}.png")) for i in range(count)]
        if workers and workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_render_one, jobs, chunksize=32))
        else:
            iterator = jobs
            if progress:
                from tqdm.auto import tqdm

                iterator = tqdm(jobs, desc=f"shapes/{split}", leave=False)
            results = [_render_one(job) for job in iterator]
        images, clean, noisy = [], [], []
        ann_id = 1
        for i, objects in enumerate(results):
            image_id = i + 1
            images.append({"id": image_id, "file_name": f"{i:06d}.png",
                           "width": spec.image_size, "height": spec.image_size})
            noise_rng = _rng(spec.seed, split, i, stream=1)
            for obj in objects:
                cat = cat_ids[obj["category"]]
                clean.append(_annotation(ann_id, image_id, cat, obj["bbox"]))
                if split == "train":
                    box = add_box_noise(obj["bbox"], spec.noise_scale, noise_rng,
                                        noise=spec.noise, image_size=spec.image_size)
                    noisy.append(_annotation(ann_id, image_id, cat, box))
                ann_id += 1
        if split == "train":
            atomic_write_text(files["train_annotations"],
                              json.dumps(_coco_document(spec, split, images, noisy)))
            atomic_write_text(files["train_clean_annotations"],
                              json.dumps(_coco_document(spec, "train (clean)", images, clean)))
        else:
            atomic_write_text(files["val_annotations"],
                              json.dumps(_coco_document(spec, split, images, clean)))
    atomic_write_text(recipe_path, json.dumps(recipe, indent=2))
    return {"spec": spec.as_dict(), "files": files, "root": str(root)}


def centre_noise_huber_threshold(edge_scale: float, noise: str = "laplace") -> dict[str, Any]:
    r"""The Huber threshold that the asymptotic theory of the toy chapter
    (:func:`klhuber.toy.asymptotic_variance`) finds best for the *box centre's* label noise,
    in units of the box width.

    A box loss acts on the centre :math:`x^* = (x_0 + x_1)/2`, whose noise is the mean
    :math:`(e_0 + e_1)/2` of the two edges' offsets, not one offset.  For Laplace offsets of
    scale :math:`b` that mean has the density :math:`(1 + 2|z|/b)\,e^{-2|z|/b}/(2b)`, which is
    smooth at 0: the median (L1) is not the best M-estimator of its location, as it is for one
    Laplace offset (:math:`c_f = 0`).  The Huber threshold :math:`k^*` minimising the asymptotic
    variance :math:`V(k) = E[\psi_k^2] / P(|z| < k)^2` is an interior :math:`k^* \approx 0.686\,b`
    (``V`` 0.852 b², against b² for both L1 and L2).  Gaussian offsets give a Gaussian centre,
    for which L2 is best (``threshold = inf``).  The width :math:`x_1 - x_0` has the same
    distribution at twice the scale, so with :math:`\sigma_w = 2\sigma_x` the same α follows
    to first order (the width target is :math:`\log(w/w_a)/\sigma_w`, linear only near
    :math:`w = w_a`).

    Returns ``threshold`` (:math:`k^*` in box widths), and ``v_min``, ``v_l1``, ``v_l2`` (the
    variances at :math:`k^*`, :math:`k \to 0` and :math:`k \to \infty`, in units of
    :math:`b^2`).  As a box-loss α in target units: ``threshold / sigma_x``.
    """
    if not (math.isfinite(edge_scale) and edge_scale >= 0):
        raise ValueError(f"edge_scale must be a finite number >= 0, got {edge_scale!r}")
    if noise not in NOISE_DISTRIBUTIONS:
        raise ValueError(f"noise must be one of {NOISE_DISTRIBUTIONS}, got {noise!r}")
    if noise == "gaussian":
        # a Gaussian centre of variance 1/2 (unit edge deviation): the mean is best
        return {"threshold": math.inf, "v_min": 0.5, "v_l1": math.pi / 4, "v_l2": 0.5}
    k = _laplace_mean_of_two_best_threshold()
    return {"threshold": k * edge_scale, "v_min": _laplace_mean_of_two_variance(k),
            "v_l1": 1.0, "v_l2": 1.0}


def _laplace_mean_of_two_variance(k: float) -> float:
    """V(k) of the Huber M-estimator for z = (e0 + e1)/2 with e ~ Laplace(0, 1), in closed
    form: P(z > k) = (1 + k) e^{-2k}/2 and E[z^2; |z| < k] from the density's antiderivative."""
    tail = (1.0 + k) * math.exp(-2.0 * k)  # P(|z| > k)
    # 2 * integral_0^k z^2 (1 + 2z) e^{-2z} / 2 dz
    inner = 1.0 - math.exp(-2.0 * k) * (1.0 + 2.0 * k + 2.0 * k**2 + k**3)
    return (inner + k * k * tail) / (1.0 - tail) ** 2


def _laplace_mean_of_two_best_threshold() -> float:
    from scipy import optimize

    res = optimize.minimize_scalar(lambda lk: _laplace_mean_of_two_variance(math.exp(lk)),
                                   bounds=(-6.0, 4.0), method="bounded",
                                   options={"xatol": 1e-10})
    return math.exp(res.x)
