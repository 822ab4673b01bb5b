"""Training loop for the detectors (Section 7), in the manner of torchvision's
``references/detection`` (``train.py``, ``engine.py``, ``utils.py``).

* SGD with momentum and weight decay, linear warm-up, multi-step learning-rate decay (the
  schedules of py-faster-rcnn and Detectron, which the paper uses), all per *iteration*;
* automatic mixed precision on CUDA (``amp="bf16"`` or ``"fp16"`` with a gradient scaler);
* optional gradient-norm clipping;
* a guard against non-finite losses or gradients: the step is skipped and counted, and the run
  stops with :class:`NonFiniteLossError` after ``max_nonfinite`` of them;
* tqdm progress and metrics as JSON lines (``metrics.jsonl``);
* atomic checkpoints (``checkpoint.pt``: model, optimiser, scheduler, scaler, RNG states and the
  position in the data order) every ``checkpoint_every`` iterations and at the end; with
  ``resume=True`` an interrupted single-process run continues to the *same* weights as an
  uninterrupted one (tested on CPU);
* runs are never lost or mixed: a folder that already holds a run is refused unless
  ``resume=True`` (continue it; the checkpoint's configuration must match the requested one)
  or ``overwrite=True`` (replace it); the folder is checked writable before any work, stale
  temporary files of an interrupted save are removed, and SIGTERM/SIGINT stop the run after
  the current iteration with a checkpoint (:class:`TrainingInterrupted`);
* multi-process / multi-node data parallelism through ``torchrun``: when ``WORLD_SIZE > 1`` the
  process group is initialised (NCCL on CUDA, gloo on CPU), data are split with a
  ``DistributedSampler`` and only rank 0 logs and writes checkpoints.

Randomness: the data order is a ``DistributedSampler`` permutation (a function of the seed and
the epoch), horizontal flips come from a dedicated generator, and the model's own sampling
(anchors / RoIs) from torch's global generator; all three are restored on resume.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from klhuber.results import atomic_write_bytes, atomic_write_text

__all__ = [
    "AMP_MODES",
    "CheckpointError",
    "NonFiniteLossError",
    "RUNTIME_FIELDS",
    "RunExistsError",
    "TrainConfig",
    "TrainingInterrupted",
    "build_detector",
    "checkpoint_path",
    "config_differences",
    "load_checkpoint",
    "lr_factor",
    "random_horizontal_flip",
    "train",
]

AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16", "auto")
#: Learning-rate schedules after the warm-up (:func:`lr_factor`).
LR_SCHEDULES = ("step", "cosine")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """Raised when more than ``max_nonfinite`` steps had a non-finite loss or gradient."""


class RunExistsError(ValueError):
    """The output folder already holds a run, and neither ``resume`` nor ``overwrite`` was
    given; or ``resume`` was given with a configuration that differs from the checkpoint's."""


