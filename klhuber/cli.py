"""The ``klhuber`` command line: ``klhuber {book,toy,interpret,detect} ...``.

Each sub-command lives in the module that does the work; that module defines
``configure_parser(parser: argparse.ArgumentParser) -> None``, which adds its arguments and
sets ``func`` (a callable taking the parsed namespace and returning an exit code).  Only the
module of the chosen sub-command is imported, so ``klhuber book`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "EXTRAS", "main", "missing_extra_message"]

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "book": ("klhuber.book.cli", "execute the notebooks (papermill) and build the book"),
    "toy": ("klhuber.toy", "run the Section 5 toy experiment (Figure 2)"),
    "interpret": ("klhuber.interpret", "interpret a detector's box-loss hyper-parameters"),
    "detect": ("klhuber.detection.cli", "train / evaluate detectors with interpretable box losses"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klhuber",
        description="Companion to 'An Alternative Probabilistic Interpretation of the Huber Loss'.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


#: top-level module -> the optional extra of pyproject.toml that installs it
EXTRAS: dict[str, str] = {
    "pycocotools": "detection",
    "torchvision": "detection",
    "yaml": "book",
    "papermill": "book",
    "jupytext": "book",
    "jupyter_book": "book",
    "ipykernel": "book",
    "nbformat": "book",
    "hypothesis": "dev",
}


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """``"... pip install 'klhuber[extra]'"`` when ``error`` is a module of an extra."""
    top = (error.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return (f"the Python module {top!r} is not installed; it comes with the {extra} extra: "
            f"pip install 'klhuber[{extra}]'")


def _version() -> str:
    from klhuber import __version__

    return f"klhuber {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        if not argv:
            parser.print_help()
            return 2
        parser.parse_args(argv)  # prints help / version, or an error naming the bad command
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"klhuber {name}", description=help_text)
    try:
        importlib.import_module(module_name).configure_parser(parser)
        args = parser.parse_args(rest)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return 2
        status = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not after main has returned
        return status
    except ModuleNotFoundError as error:
        message = missing_extra_message(error)
        if message is None:
            raise
        print(f"klhuber {name}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`klhuber ... --list | head`): not an error
        # Python would report the pipe again when it flushes stdout at exit; point stdout at
        # /dev/null first (the recipe of the `signal` module's documentation)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's status for a command ended by a closed pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
