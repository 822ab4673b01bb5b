"""The ``klhuber book`` command: ``klhuber book {build,run,html,list}``.

Each action works on the book found from the current directory, or on ``--root``; everything
it generates goes to ``<output>/_build`` (``--output``, default ``<root>/book``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from klhuber.book.runner import PROFILES, _print_timings, chapter_state, run_notebooks
from klhuber.book.site import build, build_html
from klhuber.book.sources import BookError, BookPaths, find_book_root, notebook_stems

__all__ = ["configure_parser"]


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=PROFILES, default="quick",
                        help="quick: minutes on a laptop; full: paper scale (default: quick)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available with --profile full, else cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="re-execute even if the cache is valid")


def _paths_from(args: argparse.Namespace) -> BookPaths:
    root = getattr(args, "root", None)
    if root is not None:
        found = find_book_root(root)
        if found is None or found != Path(root).resolve():
            raise BookError(f"--root {root}: no book there (it needs _toc.yml and notebooks/)")
        root_path = found
    else:
        found = find_book_root()
        if found is None:
            raise BookError("no book found: run klhuber book from a klhuber checkout (or a "
                            "folder inside one) or pass --root <checkout>")
        root_path = found
    output = getattr(args, "output", None)
    return BookPaths(root=root_path,
                     output=Path(output).resolve() if output else root_path / "book")


def _device_from(args: argparse.Namespace) -> str:
    if args.device is not None:
        return args.device
    return _default_device() if args.profile == "full" else "cpu"


def _cmd_build(args: argparse.Namespace) -> int:
    build(profile=args.profile, device=_device_from(args), seed=args.seed, force=args.force,
          paths=_paths_from(args))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    paths = _paths_from(args)
    records = run_notebooks(args.chapters, profile=args.profile, device=_device_from(args),
                            seed=args.seed, force=True if args.force is None else args.force,
                            paths=paths)
    _print_timings(records)
    return 0


def _cmd_html(args: argparse.Namespace) -> int:
    build_html(_paths_from(args))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    paths = _paths_from(args)
    for stem in notebook_stems(paths):
        state, meta = chapter_state(stem, paths)
        text = state
        if meta and state in ("current", "stale"):
            text = (f"{meta['profile']}/{meta['device']}, {meta['seconds']} s, "
                    f"{meta['date_utc']}")
            if state == "stale":
                text = "STALE (sources changed since) " + text
        elif state == "failed":
            text = "FAILED (last execution did not finish)"
        print(f"{stem:<20} {text}")
    return 0


def _run_and_exit(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BookError as error:
            print(f"\n[book] FAILED\n{error}", file=sys.stderr)
            return 1
    return wrapped


def _add_location_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--root", default=default,
                        help="the book's sources: a klhuber checkout (default: the one found "
                             "from the current directory)")
    parser.add_argument("--output", default=default,
                        help="folder whose _build/ receives everything generated "
                             "(default: <root>/book)")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``klhuber book``."""
    _add_location_options(parser, None)
    sub = parser.add_subparsers(dest="book_command", metavar="ACTION")
    p_build = sub.add_parser("build", help="execute changed notebooks, then render the HTML")
    _add_run_options(p_build)
    p_build.set_defaults(func=_run_and_exit(_cmd_build))
    p_run = sub.add_parser("run", help="execute chapters (always, unless --cached), no HTML")
    p_run.add_argument("chapters", nargs="+", help="notebook stems, e.g. toy_problem")
    _add_run_options(p_run)
    p_run.add_argument("--cached", dest="force", action="store_false", default=None,
                       help="skip chapters whose cache key is unchanged")
    p_run.set_defaults(func=_run_and_exit(_cmd_run), force=None)
    p_html = sub.add_parser("html", help="render the HTML from the executed notebooks only")
    p_html.set_defaults(func=_run_and_exit(_cmd_html))
    p_list = sub.add_parser("list", help="list chapters, their last execution, stale ones")
    p_list.set_defaults(func=_run_and_exit(_cmd_list))
    for action in (p_build, p_run, p_html, p_list):  # also accepted after the action
        _add_location_options(action, argparse.SUPPRESS)