class CheckpointError(RuntimeError):
    """A checkpoint file is empty, truncated or not a checkpoint of :func:`train`."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGINT stopped :func:`train`; a checkpoint of the last finished iteration
    was written first (``checkpoint`` and ``iteration`` say where and which)."""

    def __init__(self, message: str, *, signum: int, checkpoint: str, iteration: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint
        self.iteration = iteration


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in its checkpoint and results).

    Model options are plain values (so that a checkpoint can rebuild its model):
    ``min_size``/``max_size`` (torchvision's resize), ``anchor_sizes`` (one base size per
    feature level; ``None`` keeps the builder's anchors), ``box_head_dim`` (width of Faster
    R-CNN's two-layer box head; ``None`` = torchvision's 1024), and ``model_kwargs`` (further
    plain keyword arguments of ``FasterRCNN`` / ``RetinaNet``).

    ``data_root`` and ``weights_path`` are stored absolute.  ``resume`` continues the run in
    ``out_dir`` (its checkpoint's configuration must match, :func:`config_differences`);
    ``overwrite`` replaces it; with neither, a non-empty ``out_dir`` is refused
    (:class:`RunExistsError`).  ``fix_sizes`` takes image sizes from the files where the JSON
    differs (:class:`~klhuber.detection.data.CocoDetection`).  Ranges are checked here:
    ``lr`` > 0, ``momentum`` in [0, 1), ``gamma`` in (0, 1], ``weight_decay`` >= 0, and
    ``amp`` "bf16"/"fp16" only with a CUDA ``device``.
    """

    data_root: str = ""
    out_dir: str = "runs/detection"
    arch: str = "fasterrcnn"
    box_loss: str = "torchvision"
    backbone: str = "resnet18_fpn"
    data_layout: str = "auto"
    fix_sizes: bool = False
    weights_path: str | None = None
    iters: int = 1000
    batch_size: int = 2
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    lr_schedule: str = "step"
    amp: str = "none"
    clip_grad_norm: float | None = None
    max_nonfinite: int = 20
    checkpoint_every: int = 500
    log_every: int = 20
    seed: int = 0
    workers: int = 0
    cache_images: bool = False
    max_train_images: int | None = None
    device: str = "cpu"
    hflip: float = 0.5
    min_size: int = 800
    max_size: int = 1333
    anchor_sizes: tuple[float, ...] | None = None
    box_head_dim: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    flush_denormal: bool = True
    progress: bool = True
    resume: bool = False
    stop_at: int | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        # Data paths are stored absolute, so that a checkpoint evaluates from any directory.
        if self.data_root:
            self.data_root = str(Path(self.data_root).expanduser().absolute())
        if self.weights_path:
            self.weights_path = str(Path(self.weights_path).expanduser().absolute())
        self.milestones = tuple(int(m) for m in self.milestones)
        if self.anchor_sizes is not None:
            self.anchor_sizes = tuple(float(a) for a in self.anchor_sizes)
        positive = ("iters", "batch_size", "checkpoint_every", "log_every", "min_size",
                    "max_size")
        for name in positive:
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "warmup_factor", "gamma", "hflip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {value!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be a finite number >= 0, got "
                             f"{self.weight_decay!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1] (the learning-rate factor at each "
                             f"milestone), got {self.gamma!r}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters!r}")
        if not 0 < self.warmup_factor <= 1:
            raise ValueError(f"warmup_factor must be in (0, 1], got {self.warmup_factor!r}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got "
                             f"{self.lr_schedule!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.amp in ("bf16", "fp16") and not str(self.device).startswith("cuda"):
            raise ValueError(f"amp={self.amp!r} needs a CUDA device, got device="
                             f"{self.device!r}; use amp='none' (or 'auto', which is 'none' "
                             f"off CUDA)")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm!r}")
        if self.max_nonfinite < 0:
            raise ValueError(f"max_nonfinite must be >= 0, got {self.max_nonfinite!r}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip must be in [0, 1], got {self.hflip!r}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers!r}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise ValueError(f"stop_at must be in [1, iters], got {self.stop_at!r}")

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        if self.anchor_sizes is not None:
            out["anchor_sizes"] = list(self.anchor_sizes)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**values)


def lr_factor(iteration: int, warmup_iters: int, warmup_factor: float,
              milestones: tuple[int, ...], gamma: float, schedule: str = "step",
              total_iters: int | None = None) -> float:
    r"""Learning-rate multiplier at ``iteration``: linear warm-up from ``warmup_factor`` to 1
    over ``warmup_iters`` (torchvision references' ``LinearLR``), times either ``gamma`` per
    passed milestone (``schedule="step"``, ``MultiStepLR``) or the cosine decay
    :math:`\tfrac12(1 + \cos(\pi\,i/T))` over ``total_iters`` :math:`T`
    (``schedule="cosine"``, ``CosineAnnealingLR`` to 0; milestones are then ignored)."""
    factor = 1.0
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor = warmup_factor * (1 - alpha) + alpha
    if schedule == "cosine":
        if total_iters is None or total_iters < 1:
            raise ValueError(f"total_iters must be an int >= 1 for the cosine schedule, "
                             f"got {total_iters!r}")
        return factor * 0.5 * (1.0 + math.cos(math.pi * min(iteration, total_iters) / total_iters))
    if schedule != "step":
        raise ValueError(f"schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    passed = sum(1 for m in milestones if iteration >= m)
    return factor * gamma**passed


def random_horizontal_flip(images: list[Tensor], targets: list[dict[str, Tensor]], p: float,
                           generator: torch.Generator) -> None:
    """Flip each image (and its boxes) left-right with probability ``p``, in place.

    One draw per image from ``generator`` (also when ``p`` is 0 or 1), so that the generator's
    state after a batch does not depend on the outcome.
    """
    draws = torch.rand(len(images), generator=generator)
    for i in range(len(images)):
        if draws[i] < p:
            images[i] = images[i].flip(-1)
            boxes = targets[i]["boxes"]
            width = images[i].shape[-1]
            flipped = boxes.clone()
            flipped[:, 0] = width - boxes[:, 2]
            flipped[:, 2] = width - boxes[:, 0]
            targets[i] = {**targets[i], "boxes": flipped}


def _anchor_generator(arch: str, backbone: str, sizes: tuple[float, ...]):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if backbone == "convnet4_fpn":
        from klhuber.detection.backbones import convnet4_anchor_generator

        return convnet4_anchor_generator(arch, sizes)
    if arch == "retinanet":
        per_level = tuple(tuple(int(round(s * 2 ** (k / 3))) for k in range(3)) for s in sizes)
        return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(sizes))
    if backbone == "mobilenet_v3_fpn":  # 3 maps, all sizes on each (torchvision's layout)
        per_level = (tuple(int(round(s)) for s in sizes),) * 3
        return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * 3)
    if backbone.startswith("vgg16"):  # one map
        return AnchorGenerator((tuple(int(round(s)) for s in sizes),), ((0.5, 1.0, 2.0),))
    per_level = tuple((int(round(s)),) for s in sizes)
    return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(sizes))


def build_detector(config: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``config`` through :func:`klhuber.detection.models.build_model`."""
    from klhuber.detection import build_model

    kwargs: dict[str, Any] = {"min_size": config.min_size, "max_size": config.max_size}
    kwargs.update(config.model_kwargs)
    if config.anchor_sizes is not None:
        key = "anchor_generator" if config.arch == "retinanet" else "rpn_anchor_generator"
        kwargs[key] = _anchor_generator(config.arch, config.backbone, config.anchor_sizes)
    from klhuber.detection import load_weights

    model = build_model(config.arch, num_classes, config.box_loss, backbone=config.backbone,
                        **kwargs)
    if config.box_head_dim is not None and config.arch == "fasterrcnn":
        # A narrower two-layer box head (torchvision's is 1024 wide): cheap CPU profiles.
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

        channels = model.backbone.out_channels
        model.roi_heads.box_head = TwoMLPHead(channels * 7 * 7, config.box_head_dim)
        model.roi_heads.box_predictor = FastRCNNPredictor(config.box_head_dim, num_classes)
    if config.weights_path is not None:
        load_weights(model, config.weights_path)
    return model


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT


#: Keys every checkpoint of :func:`train` holds.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "iteration", "nonfinite",
                   "num_classes", "config")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`train` (``torch.load(..., weights_only=True)``).

    An empty, truncated or foreign file raises :class:`CheckpointError` naming the file and
    what to do; a missing one ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    advice = (f"delete it (or train again with --overwrite) to start the run afresh, or "
              f"restore {path.name} from a copy")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # EOFError, RuntimeError (zip), UnpicklingError, ...
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete "
                              f"({type(error).__name__}: {error}); {advice}") from error
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of klhuber.detection.engine.train "
                              f"(missing {', '.join(missing)}); {advice}")
    return state


