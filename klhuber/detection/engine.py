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

import contextlib
import io
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from klhuber.detection.config import (
    AMP_MODES,
    LR_SCHEDULES,
    RUNTIME_FIELDS,
    TrainConfig,
    config_differences,
)
from klhuber.results import atomic_write_bytes, atomic_write_text

__all__ = [
    "CHECKPOINT_KEYS",
    "CheckpointError",
    "Checkpointer",
    "MetricsWriter",
    "NonFiniteLossError",
    "RunExistsError",
    "RunLockedError",
    "StepResult",
    "TrainingInterrupted",
    "TrainingRun",
    "amp_dtype",
    "build_detector",
    "checkpoint_path",
    "load_checkpoint",
    "lr_factor",
    "random_horizontal_flip",
    "run_lock",
    "setup_training",
    "train",
    "train_one_step",
]

# Importable from here as before (documented in klhuber.detection.config).
_REEXPORTED = (AMP_MODES, RUNTIME_FIELDS, TrainConfig, config_differences)
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """Raised when more than ``max_nonfinite`` steps had a non-finite loss or gradient."""


class RunExistsError(ValueError):
    """The output folder already holds a run, and neither ``resume`` nor ``overwrite`` was
    given; or ``resume`` was given with a configuration that differs from the checkpoint's."""


class RunLockedError(RunExistsError):
    """Another process is training the run in this output folder right now (it holds the
    folder's lock file); two writers would interleave their checkpoints and metrics."""


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


def build_detector(config: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``config`` through :func:`klhuber.detection.models.build_model`."""
    from klhuber.detection.models import build_model

    kwargs: dict[str, Any] = {"min_size": config.min_size, "max_size": config.max_size}
    kwargs.update(config.model_kwargs)
    box_head_dim = config.box_head_dim if config.arch == "fasterrcnn" else None
    return build_model(config.arch, num_classes, config.box_loss, backbone=config.backbone,
                       weights_path=config.weights_path, anchor_sizes=config.anchor_sizes,
                       box_head_dim=box_head_dim, **kwargs)


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


def _stale_temporaries(out_dir: Path) -> list[Path]:
    """Temporary files of interrupted atomic saves (:func:`klhuber.results.atomic_write_bytes`)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for name in (CHECKPOINT, METRICS)
                  for p in out_dir.glob(f".{name}.*.tmp") if p.is_file())


#: The lock file :func:`train` holds (``flock``, POSIX) in its output folder while it runs.
LOCK = ".train.lock"
# Output folders whose lock this process holds: a train() inside run_lock() does not lock again.
_HELD: set[str] = set()


