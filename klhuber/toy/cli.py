r"""The command line ``klhuber toy --profile quick|full --device cpu|cuda --out DIR``."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from klhuber.toy._common import _check_positive_int
from klhuber.toy.data import FAMILIES, PAPER_FAMILIES
from klhuber.toy.experiment import PROFILES, get_config, run
from klhuber.toy.gd import StoppedEarly
from klhuber.toy.plots import plot_fig2

__all__ = ["configure_parser"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``klhuber toy --profile quick|full --device cpu|cuda --out DIR``."""
    parser.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", default="results/toy", help="output folder")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="GD iterations")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--no-gd", action="store_true",
                        help="exact solver and theory only (the part of 'full' a CPU runs in "
                             "minutes); writes toy_<profile>_exact.json")
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore GD checkpoints of an earlier interrupted run")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--stop-after-s", type=float, default=None, metavar="SECONDS",
                        help="start no new GD chunk after SECONDS; finished chunks stay in the "
                             "checkpoints (re-run the same command to resume) and the final "
                             "JSON is not written")
    parser.set_defaults(func=_cli_main)


def _cli_main(args: argparse.Namespace) -> int:
    import shutil
    import sys

    from klhuber.results import atomic_write_bytes, save_results

    device = args.device
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    overrides: dict[str, Any] = {}
    if args.families:
        overrides["families"] = tuple(args.families)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(_check_positive_int(args.seeds, "--seeds")))
    if args.no_gd:
        overrides.update(gd_losses=(), extra_gd_bases=())
    cfg = get_config(args.profile, **overrides)
    stem = args.profile + ("_exact" if args.no_gd else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoints" / stem
    if args.no_resume and ckpt.exists():
        shutil.rmtree(ckpt)
    t0 = time.perf_counter()
    deadline = None
    if args.stop_after_s is not None:
        if not args.stop_after_s >= 0:
            raise SystemExit(f"--stop-after-s must be >= 0, got {args.stop_after_s}")
        deadline = time.monotonic() + args.stop_after_s
    try:
        payload = run(args.profile, device, config=cfg, progress=not args.no_progress,
                      checkpoint_dir=ckpt, log=lambda s: print(s, flush=True), deadline=deadline)
    except StoppedEarly as exc:
        print(f"stopped early after {time.perf_counter() - t0:.0f} s (--stop-after-s "
              f"{args.stop_after_s:g}): {exc}. Checkpoints kept in {ckpt}; run the same command "
              f"again to resume. {out / f'toy_{stem}.json'} was NOT written.", flush=True)
        return 0
    payload["profile"] = args.profile
    wall = time.perf_counter() - t0
    command = "klhuber toy " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "klhuber toy"
    path = save_results(out / f"toy_{stem}.json", payload, command=command,
                        device=device, wall_time_s=wall)
    import matplotlib

    matplotlib.use("Agg")
    from klhuber.plotting import use_style

    use_style(svg=False)
    figures = {f"fig2_{stem}": plot_fig2(
        payload, title=f"Figure 2 ({args.profile} profile, {device})")}
    if set(cfg.families) - set(PAPER_FAMILIES):
        figures[f"fig2_all_families_{stem}"] = plot_fig2(
            payload, families=cfg.families, title=f"All noise families ({args.profile} profile)")
    for name, fig in figures.items():
        for ext in ("png", "svg"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150)
            atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
    shutil.rmtree(ckpt, ignore_errors=True)
    print(json.dumps({"results": str(path), "wall_time_s": round(wall, 1),
                      "timings": {k: round(v, 1) for k, v in payload["timings"].items()}}))
    return 0