#: TrainConfig fields that do not change what a run computes (where it writes, how it shows
#: progress, how many threads or workers load the data, when it stops or saves): a resumed
#: run may change them.  Every other field must match the checkpoint's.
RUNTIME_FIELDS = frozenset({
    "out_dir", "resume", "overwrite", "stop_at", "progress", "threads", "workers",
    "cache_images", "device", "log_every", "checkpoint_every", "max_nonfinite",
    "flush_denormal",
})


def config_differences(stored: dict[str, Any], requested: TrainConfig) -> list[str]:
    """The options (other than :data:`RUNTIME_FIELDS`) in which ``requested`` differs from a
    checkpoint's stored configuration ``stored``, as ``"name (checkpoint X, requested Y)"``."""
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING
                         else f.default_factory())  # type: ignore[misc]
                for f in dataclasses.fields(TrainConfig)}
    wanted = json.loads(json.dumps(requested.as_dict()))
    diffs = []
    for name in sorted(set(wanted) | set(stored)):
        if name in RUNTIME_FIELDS:
            continue
        old = json.loads(json.dumps(stored.get(name, defaults.get(name)), default=list))
        new = wanted.get(name, defaults.get(name))
        if name in ("data_root", "weights_path") and old and new:
            old, new = str(Path(old).absolute()), str(Path(new).absolute())
        if old != new:
            diffs.append(f"{name} (checkpoint {old!r}, requested {new!r})")
    return diffs