@contextlib.contextmanager
def _run_lock(out_dir: Path, enabled: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir``'s :data:`LOCK` file for the duration, or raise
    :class:`RunLockedError` at once if another process holds it.  The operating system
    releases the lock when its holder exits, so a crashed run leaves no stale lock.  Where
    there is no ``fcntl`` (not POSIX), or the folder cannot be made, nothing is locked (the
    folder checks that follow give the error).  A folder this process holds already is not
    locked again (the lock is per process)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None
    key = os.path.abspath(out_dir)
    if key in _HELD:
        yield
        return
    handle = None
    if enabled and fcntl is not None and not (out_dir.exists() and not out_dir.is_dir()):
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            handle = open(out_dir / LOCK, "a+", encoding="utf-8")  # noqa: SIM115
        except OSError:
            handle = None
    try:
        if handle is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunLockedError(
                    f"{out_dir} is being trained right now by {holder}; wait for it to finish "
                    f"or stop it (SIGTERM checkpoints it), then resume") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            _HELD.add(key)
        yield
    finally:
        if handle is not None:
            _HELD.discard(key)
            handle.close()


def _check_before_lock(config: TrainConfig, ctx: _Dist) -> None:
    """The checks of :func:`setup_training` that need no output folder (the device, the
    training data), run before the lock makes the folder, so that a configuration error
    leaves no folder behind."""
    from klhuber.detection.data import coco_split_paths

    _resolve_device(config, ctx)
    coco_split_paths(config.data_root, "train", config.data_layout)


@contextlib.contextmanager
def run_lock(config: TrainConfig) -> Iterator[None]:
    """Hold the lock of ``config.out_dir`` (the one :func:`train` takes) for the duration, so
    that a caller can evaluate and save a run before another runner may take the folder over;
    :func:`train` inside does not lock again.  Raises :class:`RunLockedError` at once when
    another process holds it.  The device and the training data are checked first, so that a
    configuration error raises before the folder is made."""
    _check_before_lock(config, _Dist())
    with _run_lock(Path(config.out_dir), enabled=True):
        yield


def _check_out_dir(config: TrainConfig) -> None:
    """Refuse a folder that holds a run unless ``resume`` or ``overwrite`` (every rank)."""
    out_dir = Path(config.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunExistsError(f"output folder {out_dir} is a file, not a folder")
    if config.resume or config.overwrite or not out_dir.is_dir():
        return
    stale = set(_stale_temporaries(out_dir))
    content = sorted(p.name for p in out_dir.iterdir() if p not in stale and p.name != LOCK)
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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (``None``: no autocast, off CUDA too)."""
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


class MetricsWriter:
    """``metrics.jsonl`` of a run (rank 0): one line per ``log_every`` iterations with the mean
    losses of the successful steps since the previous line, the learning rate, the count of
    skipped steps and the throughput."""

    def __init__(self, path: Path, *, batch_size: int, world_size: int, enabled: bool) -> None:
        self.path = path
        self.batch_size = batch_size
        self.world_size = world_size
        self.enabled = enabled
        self.window: dict[str, float] = {}
        self.count = 0
        self.last_losses: dict[str, float] = {}
        self.started = time.perf_counter()

    def start(self, resumed_at: int | None) -> None:
        """Keep the lines up to ``resumed_at`` (a resumed run), or start afresh (``None``)."""
        if not self.enabled:
            return
        if resumed_at is not None:
            _truncate_metrics(self.path, resumed_at)
        elif self.path.exists():
            self.path.unlink()

    def restart_clock(self) -> None:
        self.started = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        """Add the losses of a successful step to the window."""
        for k, v in values.items():
            self.window[k] = self.window.get(k, 0.0) + v
        self.count += 1
        self.last_losses = values

    def write(self, iteration: int, epoch: int, lr: float, nonfinite: int) -> None:
        """Append the window's line and start a new window."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        record = {"iter": iteration, "epoch": epoch, "lr": lr, "nonfinite": nonfinite,
                  "images_per_s": round(self.count * self.batch_size * self.world_size
                                        / max(elapsed, 1e-9), 3)}
        record.update({k: v / max(self.count, 1) for k, v in self.window.items()})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.window, self.count, self.started = {}, 0, time.perf_counter()


class Checkpointer:
    """Atomic ``checkpoint.pt`` of a run (rank 0): model, optimiser, scheduler, scaler, RNG
    states, position, classes and configuration (:data:`CHECKPOINT_KEYS` and more)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def save(self, run: TrainingRun, *, final: bool = False) -> None:
        if not self.enabled:
            return
        dataset = run.dataset
        _save_checkpoint(self.path, {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": _rng_state(run.flip_gen),
            "iteration": run.iteration,
            "nonfinite": run.nonfinite,
            "num_classes": dataset.num_classes,
            "class_names": list(dataset.class_names),
            "label_to_cat": {str(k): v for k, v in dataset.label_to_cat.items()},
            "config": json.dumps(run.config.as_dict()),
            "wall_time_s": run.wall_time_s(),
            "final": final,
        })


@dataclass
class TrainingRun:
    """Everything :func:`setup_training` prepares and the loop advances: the data, the model
    (``train_model`` is its DistributedDataParallel wrapper when there are several processes),
    the optimiser state, the generators and the position."""

    config: TrainConfig
    device: torch.device
    dataset: Any
    sampler: Any
    iters_per_epoch: int
    model: nn.Module
    train_model: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    amp_dtype: torch.dtype | None
    flip_gen: torch.Generator
    world_size: int = 1
    iteration: int = 0
    nonfinite: int = 0
    wall_before: float = 0.0
    started: float = 0.0

    def wall_time_s(self) -> float:
        return self.wall_before + (time.perf_counter() - self.started)


def setup_training(config: TrainConfig, ctx: Any, log: Callable[[str], None]
                   ) -> tuple[TrainingRun, int | None]:
    """Check the folder and the checkpoint, load the data, build the model and the optimiser
    and, with ``resume``, restore them; returns the run and the iteration it resumed at
    (``None`` for a new run).  The order of the random draws is part of the contract: a seed
    gives the same run, resumed or not."""
    from klhuber.detection.data import CocoDetection, coco_split_paths

    device = _resolve_device(config, ctx)
    if config.flush_denormal:
        # Tiny weights/gradients of a from-scratch detector hit float denormals, which
        # make CPU kernels 10-30x slower; flushing them to zero changes nothing else.
        torch.set_flush_denormal(True)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    ckpt_file = checkpoint_path(config.out_dir)
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

    from torch.utils.data.distributed import DistributedSampler

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
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, *schedule))
    dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    flip_gen = torch.Generator().manual_seed(config.seed * 7919 + 17 + ctx.rank)
    torch.manual_seed(config.seed * 104729 + ctx.rank)  # model sampling, per rank
    run = TrainingRun(config, device, dataset, sampler, iters_per_epoch, model, model, params,
                      optimizer, scheduler, scaler, dtype, flip_gen, ctx.world_size)
    resumed_at = None
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
        run.iteration = resumed_at = int(state["iteration"])
        run.nonfinite = int(state["nonfinite"])
        run.wall_before = float(state.get("wall_time_s", 0.0))
        log(f"resumed from {ckpt_file} at iteration {run.iteration}")
    if ctx.world_size > 1:
        run.train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return run, resumed_at


@dataclass
class StepResult:
    """What :func:`train_one_step` did: the losses (``values``, with their sum as ``"loss"``),
    whether the step was skipped (non-finite loss or gradient) and whether any process
    received a stop signal."""

    values: dict[str, float]
    skipped: bool
    stop_requested: bool


def train_one_step(run: TrainingRun, images: list[Tensor], targets: list[dict[str, Tensor]],
                   *, stop_signal: Callable[[], bool] | None = None,
                   log: Callable[[str], None] | None = None) -> StepResult:
    """One SGD step of ``run`` on a batch: flips, forward under autocast, a guard against
    non-finite losses and gradients (agreed between processes, as is a stop signal),
    gradient clipping and the scheduler's step; advances ``run.iteration``.  ``stop_signal()``
    says, after the forward pass, whether this process received a stop signal."""
    config, device, optimizer, scaler = run.config, run.device, run.optimizer, run.scaler
    images, targets = list(images), list(targets)
    random_horizontal_flip(images, targets, config.hflip, run.flip_gen)
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32,
                        enabled=run.amp_dtype is not None):
        loss_dict = run.train_model(images, targets)
    loss = sum(loss_dict.values())
    # [non-finite loss, stop signal received], summed over the processes
    flags = torch.tensor([0.0 if bool(torch.isfinite(loss)) else 1.0,
                          1.0 if stop_signal is not None and stop_signal() else 0.0],
                         device=device)
    if run.world_size > 1:
        torch.distributed.all_reduce(flags)
    optimizer.zero_grad(set_to_none=True)
    skipped = bool(flags[0].item() > 0)
    stop_requested = bool(flags[1].item() > 0)
    if not skipped:
        scaler.scale(loss).backward()
        if scaler.is_enabled():
            scaler.unscale_(optimizer)
        max_norm = config.clip_grad_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, max_norm)
        if scaler.is_enabled():
            scaler.step(optimizer)  # skips the step itself on inf/nan gradients
            scaler.update()
        elif bool(torch.isfinite(grad_norm)):
            optimizer.step()
        else:
            skipped = True
    if skipped:
        run.nonfinite += 1
        optimizer.zero_grad(set_to_none=True)
        if log is not None:
            log(f"iteration {run.iteration}: non-finite loss or gradient, step skipped "
                f"({run.nonfinite} so far)")
    with warnings.catch_warnings():  # a skipped step skips optimizer.step()
        warnings.simplefilter("ignore", UserWarning)
        run.scheduler.step()
    run.iteration += 1
    values = {k: float(v.detach()) for k, v in loss_dict.items()}
    values["loss"] = float(loss.detach())
    return StepResult(values, skipped, stop_requested)


def _batches(loader: Any, world_size: int, signals: _StopSignals,
             failed: list[Exception]) -> Iterator[Any]:
    """The loader's batches; ends early (recording the error) when a stop signal killed its
    workers."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            if world_size == 1 and signals.signum is not None:
                failed.append(error)
                return
            raise
        yield batch


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the detector of ``config``; returns a summary (iterations, losses, timings).

    Writes ``checkpoint.pt`` and ``metrics.jsonl`` into ``config.out_dir`` (rank 0).  With
    ``config.resume`` and an existing checkpoint, continues from it (a finished run returns at
    once); the checkpoint's configuration must then match ``config`` except for
    :data:`klhuber.detection.config.RUNTIME_FIELDS`, else :class:`RunExistsError` names the
    differing options.  Without ``resume`` a non-empty ``out_dir`` raises
    :class:`RunExistsError` unless ``config.overwrite``, which replaces the previous checkpoint
    and metrics.  ``config.stop_at`` stops after that many iterations (with a checkpoint), as
    if the run had been interrupted there.  SIGTERM or SIGINT (from the main thread) stop the
    run after the current iteration with a checkpoint and raise :class:`TrainingInterrupted`.

    The pieces: :func:`setup_training`, :func:`train_one_step`, :class:`MetricsWriter` and
    :class:`Checkpointer`.
    """
    from torch.utils.data import BatchSampler, DataLoader

    from klhuber.detection.data import SkipSampler, collate

    log = log or (lambda message: None)
    signals = _StopSignals()
    # setup_training changes process-wide settings (denormal flushing, intra-op threads) for
    # speed; they are restored on return, so a caller's later float work is unaffected.
    flushing_before = torch.tensor([1e-323], dtype=torch.float64).item() == 0.0
    threads_before = torch.get_num_threads()
    ctx = _init_distributed(config.device)
    lock = contextlib.ExitStack()
    try:
        _check_before_lock(config, ctx)  # a configuration error leaves no folder behind
        lock.enter_context(_run_lock(Path(config.out_dir), enabled=ctx.main))
        run, resumed_at = setup_training(config, ctx, log)
        ckpt_file = checkpoint_path(config.out_dir)
        metrics = MetricsWriter(Path(config.out_dir) / METRICS, batch_size=config.batch_size,
                                world_size=ctx.world_size, enabled=ctx.main)
        metrics.start(resumed_at)
        checkpointer = Checkpointer(ckpt_file, enabled=ctx.main)
        device = run.device

        def interrupted(saved: bool) -> None:
            """Save (unless just saved) and stop with :class:`TrainingInterrupted`."""
            import signal

            if not saved:
                checkpointer.save(run, final=run.iteration == config.iters)
            if progress is not None:
                progress.close()
            signum = signals.signum or signal.SIGTERM
            message = (f"{signal.Signals(signum).name} received: stopped after iteration "
                       f"{run.iteration} with a checkpoint in {ckpt_file}; continue with "
                       f"--resume")
            log(message)
            raise TrainingInterrupted(message, signum=signum, checkpoint=str(ckpt_file),
                                      iteration=run.iteration)

        run.started = time.perf_counter()
        stop = config.iters if config.stop_at is None else config.stop_at
        progress = None
        if ctx.main and config.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=stop, initial=run.iteration,
                            desc=f"{config.arch}/{config.box_loss}", leave=False,
                            dynamic_ncols=True)
        loader_gen = torch.Generator().manual_seed(config.seed)
        metrics.restart_clock()
        run.train_model.train()
        signals.__enter__()
        while run.iteration < stop:
            epoch, position = divmod(run.iteration, run.iters_per_epoch)
            run.sampler.set_epoch(epoch)
            batches = BatchSampler(SkipSampler(run.sampler, position * config.batch_size),
                                   config.batch_size, drop_last=True)
            loader = DataLoader(run.dataset, batch_sampler=batches, collate_fn=collate,
                                num_workers=config.workers, generator=loader_gen,
                                pin_memory=device.type == "cuda", persistent_workers=False)
            fetch_failed: list[Exception] = []
            for images, targets in _batches(loader, ctx.world_size, signals, fetch_failed):
                step = train_one_step(run, images, targets, log=log,
                                      stop_signal=lambda: signals.signum is not None)
                values = step.values
                if not step.skipped:
                    metrics.add(values)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
                iteration = run.iteration
                if iteration % config.log_every == 0 or iteration == stop:
                    metrics.write(iteration, epoch, run.optimizer.param_groups[0]["lr"],
                                  run.nonfinite)
                if run.nonfinite > config.max_nonfinite:
                    checkpointer.save(run)
                    raise NonFiniteLossError(
                        f"{run.nonfinite} steps with a non-finite loss or gradient "
                        f"(max_nonfinite={config.max_nonfinite}); last losses {values}")
                saved = iteration % config.checkpoint_every == 0 or iteration == stop
                if saved:
                    checkpointer.save(run, final=iteration == config.iters)
                stop_requested = step.stop_requested
                if ctx.world_size == 1 and signals.signum is not None:
                    stop_requested = True  # also a signal that came after the flags were read
                if stop_requested:
                    interrupted(saved)
                if iteration >= stop:
                    break
            if fetch_failed:
                interrupted(False)  # loader workers stopped by the signal: state is consistent
        if progress is not None:
            progress.close()
        if ctx.world_size > 1:
            torch.distributed.barrier()
        return {
            "iterations": run.iteration,
            "finished": run.iteration >= config.iters,
            "nonfinite_steps": run.nonfinite,
            "iters_per_epoch": run.iters_per_epoch,
            "epochs": run.iteration / run.iters_per_epoch,
            "train_images": len(run.dataset),
            "last_losses": metrics.last_losses,
            "wall_time_s": run.wall_time_s(),
            "world_size": ctx.world_size,
            "device": str(device),
            "checkpoint": str(ckpt_file),
            "model": run.model,
        }
    finally:
        lock.close()
        signals.__exit__()
        torch.set_flush_denormal(flushing_before)
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)
        if ctx.initialised_here:
            torch.distributed.destroy_process_group()
