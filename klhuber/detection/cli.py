"""``klhuber detect {train,eval,score,synth,experiment}``: detectors with the paper's box losses.

Examples::

    klhuber detect synth data/shapes --image-size 128 --num-train 4000 --noise-scale 0.1
    klhuber detect train --data-root /data/coco --arch fasterrcnn --backbone vgg16 \\
        --box-loss experiment_c --iters 490000 --lr 0.001 --milestones 350000 --out runs/c
    torchrun --nproc_per_node 8 -m klhuber detect train --data-root /data/coco ... --device cuda
    klhuber detect eval runs/c/checkpoint.pt --output results/c.json
    klhuber detect score --gt /data/coco/annotations/instances_val2017.json --predictions dt.json
    klhuber detect experiment --profile full --device cuda --jobs 4

The flags of ``detect train`` are made from the fields of
:class:`klhuber.detection.config.TrainConfig` (:func:`add_config_arguments`): same names,
defaults, ranges and help.  ``detect train`` refuses an ``--out`` folder that already holds something unless given
``--resume`` (continue the run; its options must match the checkpoint's) or ``--overwrite``
(replace the run).  SIGTERM / Ctrl-C stop a run after the current iteration with a checkpoint
(exit status 128 + the signal number).  Errors are one line, ``klhuber detect ...: error: ...``,
with exit status 2 (set ``KLHUBER_TRACEBACK=1`` for the full traceback).

``--data-root`` takes a COCO 2017 (``train2017/``, ``val2017/``, ``annotations/``), COCO 2014
or synthetic layout (:func:`klhuber.detection.data.coco_split_paths`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["add_config_arguments", "configure_parser"]


def _error_line(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)


def _friendly(func: Callable[[argparse.Namespace], int], prog: str
              ) -> Callable[[argparse.Namespace], int]:
    """Run ``func``, turning validation errors into argparse-style one-liners (exit 2)."""
    import os

    def wrapped(args: argparse.Namespace) -> int:
        from klhuber.detection.engine import (
            CheckpointError,
            NonFiniteLossError,
            TrainingInterrupted,
        )

        try:
            return func(args)
        except TrainingInterrupted as stop:
            print(f"{prog}: {stop}", file=sys.stderr)
            return 128 + stop.signum
        except (ValueError, CheckpointError, FileNotFoundError, PermissionError,
                NonFiniteLossError) as error:
            if os.environ.get("KLHUBER_TRACEBACK"):
                raise
            _error_line(prog, " ".join(str(error).split()))
            return 1 if isinstance(error, NonFiniteLossError) else 2

    wrapped.__name__ = getattr(func, "__name__", "command")
    return wrapped


def _bounded(kind: type, low: float | None = None, high: float | None = None, *,
             low_open: bool = False, high_open: bool = False, what: str = ""
             ) -> Callable[[str], Any]:
    """An argparse ``type`` that converts with ``kind`` and checks an interval."""
    import math

    lo_b, hi_b = "(" if low_open else "[", ")" if high_open else "]"
    interval = (f"{'(-inf' if low is None else lo_b + str(low)}, "
                f"{'inf)' if high is None else str(high) + hi_b}")

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {kind.__name__} value: {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text}")
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            raise argparse.ArgumentTypeError(f"must be in {interval}{what}, got {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def _check_amp(amp: str, device: str) -> None:
    if amp in ("bf16", "fp16") and not str(device).startswith("cuda"):
        raise ValueError(f"--amp {amp} needs a CUDA device (--device cuda), got --device "
                         f"{device}; use --amp none (or auto, which is none off CUDA)")


def _command() -> str:
    return "klhuber detect " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else sys.argv[1:])


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _train(args: argparse.Namespace) -> int:
    from klhuber.detection.config import TrainConfig
    from klhuber.detection.engine import train
    from klhuber.detection.evaluate import ap_text, evaluate_checkpoint

    _check_amp(args.amp, args.device)
    config = TrainConfig(**{f.name: getattr(args, f.name)
                            for f in dataclasses.fields(TrainConfig)})
    summary = train(config, log=lambda m: print(m, file=sys.stderr))
    summary.pop("model")
    rank0 = summary.get("world_size", 1) == 1 or _rank() == 0
    if rank0:
        print(json.dumps({k: v for k, v in summary.items()}, default=str))
    if args.eval and summary["finished"] and rank0:
        payload = evaluate_checkpoint(summary["checkpoint"], device=args.device,
                                      batch_size=args.eval_batch_size, amp=args.amp,
                                      output=args.output, command=_command())
        print(ap_text(payload["metrics"]))
    return 0


def _preset(text: str) -> str:
    from klhuber.interpret import get_preset

    try:
        get_preset(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "ints": _ints, "floats": _floats, "json": _json_object, "str": str,
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per field of :class:`klhuber.detection.config.TrainConfig`, made from the
    field's default and metadata (help, range, choices; booleans that default to true get a
    ``--no-...`` flag), so that the command line and the library offer the same options with
    the same defaults."""
    from klhuber.detection.config import TrainConfig

    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        help_text = meta.get("help") or None
        if isinstance(default, bool):
            if default:
                flag = "--no-" + flag.removeprefix("--")
                target.add_argument(flag, dest=f.name, action="store_false", help=help_text)
            else:
                target.add_argument(flag, dest=f.name, action="store_true", help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if meta.get("required"):
            kwargs["required"] = True
            del kwargs["default"]
        kind = meta.get("kind") or type(default).__name__
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        elif f.name == "box_loss":
            kwargs["type"] = _preset
        elif kind in ("int", "float"):
            kwargs["type"] = _bounded(int if kind == "int" else float, meta.get("low"),
                                      meta.get("high"), low_open=meta.get("low_open", False),
                                      high_open=meta.get("high_open", False))
        elif kind in _CONVERTERS:
            kwargs["type"] = _CONVERTERS[kind]
        target.add_argument(flag, **kwargs)


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _eval(args: argparse.Namespace) -> int:
    from klhuber.detection.evaluate import ap_text, evaluate_checkpoint

    _check_amp(args.amp, args.device)
    payload = evaluate_checkpoint(args.checkpoint, data_root=args.data_root, split=args.split,
                                  layout=args.layout, device=args.device,
                                  batch_size=args.batch_size, amp=args.amp, output=args.output,
                                  command=_command(), progress=not args.no_progress,
                                  fix_sizes=True if args.fix_sizes else None)
    print(ap_text(payload["metrics"]))
    if args.output:
        print(f"results written to {args.output}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from klhuber.detection.evaluate import ap_text, score_predictions

    metrics = score_predictions(args.gt, args.predictions)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(ap_text(metrics))
    if args.output:
        from klhuber.results import save_results

        save_results(args.output, {"metrics": metrics, "gt": str(args.gt),
                                   "predictions": str(args.predictions)}, command=_command())
        print(f"results written to {args.output}", file=sys.stderr)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from klhuber.detection.synthetic import ShapesSpec, generate_shapes

    spec = ShapesSpec(image_size=args.image_size, num_train=args.num_train,
                      num_val=args.num_val, noise_scale=args.noise_scale, noise=args.noise,
                      min_objects=args.min_objects, max_objects=args.max_objects,
                      min_box=args.min_box, max_box=args.max_box, clutter=args.clutter,
                      seed=args.seed)
    info = generate_shapes(args.root, spec, workers=args.workers, progress=True)
    print(json.dumps(info["files"], indent=2))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from klhuber.detection import experiments as ex

    if args.list:
        for spec in ex.profile_runs(args.profile):
            done = ex.result_path(spec, args.results_dir).exists()
            print(f"{'done' if done else 'todo'}  {spec.run_id}")
        return 0
    shard = None
    if args.shard:
        try:
            i, n = (int(v) for v in args.shard.split("/"))
        except ValueError:
            i, n = -1, 0
        if not 0 <= i < n:
            raise ValueError(f"--shard must be i/n with 0 <= i < n, got {args.shard!r}")
        shard = (i, n)
    overrides: dict[str, Any] | None = args.overrides or None
    results = ex.run_experiment(
        args.profile, results_dir=args.results_dir, data_dir=args.data_dir,
        work_dir=args.work_dir, device=args.device, jobs=args.jobs, shard=shard,
        stop_after_s=args.stop_after_s, archs=args.arch, presets=args.preset,
        noise=args.noise, seeds=args.seed, overrides=overrides, command=_command(),
        log=lambda m: print(m, file=sys.stderr, flush=True))
    if shard is None:
        total = len(ex.select_runs(ex.profile_runs(args.profile), args.arch, args.preset,
                                   args.noise, args.seed))
        print(f"{len(results)}/{total} runs of profile {args.profile!r} have results")
        for r in results:
            m = r["metrics"]
            print(f"{r['run_id']:<50} AP {100 * m['AP']:5.1f}  AP50 {100 * m['AP50']:5.1f}"
                  f"  AP75 {100 * m['AP75']:5.1f}")
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``train``, ``eval``, ``score``, ``synth`` and ``experiment`` sub-commands."""
    from klhuber.detection.experiments import (
        DEFAULT_DATA_DIR,
        DEFAULT_RESULTS_DIR,
        DEFAULT_WORK_DIR,
        PROFILES,
    )

    sub = parser.add_subparsers(dest="detect_command", metavar="SUBCOMMAND")

    t = sub.add_parser("train", help="train a detector (torchrun for several processes)")
    add_config_arguments(t)
    t.add_argument("--eval", action="store_true", help="evaluate on val when finished")
    t.add_argument("--eval-batch-size", type=_bounded(int, 1), default=8)
    t.add_argument("--output", default=None, help="results JSON of --eval")
    t.set_defaults(func=_friendly(_train, t.prog))

    e = sub.add_parser("eval", help="evaluate a checkpoint with COCOeval")
    e.add_argument("checkpoint")
    e.add_argument("--data-root", default=None, help="default: the one the model trained on")
    e.add_argument("--split", default="val", choices=("train", "val"))
    e.add_argument("--layout", default=None, choices=("auto", "2017", "2014", "synthetic"))
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", type=_bounded(int, 1), default=8)
    e.add_argument("--amp", default="none", choices=("none", "bf16", "fp16", "auto"))
    e.add_argument("--output", default=None, help="results JSON (with provenance)")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--fix-sizes", action="store_true",
                   help="use the image files' sizes where the JSON's width/height differ")
    e.set_defaults(func=_friendly(_eval, e.prog))

    c = sub.add_parser("score", help="score a COCO results file against an annotation file")
    c.add_argument("--gt", required=True, help="COCO instances JSON (ground truth)")
    c.add_argument("--predictions", required=True,
                   help="COCO results JSON: a list of {image_id, category_id, bbox, score}")
    c.add_argument("--json", action="store_true", help="print all metrics as JSON")
    c.add_argument("--output", default=None, help="results JSON (with provenance)")
    c.set_defaults(func=_friendly(_score, c.prog))

    s = sub.add_parser("synth", help="generate a synthetic COCO-format shapes data set")
    s.add_argument("root")
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--num-train", type=int, default=1000)
    s.add_argument("--num-val", type=int, default=200)
    s.add_argument("--noise-scale", type=float, default=0.0,
                   help="per-edge label noise on train boxes, relative to box size")
    s.add_argument("--noise", default="laplace", choices=("laplace", "gaussian"))
    s.add_argument("--min-objects", type=int, default=1)
    s.add_argument("--max-objects", type=int, default=5)
    s.add_argument("--min-box", type=float, default=0.12)
    s.add_argument("--max-box", type=float, default=0.5)
    s.add_argument("--clutter", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=0)
    s.set_defaults(func=_friendly(_synth, s.prog))

    x = sub.add_parser("experiment", help="run / continue a profile's grid of runs")
    x.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    x.add_argument("--device", default="cpu")
    x.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR))
    x.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    x.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR))
    x.add_argument("--jobs", type=_bounded(int, 1), default=1, help="worker processes (e.g. 4 on one GPU)")
    x.add_argument("--shard", default=None, help="i/n: run every n-th pending run from i")
    x.add_argument("--stop-after-s", type=_bounded(float, 0), default=None,
                   help="do not start new runs after this many seconds")
    x.add_argument("--arch", action="append", default=None)
    x.add_argument("--preset", action="append", default=None)
    x.add_argument("--noise", action="append", type=float, default=None)
    x.add_argument("--seed", action="append", type=int, default=None)
    x.add_argument("--overrides", type=_json_object, default=None,
                   help='JSON of training-setting overrides, e.g. \'{"iters": 4}\'')
    x.add_argument("--list", action="store_true", help="list the grid and what is done")
    x.set_defaults(func=_friendly(_experiment, x.prog))