def _stale_temporaries(out_dir: Path) -> list[Path]:
    """Temporary files of interrupted atomic saves (:func:`klhuber.results.atomic_write_bytes`)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for name in (CHECKPOINT, METRICS)
                  for p in out_dir.glob(f".{name}.*.tmp") if p.is_file())


def _check_out_dir(config: TrainConfig) -> None:
    """Refuse a folder that holds a run unless ``resume`` or ``overwrite`` (every rank)."""
    out_dir = Path(config.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunExistsError(f"output folder {out_dir} is a file, not a folder")
    if config.resume or config.overwrite or not out_dir.is_dir():
        return
    stale = set(_stale_temporaries(out_dir))
    content = sorted(p.name for p in out_dir.iterdir() if p not in stale)
    if content:
        shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
        raise RunExistsError(
            f"output folder {out_dir} is not empty ({shown}); pass --resume to continue the "
            f"run in it, --overwrite to replace it, or choose another --out")


def _prepare_out_dir(config: TrainConfig, log: Callable[[str], None]) -> None:
    """Rank 0, before any work: create the folder, check it is writable, remove stale
    temporary files and, with ``overwrite``, the previous run's checkpoint and metrics."""
    import tempfile

    out_dir = Path(config.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=f".{CHECKPOINT}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(f"output folder {out_dir} is not writable "
                              f"({error.strerror or error}); choose another --out") from error
    for stale in _stale_temporaries(out_dir):
        stale.unlink(missing_ok=True)
        log(f"removed {stale}, a temporary file left by an interrupted save")
    if config.overwrite:
        for name in (CHECKPOINT, METRICS):
            if (out_dir / name).exists():
                (out_dir / name).unlink()
                log(f"--overwrite: removed the previous run's {out_dir / name}")


