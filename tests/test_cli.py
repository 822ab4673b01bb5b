"""The klhuber console script."""

from __future__ import annotations

import subprocess
import sys

import pytest

from klhuber import cli


def test_help_lists_every_command(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_every_command_module_configures_a_parser():
    import argparse
    import importlib

    for name, (module, _) in cli.COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"klhuber {name}")
        importlib.import_module(module).configure_parser(parser)
        assert parser.format_help()


def test_python_dash_m_and_book_list():
    completed = subprocess.run([sys.executable, "-m", "klhuber", "book", "list"],
                               capture_output=True, text=True, check=True)
    assert "huber_at_a_glance" in completed.stdout