class _StopSignals:
    """SIGTERM/SIGINT handlers that ask the training loop to stop after the current
    iteration (a second signal interrupts at once).  Installed from the main thread only."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._previous[signum] = signal.signal(signum, self._handle)
                except (ValueError, OSError):  # pragma: no cover - exotic platforms
                    pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@dataclass
class _Dist:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        here = True
    return _Dist(world, rank, local_rank, here)


def _resolve_device(config: TrainConfig, ctx: _Dist) -> torch.device:
    if config.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
        if ctx.world_size > 1:
            return torch.device("cuda", ctx.local_rank)
    return torch.device(config.device)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _rng_state(flip_gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "flip": flip_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], flip_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    flip_gen.set_state(state["flip"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _truncate_metrics(path: Path, last_iter: int) -> None:
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("iter", 0) <= last_iter:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the detector of ``config``; returns a summary (iterations, losses, timings).

    Writes ``checkpoint.pt`` and ``metrics.jsonl`` into ``config.out_dir`` (rank 0).  With
    ``config.resume`` and an existing checkpoint, continues from it (a finished run returns at
    once); the checkpoint's configuration must then match ``config`` except for
    :data:`RUNTIME_FIELDS`, else :class:`RunExistsError` names the differing options.  Without
    ``resume`` a non-empty ``out_dir`` raises :class:`RunExistsError` unless
    ``config.overwrite``, which replaces the previous checkpoint and metrics.
    ``config.stop_at`` stops after that many iterations (with a checkpoint), as if the
    run had been interrupted there.  SIGTERM or SIGINT (from the main thread) stop the run after
    the current iteration with a checkpoint and raise :class:`TrainingInterrupted`.
    """
    from torch.utils.data import BatchSampler, DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from klhuber.detection.data import CocoDetection, SkipSampler, coco_split_paths, collate

    log = log or (lambda message: None)
    signals = _StopSignals()
    ctx = _init_distributed(config.device)
    try:
        device = _resolve_device(config, ctx)
        if config.flush_denormal:
            # Tiny weights/gradients of a from-scratch detector hit float denormals, which
            # make CPU kernels 10-30x slower; flushing them to zero changes nothing else.
            torch.set_flush_denormal(True)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        out_dir = Path(config.out_dir)
        ckpt_file = checkpoint_path(out_dir)
        metrics_file = out_dir / METRICS
        _check_out_dir(config)
        resume_state = None
        if config.resume and ckpt_file.exists():
            resume_state = load_checkpoint(ckpt_file)
            stored = resume_state["config"]
            diffs = config_differences(json.loads(stored) if isinstance(stored, str) else stored,
                                       config)
            if diffs:
                raise RunExistsError(
                    f"cannot resume {ckpt_file}: the requested configuration differs from the "
                    f"checkpoint's in {'; '.join(diffs)}. Resume with the checkpoint's options, "
                    f"or pass --overwrite (or another --out) to start a new run")
        img_dir, ann_file = coco_split_paths(config.data_root, "train", config.data_layout)
        if ctx.main:
            _prepare_out_dir(config, log)
        if ctx.world_size > 1:
            torch.distributed.barrier()  # every rank checked the folder before rank 0 writes

        dataset = CocoDetection(img_dir, ann_file, train=True, cache=config.cache_images,
                                max_images=config.max_train_images, fix_sizes=config.fix_sizes)
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=config.seed, drop_last=True)
        iters_per_epoch = len(sampler) // config.batch_size
        if iters_per_epoch < 1:
            raise ValueError(
                f"batch_size {config.batch_size} x {ctx.world_size} process(es) exceeds the "
                f"{len(dataset)} training images")

        torch.manual_seed(config.seed)  # same initial weights on every rank
        model = build_detector(config, dataset.num_classes).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        schedule = (config.warmup_iters, config.warmup_factor, config.milestones, config.gamma,
                    config.lr_schedule, config.iters)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: lr_factor(it, *schedule))
        amp_dtype = _amp_dtype(config.amp, device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        flip_gen = torch.Generator().manual_seed(config.seed * 7919 + 17 + ctx.rank)
        torch.manual_seed(config.seed * 104729 + ctx.rank)  # model sampling, per rank
        iteration, nonfinite = 0, 0
        wall_before = 0.0

        if resume_state is not None:
            state = resume_state
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                scaler.load_state_dict(state["scaler"])
                _set_rng_state(state["rng"], flip_gen)
            except (RuntimeError, ValueError, KeyError, TypeError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise CheckpointError(
                    f"checkpoint {ckpt_file} does not fit the model and optimiser of the "
                    f"requested configuration ({type(error).__name__}: {first}); resume with "
                    f"the options it was trained with, or pass --overwrite (or another --out) "
                    f"to start a new run") from error
            del resume_state
            iteration = int(state["iteration"])
            nonfinite = int(state["nonfinite"])
            wall_before = float(state.get("wall_time_s", 0.0))
            log(f"resumed from {ckpt_file} at iteration {iteration}")
            if ctx.main:
                _truncate_metrics(metrics_file, iteration)
        elif ctx.main and metrics_file.exists():
            metrics_file.unlink()

        train_model: nn.Module = model
        if ctx.world_size > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        def save(final: bool = False) -> None:
            if not ctx.main:
                return
            _save_checkpoint(ckpt_file, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(flip_gen),
                "iteration": iteration,
                "nonfinite": nonfinite,
                "num_classes": dataset.num_classes,
                "class_names": list(dataset.class_names),
                "label_to_cat": {str(k): v for k, v in dataset.label_to_cat.items()},
                "config": json.dumps(config.as_dict()),
                "wall_time_s": wall_before + (time.perf_counter() - start),
                "final": final,
            })

        def interrupted(saved: bool) -> None:
            """Save (unless just saved) and stop with :class:`TrainingInterrupted`."""
            import signal

            if not saved:
                save(final=iteration == config.iters)
            if progress is not None:
                progress.close()
            signum = signals.signum or signal.SIGTERM
            message = (f"{signal.Signals(signum).name} received: stopped after iteration "
                       f"{iteration} with a checkpoint in {ckpt_file}; continue with --resume")
            log(message)
            raise TrainingInterrupted(message, signum=signum, checkpoint=str(ckpt_file),
                                      iteration=iteration)

        def _batches(loader: Any):
            """The loader's batches; ends early when a stop signal killed its workers."""
            nonlocal fetch_failed
            iterator = iter(loader)
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                except Exception as error:
                    if ctx.world_size == 1 and signals.signum is not None:
                        fetch_failed = error
                        return
                    raise
                yield batch

        fetch_failed: Exception | None = None
        start = time.perf_counter()
        stop = config.iters if config.stop_at is None else config.stop_at
        progress = None
        if ctx.main and config.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=stop, initial=iteration, desc=f"{config.arch}/{config.box_loss}",
                            leave=False, dynamic_ncols=True)
        loader_gen = torch.Generator().manual_seed(config.seed)
        window: dict[str, float] = {}
        window_n = 0
        last_losses: dict[str, float] = {}
        t_window = time.perf_counter()
        train_model.train()
        signals.__enter__()
        while iteration < stop:
            epoch, position = divmod(iteration, iters_per_epoch)
            sampler.set_epoch(epoch)
            batches = BatchSampler(SkipSampler(sampler, position * config.batch_size),
                                   config.batch_size, drop_last=True)
            loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                num_workers=config.workers, generator=loader_gen,
                                pin_memory=device.type == "cuda",
                                persistent_workers=False)
            fetch_failed = None
            for images, targets in _batches(loader):
                images, targets = list(images), list(targets)
                random_horizontal_flip(images, targets, config.hflip, flip_gen)
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()}
                           for t in targets]
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                    enabled=amp_dtype is not None):
                    loss_dict = train_model(images, targets)
                loss = sum(loss_dict.values())
                # [non-finite loss, stop signal received], summed over the processes
                flags = torch.tensor([0.0 if bool(torch.isfinite(loss)) else 1.0,
                                      0.0 if signals.signum is None else 1.0], device=device)
                if ctx.world_size > 1:
                    torch.distributed.all_reduce(flags)
                optimizer.zero_grad(set_to_none=True)
                skipped = bool(flags[0].item() > 0)
                stop_requested = bool(flags[1].item() > 0)
                if not skipped:
                    scaler.scale(loss).backward()
                    if scaler.is_enabled():
                        scaler.unscale_(optimizer)
                    max_norm = config.clip_grad_norm or math.inf
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                    if scaler.is_enabled():
                        scaler.step(optimizer)  # skips the step itself on inf/nan gradients
                        scaler.update()
                    elif bool(torch.isfinite(grad_norm)):
                        optimizer.step()
                    else:
                        skipped = True
                if skipped:
                    nonfinite += 1
                    optimizer.zero_grad(set_to_none=True)
                    log(f"iteration {iteration}: non-finite loss or gradient, step skipped "
                        f"({nonfinite} so far)")
                with warnings.catch_warnings():  # a skipped step skips optimizer.step()
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()
                iteration += 1
                values = {k: float(v.detach()) for k, v in loss_dict.items()}
                values["loss"] = float(loss.detach())
                if not skipped:
                    for k, v in values.items():
                        window[k] = window.get(k, 0.0) + v
                    window_n += 1
                    last_losses = values
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
                if ctx.main and (iteration % config.log_every == 0 or iteration == stop):
                    elapsed = time.perf_counter() - t_window
                    record = {"iter": iteration, "epoch": epoch,
                              "lr": optimizer.param_groups[0]["lr"],
                              "nonfinite": nonfinite,
                              "images_per_s": round(window_n * config.batch_size
                                                    * ctx.world_size / max(elapsed, 1e-9), 3)}
                    record.update({k: v / max(window_n, 1) for k, v in window.items()})
                    with metrics_file.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                    window, window_n, t_window = {}, 0, time.perf_counter()
                if nonfinite > config.max_nonfinite:
                    save()
                    raise NonFiniteLossError(
                        f"{nonfinite} steps with a non-finite loss or gradient (max_nonfinite="
                        f"{config.max_nonfinite}); last losses {values}")
                saved = iteration % config.checkpoint_every == 0 or iteration == stop
                if saved:
                    save(final=iteration == config.iters)
                if ctx.world_size == 1 and signals.signum is not None:
                    stop_requested = True  # also a signal that came after the flags were read
                if stop_requested:
                    interrupted(saved)
                if iteration >= stop:
                    break
            if fetch_failed is not None:
                interrupted(False)  # loader workers stopped by the signal: state is consistent
        if progress is not None:
            progress.close()
        if ctx.world_size > 1:
            torch.distributed.barrier()
        return {
            "iterations": iteration,
            "finished": iteration >= config.iters,
            "nonfinite_steps": nonfinite,
            "iters_per_epoch": iters_per_epoch,
            "epochs": iteration / iters_per_epoch,
            "train_images": len(dataset),
            "last_losses": last_losses,
            "wall_time_s": wall_before + (time.perf_counter() - start),
            "world_size": ctx.world_size,
            "device": str(device),
            "checkpoint": str(ckpt_file),
            "model": model,
        }
    finally:
        signals.__exit__()
        if ctx.initialised_here:
            torch.distributed.destroy_process_group()
